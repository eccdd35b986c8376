"""`ganvas upscale IMAGE... --out DIR`: image files through the upsampler (core/upscaling.py), saved as PNGs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from PIL import Image

from ganvas import __version__
from ganvas.core.errors import GanvasError
from ganvas.core.io.png import save_png, unique_path
from ganvas.core.plugin_manager import get_plugin_manager
from ganvas.core.upscaling import choose, has_alpha, load, upscale_to


def upscale_files(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    size: int | None = None,
    upsampler: str | None = None,
    plugins=None,
    threads: int | None = None,
) -> list[Path]:
    """`ganvas upscale`: each image file upscaled (upscale_to) and saved as OUT/<stem>-x<scale>.png or
    <stem>-<size>px.png, never overwriting. No generator is loaded."""
    plugins = plugins or get_plugin_manager()
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im.load()
                images.append((Path(path), im.convert("RGBA") if has_alpha(im) else im.convert("RGB")))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise GanvasError(f"{path}: cannot read as an image ({exc})") from None
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written, cache = [], {}
    for path, image in images:
        side = max(image.size)
        loaded = None
        if size is None or size > side:
            if side not in cache:
                chosen = choose(plugins, side, upsampler)
                cache[side] = None if chosen is None else load(*chosen[:2], "cpu", chosen[2])
            loaded = cache[side]
            if loaded is None:
                raise GanvasError("no upsampler is registered (ship one under models/upsamplers/ or install a plugin)")
        result, used = upscale_to(loaded, image, size, threads)
        stem = f"{path.stem}-{size}px" if size is not None else f"{path.stem}-x{loaded.info.scale}"
        target = unique_path(folder, stem)
        text = {"Software": f"ganvas {__version__}", "Source": path.name}
        if used:
            text["upsampler"] = loaded.info.label()
        save_png(result, target, text)
        written.append(target)
    return written
