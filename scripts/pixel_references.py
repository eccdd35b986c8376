"""Reference PNGs for the same-pixels test: what the shipped models draw for fixed requests.

Made once from main before a refactor (commit 7ce1adb, before the issue-13 reorganisation) (`python scripts/pixel_references.py tests/data/pixels`); the test
(`tests/test_same_pixels.py`) regenerates every case and asserts identical pixels. Only the public API is
used (`ganvas.Pipeline`), so the script runs unchanged on either side of a reorganisation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CASES = [  # model, prompt, style, seed, truncation, size
    ("emoji64", "grinning face with big eyes", "noto", 0, 1.0, None),
    ("emoji64", "fox", "fluent-flat", 7, 0.8, None),
    ("emoji64", "red apple; food, fruit; twemoji style", None, 123, 1.0, None),
    ("emoji64", "ghost", "openmoji", 3, 0.7, 256),
    ("shapes", "a red circle", None, 5, 1.0, None),
    ("shapes", "a small blue square above a green triangle", None, 11, 0.9, None),
]


def case_name(index: int, case: tuple) -> str:
    return f"case{index:02d}-{case[0]}.png"


def main(out: Path) -> None:
    from ganvas import Pipeline
    from ganvas.core.pipeline import configure_threads

    configure_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for index, (model, prompt, style, seed, truncation, size) in enumerate(CASES):
        result = Pipeline.load(model)(prompt, n=1, seed=seed, truncation=truncation, style=style, size=size)
        name = case_name(index, (model,))
        result.images[0].save(out / name)  # pixels only: metadata (hashes, versions) may legitimately change
        manifest.append(
            {
                "file": name,
                "model": model,
                "prompt": prompt,
                "style": style,
                "seed": seed,
                "truncation": truncation,
                "size": size,
            }
        )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/pixels"))
