"""Writing outputs so that a reader (or a crash) never sees half a file.

Everything is written through the one atomic writer (core/io/atomic.py): a hidden temporary name in the
target folder renamed into place (`os.replace`, atomic on one filesystem; Maildir's tmp -> new). Hidden
temporaries left by a crash are removed when the job is resumed. Outputs are not fsynced (the journal
is, with `fsync`): a finished PNG ends with an IEND chunk, which is how a resumed job tells a complete
image from one cut short by a power loss.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ganvas.core.hosts.watch.layout import free_name
from ganvas.core.io.atomic import TMP_SUFFIX, atomic_open

PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def atomic_write(path: Path, write) -> Path:
    """Call write(fh) on a temporary file, then rename it to `path`."""
    with atomic_open(path, fsync=False) as fh:  # no fsync per image: see the module docstring
        write(fh)
    return path


def write_json(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def write_png(path: Path, image) -> Path:
    """The image with its metadata (image.info text fields, set by the pipeline) as PNG chunks."""
    from ganvas.core.io.png import save_png  # Pillow only when a job runs: `ganvas --help` and --status stay light

    return atomic_write(path, lambda fh: save_png(image, fh))


def png_complete(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() < 8 + len(PNG_END):
                return False
            fh.seek(-len(PNG_END), os.SEEK_END)
            return fh.read() == PNG_END
    except OSError:
        return False


def clean_temps(folder: Path) -> int:
    """Remove the hidden temporaries a killed writer left behind."""
    removed = 0
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return 0
    for path in entries:
        if path.name.startswith(".") and path.name.endswith(TMP_SUFFIX) and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def choose_output_dir(outbox: Path, job_name: str) -> Path:
    """OUTBOX/<job name>, or <job name>-1, -2 ... when taken: an earlier job's folder is never reused."""
    return free_name(outbox, job_name, split_ext=False)


def image_name(index: int, seed: int, width: int, label: str | None = None) -> str:
    return f"{index:0{width}d}_{label}_{seed}.png" if label else f"{index:0{width}d}_{seed}.png"
