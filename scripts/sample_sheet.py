"""Regenerate the README's sample sheet: a grid of prompts (rows) x seeds (columns) from a shipped model,
drawn through the same pipeline call every host uses, with each row's prompt written beside it.

    python scripts/sample_sheet.py                     # default model -> docs/emoji-samples.png
    python scripts/sample_sheet.py --model shapes --prompts "a red circle" "a blue star" --out /tmp/s.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ganvas.core.io.images import flatten
from ganvas.core.pipeline import Pipeline

REPO = Path(__file__).resolve().parent.parent

# (prompt, style): one concept in several designs first (style control), then a spread of concepts.
DEFAULT_ROWS = [
    ("grinning face with big eyes", "noto"),
    ("grinning face with big eyes", "twemoji"),
    ("grinning face with big eyes", "fluent-color"),
    ("red heart", "emojione"),
    ("fox", "fluent-flat"),
    ("rocket", "noto-v1"),
    ("rainbow", "twemoji"),
    ("watermelon", "fxemoji"),
    ("ghost", "streamline"),
    ("hot beverage", "fluent-color"),
]


def sheet(pipe: Pipeline, rows: list[tuple[str, str | None]], seeds: int, seed: int, scale: int) -> Image.Image:
    side = pipe.resolution * scale
    font = ImageFont.load_default()
    labels = [p if not s else f"{p} · {s}" for p, s in rows]
    label_w = max(int(font.getlength(t)) for t in labels) + 16
    grid = Image.new("RGB", (label_w + seeds * (side + 4), len(rows) * (side + 4) + 24), "white")
    draw = ImageDraw.Draw(grid)
    for c in range(seeds):
        draw.text((label_w + c * (side + 4) + side // 2 - 16, 6), f"seed {seed + c}", fill="black", font=font)
    for r, ((prompt, style), label) in enumerate(zip(rows, labels)):
        top = 24 + r * (side + 4)
        draw.text((8, top + side // 2 - 6), label, fill="black", font=font)
        result = pipe(prompt, n=seeds, seed=seed, style=style)
        for c, image in enumerate(result.images):
            # Transparent models are shown on the usual checkerboard, so their alpha is visible.
            grid.paste(flatten(image.resize((side, side), Image.NEAREST)), (label_w + c * (side + 4), top))
    return grid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model name or folder (default: the shipped default)")
    ap.add_argument("--prompts", nargs="*", help="prompts (no style) instead of the built-in rows")
    ap.add_argument("--style", default=None, help="style word for --prompts")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=1, help="pixel-repeat factor for display")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "emoji-samples.png")
    args = ap.parse_args()
    pipe = Pipeline.load(args.model)
    rows = [(p, args.style) for p in args.prompts] if args.prompts else DEFAULT_ROWS
    sheet(pipe, rows, args.seeds, args.seed, args.scale).save(args.out)
    print(f"wrote {args.out} ({len(rows)} prompts x {args.seeds} seeds, model {pipe.name})")


if __name__ == "__main__":
    sys.exit(main())
