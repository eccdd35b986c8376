"""A one-stage text-conditional GAN in the DF-GAN family.

Generator: (noise, sentence vector) -> mapping MLP -> 4x4 seed -> up-sampling residual blocks whose
features are scaled and shifted per channel by the condition (DF-GAN's deep fusion), -> RGB.
Discriminator: down-sampling residual blocks -> 4x4 features, scored against the text by a
concatenation head (DF-GAN) plus a projection term (Miyato & Koyama), which ties the score to the
caption more strongly than concatenation alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganvas.core.model.config import ModelConfig


def _channels(base: int, mult: int, cap: int) -> int:
    return base * min(mult, cap)


class ConditionalAffine(nn.Module):
    """x * (1 + gamma(c)) + beta(c), per channel. Zero-initialised so every block starts as identity."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x, c):
        gamma, beta = self.proj(c).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (1 + gamma) + beta


class GeneratorBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, upsample: str = "nearest"):
        super().__init__()
        self.upsample = upsample
        self.affine1 = ConditionalAffine(cond_dim, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.affine2 = ConditionalAffine(cond_dim, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, c):
        if self.upsample == "bilinear":  # smooth 2x: no blocky nearest-neighbour edges for the convs to fix
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv1(F.leaky_relu(self.affine1(x, c), 0.2))
        h = self.conv2(F.leaky_relu(self.affine2(h, c), 0.2))
        return self.shortcut(x) + h


class Generator(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        cfg = config
        # Per-dimension standardisation of the sentence vector over the training captions: MiniLM
        # vectors of captions that differ in one word are ~0.95 cosine-similar, and standardising lets
        # those small differences (size, position) reach the generator. Set by the trainer, saved
        # with the weights.
        self.register_buffer("text_mean", torch.zeros(cfg.text_dim))
        self.register_buffer("text_std", torch.ones(cfg.text_dim))
        self.mapping = nn.Sequential(
            nn.Linear(cfg.z_dim + cfg.text_dim, cfg.cond_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(cfg.cond_dim, cfg.cond_dim),
            nn.LeakyReLU(0.2),
        )
        mults = [2 ** (cfg.levels - i) for i in range(cfg.levels + 1)]  # 4x4 ... full resolution
        chans = [_channels(cfg.g_channels, m, cfg.max_mult) for m in mults]
        self.to_4x4 = nn.Linear(cfg.cond_dim + cfg.z_dim, chans[0] * 16)  # the first 4x4 feature map
        self._register_load_state_dict_pre_hook(self._upgrade_keys)
        self.blocks = nn.ModuleList(
            GeneratorBlock(chans[i], chans[i + 1], cfg.cond_dim + cfg.z_dim, cfg.upsample) for i in range(cfg.levels)
        )
        self.to_rgb = nn.Conv2d(chans[-1], cfg.channels, 3, padding=1)  # RGB, or premultiplied RGBA

    # Checkpoints written before 0.2 call the first layer "seed" (a name that read as the random seed).
    LEGACY_KEYS = {"seed.": "to_4x4."}

    @classmethod
    def upgrade_state_dict(cls, state: dict, prefix: str = "") -> dict:
        """`state` with pre-0.2 key names renamed (a new dict; tensors are shared, not copied)."""
        renamed = {}
        for key, value in state.items():
            for old, new in cls.LEGACY_KEYS.items():
                if key.startswith(prefix + old):
                    key = prefix + new + key[len(prefix + old) :]
            renamed[key] = value
        return renamed

    @staticmethod
    def _upgrade_keys(state, prefix, *args) -> None:
        """load_state_dict pre-hook: old checkpoints (and training states) load unchanged."""
        upgraded = Generator.upgrade_state_dict(state, prefix)
        if upgraded.keys() != state.keys():
            state.clear()
            state.update(upgraded)

    def normalize_text(self, text):
        return (text - self.text_mean) / self.text_std

    def forward(self, z, text):
        """z: (N, z_dim) noise; text: (N, text_dim) raw sentence vectors. Returns (N, channels, R, R) in [-1, 1]."""
        t = self.normalize_text(text)
        # The noise enters both the mapping and every block's modulation, so samples cannot ignore it
        # (a prototype that fed noise only to the seed produced near-identical images across seeds).
        return self.synthesize(torch.cat([self.mapping(torch.cat([z, t], 1)), z], 1))

    def synthesize(self, c):
        """The image from the condition c = (mapping output, noise): what forward draws once c is made
        (scripts/conditioning_sweep.py edits c on the way, e.g. to truncate in mapping space)."""
        x = self.to_4x4(c).view(c.shape[0], -1, 4, 4)
        for block in self.blocks:
            x = block(x, c)
        return torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)
        self.gain = nn.Parameter(torch.zeros(1))  # residual branch fades in (DF-GAN)

    def forward(self, x):
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return F.avg_pool2d(self.shortcut(x), 2) + self.gain * h


class Discriminator(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        cfg = config
        chans = [_channels(cfg.d_channels, 2**i, cfg.max_mult) for i in range(cfg.levels + 1)]
        self.from_rgb = nn.Conv2d(cfg.channels, chans[0], 3, padding=1)
        self.blocks = nn.Sequential(*(DiscriminatorBlock(chans[i], chans[i + 1]) for i in range(cfg.levels)))
        self.mbstd = cfg.d_mbstd
        top = chans[-1] + (1 if self.mbstd else 0)
        self.text_proj = nn.Linear(cfg.text_dim, 128)
        self.head = nn.Sequential(
            nn.Conv2d(top + 128, top, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(top, 1, 4),
        )
        self.embed = nn.Linear(cfg.text_dim, top)

    def features(self, images):
        feats = self.blocks(self.from_rgb(images))
        return minibatch_stddev(feats, self.mbstd) if self.mbstd else feats

    def score(self, feats, text):
        """Score 4x4 features against standardised text vectors. Returns (N,)."""
        t = self.text_proj(text)
        tiled = t.view(t.shape[0], -1, 1, 1).expand(-1, -1, feats.shape[2], feats.shape[3])
        concat_score = self.head(torch.cat([feats, tiled], 1)).view(-1)
        pooled = F.leaky_relu(feats, 0.2).sum(dim=(2, 3))
        projection = (pooled * self.embed(text)).sum(1) / pooled.shape[1] ** 0.5
        return concat_score + projection

    def forward(self, images, text, mismatched_text=None):
        """Returns the matched score, and the score against mismatched captions when given (features once)."""
        feats = self.features(images)
        matched = self.score(feats, text)
        if mismatched_text is None:
            return matched
        return matched, self.score(feats, mismatched_text)


def minibatch_stddev(x, group: int):
    """StyleGAN's minibatch standard deviation: one extra channel holding how much the images of a small
    group differ, so D can see a collapsed batch (every seed the same picture) and punish it."""
    n, c, h, w = x.shape
    g = math.gcd(n, group)  # a batch that does not divide into groups uses the largest group that fits
    if g < 2:
        return torch.cat([x, torch.zeros(n, 1, h, w, device=x.device, dtype=x.dtype)], 1)
    y = x.float().view(g, n // g, c, h, w)
    std = (y.var(0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n // g,)
    std = std.view(1, -1, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w).to(x.dtype)
    return torch.cat([x, std], 1)


def noise(z_dim: int, seeds) -> torch.Tensor:
    """(len(seeds), z_dim) standard normal noise, row i from its own CPU generator seeded seeds[i]: a seed
    gives the same image alone or inside any batch, on any device."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
