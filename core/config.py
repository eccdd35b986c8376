"""Model configuration: one dataclass, saved as the checkpoint's config.json and rebuilt from it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

SUPPORTED_RESOLUTIONS = (32, 64, 128)


@dataclass
class ModelConfig:
    resolution: int = 64          # output side in pixels: 32, 64 or 128
    z_dim: int = 64               # noise vector size
    text_dim: int = 384           # sentence-vector size of the text encoder (MiniLM: 384)
    text_encoder: str = "minilm"  # the encoder the model was trained with; another one is refused
    g_channels: int = 32          # generator width at the last (full-resolution) block; doubles per level down to 8x
    d_channels: int = 32          # discriminator width at the first block; doubles per level up to 8x
    cond_dim: int = 256           # width of the mapping MLP whose output modulates every generator block
    max_mult: int = 8             # channel multiplier cap (keeps the low-resolution stages affordable)

    def __post_init__(self):
        if self.resolution not in SUPPORTED_RESOLUTIONS:
            raise ValueError(f"resolution must be one of {SUPPORTED_RESOLUTIONS}, got {self.resolution}")

    @property
    def levels(self) -> int:
        """Number of 2x up-sampling stages from the 4x4 seed to the output size."""
        return {32: 3, 64: 4, 128: 5}[self.resolution]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; this ganvas knows {sorted(known)}")
        return cls(**data)


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
}
