"""Writing and reading PNGs with their text chunks.

Pillow keeps text chunks in `image.info` when it reads a PNG but does not write `.info` back on save,
so every host saves through `save_png`, which turns the string entries of `.info` into chunks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO, TYPE_CHECKING

from PIL import Image, PngImagePlugin

if TYPE_CHECKING:
    from ganvas.core.requests import GenerationResult

XMP_KEY = "XML:com.adobe.xmp"  # the keyword the XMP spec (part 3) fixes for PNG iTXt chunks


def png_info(text: dict[str, str]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        if key == XMP_KEY:
            info.add_itxt(key, value)  # XMP readers look for an uncompressed iTXt chunk only
        else:
            info.add_text(key, value)  # tEXt when Latin-1 fits, iTXt (UTF-8) otherwise
    return info


def text_fields(image: Image.Image) -> dict[str, str]:
    """The string entries of image.info: what save_png writes as text chunks."""
    return {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}


def save_png(image: Image.Image, target: str | os.PathLike | IO[bytes], text: dict[str, str] | None = None):
    """Save as PNG with the text fields of image.info (plus `text`) as PNG text chunks."""
    fields = {**text_fields(image), **(text or {})}
    image.save(target, format="PNG", pnginfo=png_info(fields))


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    with Image.open(path) as im:
        im.load()  # text chunks after the image data are only read with the pixels
        return {k: v for k, v in getattr(im, "text", {}).items() if isinstance(v, str)}


def slug(text: str, limit: int = 48) -> str:
    """File-name-safe stem from a prompt: lowercase ASCII words joined by '-'."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "image"


def unique_path(folder: Path, stem: str, suffix: str = ".png") -> Path:
    """folder/stem.png, or stem-1.png, stem-2.png ... : never overwrite an earlier result."""
    candidate = folder / f"{stem}{suffix}"
    k = 1
    while candidate.exists():
        candidate = folder / f"{stem}-{k}{suffix}"
        k += 1
    return candidate


def save_result(result: "GenerationResult", folder: str | os.PathLike, stem: str | None = None) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or slug(result.request.prompt)
    paths = []
    for i, image in enumerate(result.images):
        name = (
            f"{stem}-frame{result.frames[i]['index']:03d}"
            if result.frames is not None
            else f"{stem}-seed{result.seeds[i]}"
        )
        paths.append(_save_new(image, folder, name))
    return paths


def _save_new(image: Image.Image, folder: Path, stem: str) -> Path:
    while True:
        path = unique_path(folder, stem)
        try:
            # "x" mode: if another process takes the name between the check and the open, pick again.
            # Not io/atomic.py: its rename would overwrite a file that took this name meanwhile.
            with open(path, "xb") as fh:
                save_png(image, fh)
            return path
        except FileExistsError:
            continue
