"""Upsamplers: small super-resolution networks that take a generated (or any) image to a larger size.

An upsampler is a checkpoint folder of the same kind as a generator's (DESIGN.md §4):

    upsampler-x4/
      config.json        {"format": "ganvas.checkpoint", "version": 1, "architecture": "ganvas-upsampler-v1",
                          "in_resolution": 64, "out_resolution": 256, "upsampler": {...}, "trained": {...}}
      model.safetensors  the weights (never a pickle)
      README.md          model card

The network (ESPCN-style, all convolutions at the input resolution, which is what one CPU thread can
afford): a 3x3 head conv, residual blocks of two 3x3 convs, a 3x3 tail conv to channels * scale^2 and a
pixel shuffle, added to a bilinear upsample of the input (the network predicts the residual). It works
in the generator's space: floats in [-1, 1], RGBA with premultiplied colour (fully transparent pixels
have one value), straight-alpha RGBA PIL images at the API. It is fully convolutional, so it upscales an
image of any size by `scale` (what `Pipeline.upscale` does for a user's own sprite); `in_resolution`
is the size it was trained for.

Third-party upsamplers come from the `ganvas_register_upsamplers(register)` hook: a checkpoint folder, or
a zero-argument loader returning a folder or an nn.Module with `.config.scale`, `.config.channels` (3 or
4) and `.config.in_resolution`, called as module(x) on (N, C, H, W) floats in [-1, 1] (premultiplied
when C == 4) and returning (N, C, H * scale, W * scale).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganvas.core.io.checkpoint import load_upsampler
from ganvas.core.model.upsampler import MAX_INPUT_SIDE
from ganvas.core.registry import cache_key, produce, resolve_upsampler, state_hash


@dataclass(frozen=True)
class UpsamplerInfo:
    name: str
    hash: str  # first 10 hex digits of the sha256 of model.safetensors (or of the state, for loaders)
    in_resolution: int
    scale: int
    channels: int
    path: str | None = None

    @property
    def out_resolution(self) -> int:
        return self.in_resolution * self.scale

    def label(self) -> str:
        return f"{self.name} ({self.hash}, x{self.scale})"


@dataclass
class LoadedUpsampler:
    info: UpsamplerInfo
    module: nn.Module
    device: torch.device
    lock: threading.Lock


_loaded: dict[tuple, LoadedUpsampler] = {}
_loaded_lock = threading.Lock()


def _from_folder(name: str, folder: Path) -> tuple[nn.Module, UpsamplerInfo]:
    from ganvas.core.io.checkpoint import file_hash

    module, _ = load_upsampler(folder)
    c = module.config
    return module, UpsamplerInfo(
        name, file_hash(folder / "model.safetensors", 10), c.in_resolution, c.scale, c.channels, str(folder.resolve())
    )


def _from_module(name: str, module: Any, origin: str) -> tuple[nn.Module, UpsamplerInfo]:
    from ganvas.core.errors import GanvasError

    cfg = getattr(module, "config", None)
    if (
        not isinstance(module, nn.Module)
        or cfg is None
        or not all(hasattr(cfg, a) for a in ("scale", "channels", "in_resolution"))
    ):
        raise GanvasError(
            f"upsampler {name!r} from {origin}: the loader returned {type(module).__name__}; "
            f"expected a checkpoint folder or an nn.Module with .config.scale/.channels/.in_resolution"
        )
    if cfg.channels not in (3, 4) or not isinstance(cfg.scale, int) or cfg.scale < 2:
        raise GanvasError(f"upsampler {name!r} from {origin}: channels must be 3 or 4 and scale an integer >= 2")
    module.eval().requires_grad_(False)
    return module, UpsamplerInfo(name, state_hash(module), cfg.in_resolution, cfg.scale, cfg.channels)


def load(name: str, source: Any, device: str = "cpu", origin: str = "a path") -> LoadedUpsampler:
    """Load (or reuse) an upsampler; cached per checkpoint file (path, mtime, size) or per loader."""
    from ganvas.core.errors import GanvasError
    from ganvas.core.io.checkpoint import CheckpointError

    key = cache_key(name, source, origin, device)
    with _loaded_lock:
        if key in _loaded:
            return _loaded[key]
        try:
            produced = produce("upsampler", name, source, origin)
            module, info = (
                _from_folder(name, produced) if isinstance(produced, Path) else _from_module(name, produced, origin)
            )
        except CheckpointError as exc:
            raise GanvasError(f"upsampler {name!r}: {exc}") from None
        module = module.to(device)
        if torch.device(device).type == "cpu":  # oneDNN's NHWC convolutions: ~10% faster at batch 1 here
            module = module.to(memory_format=torch.channels_last)
        loaded = LoadedUpsampler(info, module, torch.device(device), threading.Lock())
        _loaded[key] = loaded
        return loaded


def clear_cache() -> None:
    with _loaded_lock:
        _loaded.clear()


def choose(
    plugins, resolution: int | None, wanted: str | None = None, warnings: list[str] | None = None
) -> tuple[str, Any, str] | None:
    """-> (name, source, origin) of the upsampler to use, or None when none is registered.

    `wanted` (a registered name or a checkpoint folder; else $GANVAS_UPSAMPLER) picks one; otherwise the
    first registered upsampler trained for `resolution` (a folder's config.json says; a loader counts as
    fitting), third-party plugins first, so they can replace the shipped one; else the first registered
    one (every upsampler is fully convolutional)."""
    wanted = wanted or os.environ.get("GANVAS_UPSAMPLER") or None
    if wanted:
        return resolve_upsampler(wanted, plugins, warnings)  # the rule models follow too (core/registry.py)
    registered = plugins.upsamplers(warnings)
    if not registered:
        return None
    for name, entry in registered.items():  # a loader's resolution is unknown until it runs: it may fit
        if resolution is None or _declared_input(entry.value) in (None, resolution):
            return name, entry.value, f"plugin {entry.plugin}"
    name, entry = next(iter(registered.items()))
    return name, entry.value, f"plugin {entry.plugin}"


def _declared_input(source: Any) -> int | None:
    """in_resolution from a folder's config.json without loading weights (None for loaders)."""
    if callable(source) and not isinstance(source, (str, os.PathLike)):
        return None
    import json

    try:
        data = json.loads((Path(source) / "config.json").read_text(encoding="utf-8"))
        return int(data["upsampler"]["in_resolution"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- images in, images out -------------------------------------------------------------------------------


def pil_to_tensor(image, channels: int) -> torch.Tensor:
    """A PIL image -> (1, channels, H, W) floats in [-1, 1]; RGBA premultiplied (as core.data loads it)."""
    if channels == 4:
        arr = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        rgb = (arr[..., :3] * arr[..., 3:4] + 127) // 255
        arr = np.concatenate([rgb, arr[..., 3:4]], axis=2).astype(np.float32)
    else:
        arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1


def has_alpha(image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def upscale_image(loaded: LoadedUpsampler, image, threads: int | None = None):
    """One PIL image -> the upsampler's output (side * scale), in the input's colour mode (RGBA stays RGBA
    with straight alpha; anything else comes back RGB). Computed alone (a batch of one), so an image's
    pixels never depend on what else is upscaled with it."""
    from ganvas.core.errors import InvalidRequest
    from ganvas.core.io.images import to_pil
    from ganvas.core.threads import render_threads

    if max(image.size) > MAX_INPUT_SIDE:
        raise InvalidRequest(
            f"image of {image.size[0]}x{image.size[1]} px: upsampler inputs are at most "
            f"{MAX_INPUT_SIDE} px a side (resize it first)",
            "image",
        )
    alpha = has_alpha(image)
    c = loaded.info.channels
    x = pil_to_tensor(image.convert("RGBA") if alpha else image.convert("RGB"), c)
    with loaded.lock, render_threads(threads), torch.inference_mode():
        y = loaded.module(x.to(loaded.device).contiguous(memory_format=torch.channels_last)).float().cpu()
    if c == 4 and not alpha:
        y = y[:, :3] + (1 - (y[:, 3:4] + 1) / 2) * 2  # an opaque input stays opaque: composite on white
    elif c == 3 and alpha:  # an RGB upsampler on a transparent image: colour and alpha upscaled separately
        a = image.convert("RGBA").getchannel("A").convert("RGB")
        ya = upscale_image(loaded, a, threads).convert("L")
        out = to_pil(y)[0].convert("RGBA")
        out.putalpha(ya)
        return out
    out = to_pil(y)[0]
    return out if alpha or out.mode == "RGB" else out.convert("RGB")


def resize_to(image, size: int | tuple[int, int]):
    """Lanczos to `size` (a side or (w, h)); unchanged when already there."""
    from PIL import Image

    target = (size, size) if isinstance(size, int) else tuple(size)
    return image if image.size == target else image.resize(target, Image.LANCZOS)


def upscale_to(loaded: LoadedUpsampler | None, image, size: int | None, threads: int | None = None):
    """The size rule every host shares: an image goes to `size` (None: one x-scale pass) without stretching
    its pixels. Below the image's side: Lanczos down. Above it: one upsampler pass, then Lanczos to the
    exact side (down, e.g. 256 -> 100; or up when the request is beyond one pass, e.g. 256 -> 512, which
    is a documented resize of the upsampled image). Returns (image, upsampled: bool)."""
    from ganvas.core.errors import GanvasError

    side = max(image.size)
    if size is not None and size <= side:
        return resize_to(image, size), False
    if loaded is None:
        raise GanvasError(
            f"size {size} is above the image's {side} px and no upsampler is registered "
            f"(ganvas never stretches pixels; install one or ask for {side} px or less)"
        )
    out = upscale_image(loaded, image, threads)
    return (out if size is None else resize_to(out, size)), True


__all__ = [
    "UpsamplerInfo",
    "LoadedUpsampler",
    "load",
    "choose",
    "clear_cache",
    "upscale_image",
    "upscale_to",
    "pil_to_tensor",
    "has_alpha",
    "resize_to",
]
