"""A contrastive image-text evaluator (CLIP-style) trained by the project on the *train* split only.

Image tower: a small CNN. Text tower: the frozen MiniLM sentence vector through a linear projection.
No public FID/CLIP weights can be downloaded here, so R-precision, FID and KID are measured in this
evaluator's feature space; the evaluator is saved next to the model so numbers can be reproduced.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ganvas.core.io.images import on_white
from ganvas.core.model.augment import translate

WEIGHTS = "evaluator.safetensors"
CONFIG = "evaluator.json"


@dataclass
class EvaluatorConfig:
    resolution: int = 64
    text_dim: int = 384
    width: int = 32
    embed_dim: int = 256


class ImageTower(nn.Module):
    def __init__(self, cfg: EvaluatorConfig):
        super().__init__()
        w = cfg.width
        # A strided stem halves the cost: the evaluator must train in minutes on a CPU.
        layers = [nn.Conv2d(3, w, 4, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        ch, side = w, cfg.resolution // 2
        for out in (2 * w, 4 * w, 8 * w):
            layers += [
                nn.Conv2d(ch, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            ch, side = out, side // 2
        self.body = nn.Sequential(*layers)
        self.feature_dim = ch

    def forward(self, x):
        return self.body(x).mean(dim=(2, 3))  # pooled features: the space FID/KID are measured in


class ContrastiveEvaluator(nn.Module):
    def __init__(self, cfg: EvaluatorConfig):
        super().__init__()
        self.config = cfg
        self.image_tower = ImageTower(cfg)
        self.image_proj = nn.Linear(self.image_tower.feature_dim, cfg.embed_dim)
        self.text_proj = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.embed_dim), nn.ReLU(), nn.Linear(cfg.embed_dim, cfg.embed_dim)
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def _prepare(self, images):
        if images.shape[-1] != self.config.resolution:
            images = F.interpolate(
                images, size=self.config.resolution, mode="bilinear", antialias=True, align_corners=False
            )
        return images

    def image_features(self, images):
        return self.image_tower(self._prepare(images))

    def embed_images(self, images):
        return F.normalize(self.image_proj(self.image_features(images)), dim=-1)

    def embed_texts(self, text_vectors):
        return F.normalize(self.text_proj(text_vectors), dim=-1)

    def features_and_embeddings(self, images, batch: int = 256):
        """(pooled features, normalised embeddings) of network-space images, in batches; transparent (RGBA)
        images are judged composited on white, as the evaluator only learnt RGB."""
        feats, embs = [], []
        for i in range(0, len(images), batch):
            f = self.image_features(on_white(images[i : i + batch]))
            feats.append(f)
            embs.append(F.normalize(self.image_proj(f), dim=-1))
        return torch.cat(feats), torch.cat(embs)


def pairwise_spread(features: torch.Tensor) -> float:
    """Mean pairwise distance between L2-normalised features (0 = identical images; NaN for fewer than 2)."""
    f = F.normalize(features.float(), dim=-1)
    if len(f) < 2:
        return float("nan")
    return float(torch.cdist(f, f).sum() / (len(f) * (len(f) - 1)))


def train_evaluator(
    images_uint8: torch.Tensor,
    text_vectors: torch.Tensor,
    caption_index: torch.Tensor,
    epochs: int = 20,
    batch: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    device: str = "cpu",
    log=print,
) -> ContrastiveEvaluator:
    """Symmetric InfoNCE on (image, caption) pairs; light translation augmentation (no colour changes)."""
    torch.manual_seed(seed)
    cfg = EvaluatorConfig(resolution=images_uint8.shape[-1], text_dim=text_vectors.shape[1])
    model = ContrastiveEvaluator(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    n = len(images_uint8)
    batch = min(batch, n)  # a dataset smaller than one batch still trains (one batch per epoch)
    steps = epochs * (n // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    images_uint8, text_vectors, caption_index = (
        images_uint8.to(device),
        text_vectors.to(device),
        caption_index.to(device),
    )
    gen = torch.Generator().manual_seed(seed)
    start, step = time.time(), 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n - batch + 1, batch):
            idx = order[i : i + batch]
            x = translate(images_uint8[idx].float() / 127.5 - 1, ratio=0.0625)
            caps = caption_index[idx]
            img = model.embed_images(x)
            txt = model.embed_texts(text_vectors[caps])
            logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
            # Duplicate captions inside a batch are not negatives of each other.
            same = caps[:, None] == caps[None, :]
            target = same.float() / same.float().sum(1, keepdim=True)
            loss = (
                torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean()
            ) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        log(f"evaluator epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} ({time.time() - start:.0f}s)")
    return model.eval().cpu()


def save_evaluator(model: ContrastiveEvaluator, folder: str | Path, info: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from ganvas.core.io.atomic import write_json
    from ganvas.core.io.checkpoint import save_safetensors

    save_safetensors(folder / WEIGHTS, model.state_dict())
    write_json(folder / CONFIG, {"config": asdict(model.config), "info": info or {}})
    return folder / WEIGHTS


def load_evaluator(folder: str | Path) -> ContrastiveEvaluator:
    """Load a saved evaluator; raises CheckpointError naming the missing or broken file."""
    from ganvas.core.io.checkpoint import CheckpointError

    folder = Path(folder)
    if not (folder / CONFIG).exists() or not (folder / WEIGHTS).exists():
        raise CheckpointError(
            f"{folder}: no evaluator ({CONFIG} + {WEIGHTS}); train one with `ganvas "
            f"train-evaluator --data DATASET --out {folder}` or pass --evaluator FOLDER"
        )
    try:
        meta = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        model = ContrastiveEvaluator(EvaluatorConfig(**meta["config"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{folder / CONFIG}: not an evaluator config ({exc})") from None
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise CheckpointError(f"{folder / WEIGHTS}: unreadable or does not fit {CONFIG} ({exc})") from None
    return model.eval()
