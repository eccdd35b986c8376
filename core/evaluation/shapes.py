"""Evaluation on the shapes task: an attribute classifier and the `evaluate` harness built on it.

The classifier is a measuring instrument, not a model under test, so it trains on all 480 single-object
combinations, held-out pairs included. It learns from fresh jittered renders on several backgrounds and
resolutions, so the only thing it cannot tell apart is what the spec says is the same.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ganvas.core.tasks.shapes import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeObject,
    caption,
    render,
    sample_objects,
    single_object_combinations,
)

ATTRIBUTES = ("colour", "shape", "size", "position")
VOCAB: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": tuple(SHAPES),
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
}
CHANCE = {a: 1 / len(v) for a, v in VOCAB.items()} | {"all": math.prod(1 / len(v) for v in VOCAB.values())}
INPUT_SIZE = 64
_WEIGHTS = "attribute_classifier.safetensors"
_CONFIG = "attribute_classifier.json"

Generate = Callable[[list[str], list[int]], torch.Tensor]


def to_tensor(images: Sequence) -> torch.Tensor:
    """PIL images (same size) -> float tensor (N,3,H,W) in [-1,1]."""
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def prepare(images: torch.Tensor) -> torch.Tensor:
    """Resize (N,3,H,W) images to the classifier's 64x64 input; antialiased so downsizing does not alias."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N,3,H,W), got {tuple(images.shape)}")
    images = images.float().clamp(-1, 1)
    if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        images = F.interpolate(
            images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
    return images


class AttributeClassifier(nn.Module):
    """Small strided CNN; the head sees a 4x4 spatial map (not a global pool) so it can read position."""

    def __init__(self, width: int = 32, hidden: int = 256):
        super().__init__()
        self.config = {"width": width, "hidden": hidden}
        w = width
        layers, cin = [], 3
        for cout in (w, 2 * w, 4 * w, 4 * w):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * 16, hidden), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({a: nn.Linear(hidden, len(v)) for a, v in VOCAB.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(prepare(images))
        return {a: head(h) for a, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
        """Predicted class indices per attribute, computed in batches on the model's device."""
        device = next(self.parameters()).device
        outs = {a: [] for a in ATTRIBUTES}
        for i in range(0, len(images), batch):
            logits = self(images[i : i + batch].to(device))
            for a in ATTRIBUTES:
                outs[a].append(logits[a].argmax(1).cpu())
        return {a: torch.cat(v) for a, v in outs.items()}


def _labels(objects: Sequence[ShapeObject]) -> dict[str, torch.Tensor]:
    return {a: torch.tensor([VOCAB[a].index(getattr(o, a)) for o in objects]) for a in ATTRIBUTES}


def render_batch(
    objects: Sequence[ShapeObject],
    rng: random.Random,
    resolutions: Sequence[int] = (32, 64),
    backgrounds: Sequence[str] = ("white", "black", "grey"),
) -> torch.Tensor:
    """Jittered single-object renders at a random resolution each, resized to 64: (N,3,64,64) in [-1,1]."""
    res = [rng.choice(resolutions) for _ in objects]
    out = torch.empty(len(objects), 3, INPUT_SIZE, INPUT_SIZE)
    for r in set(res):
        idx = [i for i, x in enumerate(res) if x == r]
        imgs = [render([objects[i]], r, rng.choice(backgrounds), rng) for i in idx]
        out[idx] = prepare(to_tensor(imgs))
    return out


def _random_objects(rng: random.Random, n: int) -> list[ShapeObject]:
    return [sample_objects(rng, two_object_prob=0.0, held_out="include")[0] for _ in range(n)]


@torch.no_grad()
def measure_accuracy(
    model: AttributeClassifier, n: int = 2000, resolutions: Sequence[int] = (32, 64), seed: int = 12345
) -> dict[str, float]:
    """Accuracy per attribute (and all-correct) on fresh jittered real renders."""
    model.eval()
    rng = random.Random(seed)
    objects = _random_objects(rng, n)
    pred = model.predict(render_batch(objects, rng, resolutions))
    return _score(pred, _labels(objects))


def _score(pred: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, float]:
    ok = {a: pred[a] == labels[a] for a in ATTRIBUTES}
    out = {a: ok[a].float().mean().item() for a in ATTRIBUTES}
    out["all"] = torch.stack([ok[a] for a in ATTRIBUTES]).all(0).float().mean().item()
    return out


def train_classifier(
    steps: int = 1200,
    batch: int = 64,
    resolution_of_renders: int | Sequence[int] = (32, 64),
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    lr: float = 2e-3,
    noise: float = 0.05,
) -> AttributeClassifier:
    """Train the attribute classifier on fresh renders of all 480 single-object combinations.

    Each image is rendered at one of `resolution_of_renders` (the generator's resolution; default 32 and 64
    so one classifier serves both) on a white, black or grey background, then resized to 64. Gaussian noise
    of random strength up to `noise` keeps it from relying on perfectly flat colour, which a GAN never gives.
    """
    resolutions = (resolution_of_renders,) if isinstance(resolution_of_renders, int) else tuple(resolution_of_renders)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = AttributeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    # Linear warm-up then cosine decay to zero: the last steps settle the decision boundaries.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        objects = _random_objects(rng, batch)
        x = render_batch(objects, rng, resolutions)
        x = x + torch.randn_like(x) * torch.rand(batch, 1, 1, 1) * noise
        y = _labels(objects)
        logits = model(x)
        loss = sum(F.cross_entropy(logits[a], y[a]) for a in ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step % max(1, steps // 10) == 0 or step == steps):
            log(f"classifier step {step}/{steps}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f}s")
    model.eval()
    return model


def save_classifier(model: AttributeClassifier, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from ganvas.core.io.atomic import write_json
    from ganvas.core.io.checkpoint import save_safetensors

    save_safetensors(folder / _WEIGHTS, model.state_dict())
    config = {"kind": "ganvas.shapes.attribute_classifier", "input_size": INPUT_SIZE, **model.config, "vocab": VOCAB}
    write_json(folder / _CONFIG, config)
    return folder


def load_classifier(folder: str | Path, device: str | torch.device = "cpu") -> AttributeClassifier:
    folder = Path(folder)
    config = json.loads((folder / _CONFIG).read_text())
    # The heads' meaning is the vocabulary order; refuse a checkpoint made for a different vocabulary.
    if {a: tuple(v) for a, v in config["vocab"].items()} != VOCAB or config["input_size"] != INPUT_SIZE:
        raise ValueError(f"{folder / _CONFIG} was made for a different shapes vocabulary or input size")
    model = AttributeClassifier(width=config["width"], hidden=config["hidden"])
    model.load_state_dict(load_file(str(folder / _WEIGHTS)))
    return model.to(device).eval()


# -------------------------------------------------------------------------------------------- evaluation


class _Group:
    """Accumulates predictions and per-caption pixel moments (for diversity) for one caption set."""

    def __init__(self, objects: list[ShapeObject], n: int):
        self.objects, self.n = objects, n
        self.preds: dict[str, list[torch.Tensor]] = {a: [] for a in ATTRIBUTES}
        self.sum = self.sumsq = None

    def add(self, classifier: AttributeClassifier, images: torch.Tensor, caption_idx: torch.Tensor) -> None:
        for a, p in classifier.predict(images).items():
            self.preds[a].append(p)
        x = images.double().flatten(1)
        if self.sum is None:
            self.sum = torch.zeros(len(self.objects), x.shape[1], dtype=torch.float64)
            self.sumsq = torch.zeros_like(self.sum)
        self.sum.index_add_(0, caption_idx, x)
        self.sumsq.index_add_(0, caption_idx, x * x)

    def result(self, by_pair: bool = False) -> dict:
        labels = {a: y.repeat_interleave(self.n) for a, y in _labels(self.objects).items()}
        pred = {a: torch.cat(v) for a, v in self.preds.items()}
        out = _score(pred, labels)
        out["n_images"] = len(pred["colour"])
        # Diversity: per-pixel std over the samples of one caption, averaged over pixels and captions.
        mean = self.sum / self.n
        var = (self.sumsq / self.n - mean * mean).clamp_min(0)
        out["diversity"] = var.sqrt().mean().item()
        if by_pair:
            ok = torch.stack([pred[a] == labels[a] for a in ATTRIBUTES]).all(0).float()
            pairs = [f"{o.colour} {o.shape}" for o in self.objects for _ in range(self.n)]
            out["by_pair"] = {
                p: ok[[i for i, q in enumerate(pairs) if q == p]].mean().item() for p in dict.fromkeys(pairs)
            }
        return out


def evaluate(
    generate: Generate,
    n_per_caption: int = 4,
    seed: int = 0,
    classifier: AttributeClassifier | str | Path | None = None,
    include_held_out: bool = True,
    n_seen_captions: int | None = None,
    batch_size: int = 256,
    real_backgrounds: Sequence[str] = ("white", "black"),
    log: Callable[[str], None] | None = print,
) -> dict:
    """Score a generator on single-object shapes captions: accuracy per attribute for seen and held-out
    colour-shape pairs, the same for jittered real renders (ceiling), chance (floor), and diversity.

    `generate(captions, seeds)` returns (N,3,H,W) floats in [-1,1]. Real renders use the generator's H and
    a random background from `real_backgrounds` per image (match the training data). Diversity is the
    per-pixel std across one caption's samples, in [-1,1] units, averaged over pixels and captions.
    """
    if n_per_caption < 1:
        raise ValueError("n_per_caption must be >= 1 (>= 2 for a meaningful diversity figure)")
    if classifier is None:
        if log:
            log("evaluate: no classifier given, training the default one (a few CPU minutes)")
        classifier = train_classifier(log=log)
    elif not isinstance(classifier, nn.Module):
        classifier = load_classifier(classifier)
    classifier.eval()

    seen = single_object_combinations("exclude")
    if n_seen_captions is not None and n_seen_captions < len(seen):
        seen = sorted(random.Random(seed).sample(seen, n_seen_captions), key=seen.index)  # fixed sample
    groups = {"seen": seen}
    if include_held_out:
        groups["held_out"] = single_object_combinations("only")

    report: dict = {"n_per_caption": n_per_caption, "seed": seed, "generated": {}, "real": {}, "chance": dict(CHANCE)}
    next_seed = seed * 10_000_000  # every image gets its own fixed seed, distinct across groups
    resolution = None
    for name, objects in groups.items():
        captions = [caption([o]) for o in objects]
        flat = [i for i in range(len(objects)) for _ in range(n_per_caption)]  # caption-major order
        gen, real = _Group(objects, n_per_caption), _Group(objects, n_per_caption)
        for start in range(0, len(flat), batch_size):
            idx = flat[start : start + batch_size]
            seeds = list(range(next_seed + start, next_seed + start + len(idx)))
            images = generate([captions[i] for i in idx], seeds)
            images = _check_output(images, len(idx))
            resolution = resolution or images.shape[-1]
            idx_t = torch.tensor(idx)
            gen.add(classifier, images.detach().float().cpu().clamp(-1, 1), idx_t)
            renders = []
            for i, s in zip(idx, seeds):
                r = random.Random(s)
                renders.append(render([objects[i]], resolution, r.choice(tuple(real_backgrounds)), r))
            real.add(classifier, to_tensor(renders), idx_t)
        next_seed += len(flat)
        report["generated"][name] = gen.result(by_pair=name == "held_out")
        report["real"][name] = real.result(by_pair=name == "held_out")
        if log:
            log(f"evaluate: {name} done ({len(flat)} images)")
    report["resolution"] = resolution
    return report


def _check_output(images, n: int) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"generate must return a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] != n or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"generate returned shape {tuple(images.shape)}; expected ({n}, 3, H, H)")
    if not torch.isfinite(images).all():
        raise ValueError("generate returned non-finite values")
    return images


def format_report(report: dict) -> str:
    """A readable table of an `evaluate` report."""
    cols = (*ATTRIBUTES, "all")
    lines = [
        f"shapes evaluation: {report.get('resolution')} px, {report['n_per_caption']} samples/caption, seed {report['seed']}",
        f"{'':<20}" + "".join(f"{c:>10}" for c in cols) + f"{'diversity':>11}",
    ]
    for source in ("generated", "real"):
        for group, r in report[source].items():
            row = f"{source + ' ' + group:<20}" + "".join(f"{r[c]:>10.3f}" for c in cols)
            lines.append(row + f"{r['diversity']:>11.3f}")
    lines.append(f"{'chance':<20}" + "".join(f"{report['chance'][c]:>10.3f}" for c in cols))
    held = report["generated"].get("held_out", {}).get("by_pair")
    if held:
        lines.append("held-out pairs, all correct (generated): " + ", ".join(f"{p} {v:.2f}" for p, v in held.items()))
    return "\n".join(lines)
