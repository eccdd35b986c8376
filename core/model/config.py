"""Model configuration: one dataclass, saved as the checkpoint's config.json and rebuilt from it."""

from __future__ import annotations

import math
import reprlib
import types
import typing
from dataclasses import asdict, dataclass, fields

SUPPORTED_RESOLUTIONS = (32, 64, 128)


class TypedConfig:
    """to_dict / from_dict for a config dataclass (ModelConfig, UpsamplerConfig): from_dict refuses unknown
    keys and any value that is not exactly its field's annotated type, with a one-line message naming the
    field. `_kind` names the config in those messages."""

    _kind = "config"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise ValueError(f"expected an object of {cls._kind} keys, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls._kind} keys {unknown}; this ganvas knows {sorted(known)}")
        check_types(cls, data)
        return cls(**data)


def check_types(cls, values: dict) -> None:
    """_check_type for each of `values` against the annotations of the dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        _check_type(name, value, hints[name])


@dataclass
class ModelConfig(TypedConfig):
    _kind = "model config"

    resolution: int = 64  # output side in pixels: 32, 64 or 128
    z_dim: int = 64  # noise vector size
    text_dim: int = 384  # sentence-vector size of the text encoder (MiniLM: 384)
    text_encoder: str = "minilm"  # the encoder the model was trained with; another one is refused
    g_channels: int = 32  # generator width at the last (full-resolution) block; doubles per level down to 8x
    d_channels: int = 32  # discriminator width at the first block; doubles per level up to 8x
    cond_dim: int = 256  # width of the mapping MLP whose output modulates every generator block
    max_mult: int = 8  # channel multiplier cap (keeps the low-resolution stages affordable)
    channels: int = 3  # 3 = RGB; 4 = RGBA (premultiplied inside the network, straight alpha in PNGs)
    upsample: str = "nearest"  # generator's 2x up-sampling: "nearest" or "bilinear" (smoother, no blockiness)
    d_mbstd: int = 0  # discriminator minibatch-stddev group size (StyleGAN); 0 = off

    def __post_init__(self):
        if self.resolution not in SUPPORTED_RESOLUTIONS:
            raise ValueError(f"resolution must be one of {SUPPORTED_RESOLUTIONS}, got {self.resolution}")
        if self.channels not in (3, 4):
            raise ValueError(f"channels must be 3 (RGB) or 4 (RGBA), got {self.channels}")
        if self.upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {self.upsample!r}")

    @property
    def levels(self) -> int:
        """Number of 2x up-sampling stages from the 4x4 seed to the output size."""
        return {32: 3, 64: 4, 128: 5}[self.resolution]


def _check_type(name: str, value, hint) -> None:
    """Refuse a value that is not exactly the field's annotated type (JSON true is not 1, 64.5 not 64).

    Generic over the annotations, so fields added to a TypedConfig are checked without new code here."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if not any(_is_type(value, t) for t in options):
        wanted = " or ".join(_TYPE_NAMES.get(t, getattr(t, "__name__", str(t))) for t in options)
        raise ValueError(f"{name!r} must be {wanted}, got {reprlib.repr(value)}")  # reprlib: short, one line


_TYPE_NAMES = {int: "an integer", float: "a finite number", str: "text", bool: "true or false", type(None): "null"}


def _is_type(value, hint) -> bool:
    if hint is int:
        return type(value) is int  # bool is an int subclass; JSON floats are never silently truncated
    if hint is float:
        return type(value) is int or type(value) is float and math.isfinite(value)
    if hint is bool:
        return type(value) is bool
    if hint is type(None):
        return value is None
    return isinstance(value, hint) if isinstance(hint, type) else True  # other annotations: not checked


# Named presets: what `ganvas train --preset` and the shipped models use.
PRESETS = {
    "tiny": dict(g_channels=8, d_channels=8, cond_dim=64),  # tests and smoke runs only
    "small": dict(g_channels=32, d_channels=32, cond_dim=256),
    "base": dict(g_channels=48, d_channels=48, cond_dim=256),
    # 64 px for about 1.4x the cost of 32 px: the same low-resolution widths as `small` at 32 px plus a
    # 16-channel full-resolution stage. At 64 px on 1 thread, bf16, batch 32, `small` trained at 11.1 img/s
    # and `lean` at 27.3 (bench/train_throughput.py's measure(), --preset); G alone made 48 vs 130 img/s
    # at batch 64. The shipped emoji model uses it.
    "lean": dict(g_channels=16, d_channels=16, cond_dim=256, max_mult=16),
    # `lean`'s generator (same inference cost) with smooth up-sampling, against a discriminator twice as wide
    # with minibatch-stddev: D is training-only, so its size costs users nothing.
    "emoji": dict(g_channels=16, d_channels=32, cond_dim=256, max_mult=16, upsample="bilinear", d_mbstd=4),
}
