"""DiffAugment (Zhao et al. 2020): the same differentiable augmentation on real and fake images seen by D.

Only translation and cutout: colour jitter would fight captions that name colours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def translate(x, ratio: float = 0.125, generator=None):
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dx = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device, generator=generator)
    dy = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device, generator=generator)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy.unsqueeze(0) + dx + 1, 0, h + 1)
    gx = torch.clamp(gx.unsqueeze(0) + dy + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # zero border, as in the reference implementation
    idx = (gy * (w + 2) + gx).view(n, 1, -1).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, idx).view_as(x)


def cutout(x, ratio: float = 0.25, generator=None):
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device, generator=generator)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device, generator=generator)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside = ((gy.unsqueeze(0) - oy + ch // 2).abs() < (ch + 1) // 2) & (
        (gx.unsqueeze(0) - ox + cw // 2).abs() < (cw + 1) // 2
    )
    return x * (~inside).unsqueeze(1).to(x.dtype)


OPS = {"translation": translate, "cutout": cutout}


def diff_augment(x, ops: str = "translation,cutout", generator=None):
    """Apply the comma-separated ops in order ("" = none)."""
    for name in filter(None, (o.strip() for o in ops.split(","))):
        if name not in OPS:
            raise ValueError(f"unknown augmentation {name!r}; choose from {sorted(OPS)}")
        x = OPS[name](x, generator=generator)
    return x
