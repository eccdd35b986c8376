"""The upsampler network: a small ESPCN-style super-resolution net (pure torch).

All convolutions run at the input resolution (what one CPU thread can afford): a 3x3 head conv, residual
blocks of two 3x3 convs, a 3x3 tail conv to channels * scale^2 and a pixel shuffle, added to a bilinear
upsample of the input (the network predicts the residual). It works in the generator's space: floats in
[-1, 1], RGBA with premultiplied colour. Fully convolutional, so it upscales any size by `scale`;
`in_resolution` is the size it was trained for. Loading and saving: core/io/checkpoint.py; applying it to
images: core/upscaling.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganvas.core.model.config import TypedConfig, check_types

ARCHITECTURE = "ganvas-upsampler-v1"
MAX_INPUT_SIDE = 512  # 512 -> 2048 at x4: the largest output a request may ask for (requests.MAX_SIZE)


@dataclass
class UpsamplerConfig(TypedConfig):
    _kind = "upsampler config"

    in_resolution: int = 64  # the input side it was trained for (any size works: fully convolutional)
    scale: int = 4  # output side = input side * scale
    channels: int = 4  # 4 = RGBA (premultiplied inside), 3 = RGB
    width: int = 32  # feature channels at the input resolution
    blocks: int = 3  # residual blocks (two 3x3 convs each)

    def __post_init__(self):
        check_types(type(self), asdict(self))  # also when built in code, not only from_dict
        if self.scale not in (2, 3, 4, 8):
            raise ValueError(f"scale must be 2, 3, 4 or 8, got {self.scale}")
        if self.channels not in (3, 4):
            raise ValueError(f"channels must be 3 (RGB) or 4 (RGBA), got {self.channels}")
        if not 1 <= self.width <= 256 or not 0 <= self.blocks <= 32 or not 8 <= self.in_resolution <= 1024:
            raise ValueError(f"width 1..256, blocks 0..32 and in_resolution 8..1024 expected, got {self}")

    @property
    def out_resolution(self) -> int:
        return self.in_resolution * self.scale


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


class Upsampler(nn.Module):
    """(N, C, H, W) in [-1, 1] -> (N, C, H*s, W*s): bilinear upsample + a learned residual."""

    def __init__(self, config: UpsamplerConfig):
        super().__init__()
        self.config = c = config
        self.head = nn.Conv2d(c.channels, c.width, 3, padding=1)
        self.body = nn.Sequential(*(ResBlock(c.width) for _ in range(c.blocks)))
        self.tail = nn.Conv2d(c.width, c.channels * c.scale**2, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # starts as plain bilinear: training only ever adds detail
        nn.init.zeros_(self.tail.bias)

    def forward(self, x):
        s = self.config.scale
        base = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        h = F.relu(self.head(x))
        h = F.relu(self.body(h) + h) if len(self.body) else h
        return base + F.pixel_shuffle(self.tail(h), s)


class PatchDiscriminator(nn.Module):
    """Training-only critic for the adversarial fine-tune (core/training/upsampler.py; never shipped: its
    state lives in the run directory's training_state.*). Three stride-2 4x4 convolutions (spectral norm,
    leaky ReLU) and a 3x3 head: one logit per ~46 px patch of the high-resolution image, i.e. (N, 1, H/8, W/8).
    Conditional: it sees the RGBA image beside its residual over the bilinear upsample of the low-resolution
    input, amplified by `residual_gain` (that residual is what the upsampler adds, a few hundredths in
    amplitude: a spectral-normed critic, 1-Lipschitz, cannot separate real from an MSE upsampler's output on
    the image alone or image + upsample; with the x8 residual its hinge loss fell from 2.0 to 1.5 in 200 steps)."""

    def __init__(self, channels: int = 4, width: int = 16, conditional: bool = True, residual_gain: float = 8.0):
        super().__init__()
        if channels not in (3, 4) or not 1 <= width <= 256:
            raise ValueError(f"discriminator channels 3 or 4 and width 1..256 expected, got {channels}, {width}")
        self.conditional, self.residual_gain = conditional, residual_gain
        c = channels * (2 if conditional else 1)
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(c, width, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, width * 2, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width * 2, width * 4, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width * 4, 1, 3, 1, 1)),
        )

    def forward(self, image, condition=None):
        if self.conditional:
            if condition is None or condition.shape != image.shape:
                raise ValueError("a conditional discriminator needs the upsampled input beside the image")
            image = torch.cat([image, (image - condition) * self.residual_gain], 1)
        return self.net(image)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def is_upsampler_config(data: Any) -> bool:
    """True for the config.json of an upsampler folder (it has an "upsampler" section), torch-free callers
    use the same rule (plugins/default_backend.py)."""
    return isinstance(data, dict) and isinstance(data.get("upsampler"), dict)
