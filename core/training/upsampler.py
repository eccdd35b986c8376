"""Training and evaluating upsamplers (`ganvas train-upsampler`, `ganvas eval-upsampler`).

Pairs: each high-resolution image of a dataset (e.g. emoji256a, RGBA) and its low-resolution twin made on
the fly by a Lanczos downsample of the straight-alpha image (Pillow resizes RGBA premultiplied), which is
how emoji64a was made from the same renders; `check_twins` measures how close the two are. Everything
inside is premultiplied RGBA in [-1, 1], like the generator.

Training: random aligned crops (low-res `crop` px, the high-res crop `scale` times larger) with flips
and 90-degree turns, MSE on premultiplied RGBA (optionally L1, and a term on image gradients), Adam with a cosine
schedule, validation PSNR on the deterministic hold-out of train/ (core.data.validation_holdout) every
`val_every` steps; the best validation checkpoint is the model folder. `--resume` continues exactly
(weights, Adam moments, step, RNG; safetensors + JSON).

Adversarial fine-tune (`--adv-weight W > 0`, usually with `--init` a trained upsampler folder): a small
conditional patch discriminator (core.model.upsampler.PatchDiscriminator) judges the high-resolution crops
beside the bilinear upsample of their input; hinge loss (or non-saturating), the reconstruction loss kept.
The discriminator trains from step 0, the generator sees W x its adversarial loss from `--adv-start-step`.
The discriminator and its Adam are training state only (OUT/training_state.*), never in OUT/model. With
W = 0 nothing of it exists and training is exactly the reconstruction-only recipe. An adversarial run keeps
the last validation step as the model (`keep="last"`): validation PSNR is not what the term is for.

Evaluation: PSNR and SSIM on RGB composited on white and on alpha, for the upsampler, Lanczos and
bicubic, each image upscaled from uint8 PNG pixels the same way a user's file would be.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ganvas.core.datasets.folders import read_metadata, validation_holdout
from ganvas.core.io.checkpoint import save_upsampler
from ganvas.core.model.upsampler import PatchDiscriminator, Upsampler, UpsamplerConfig, count_parameters
from ganvas.core.threads import configure_threads
from ganvas.core.upscaling import LoadedUpsampler, UpsamplerInfo, upscale_image

# --- data -----------------------------------------------------------------------------------------------------


def premultiply(arr: np.ndarray) -> np.ndarray:
    """(H, W, 4) straight uint8 -> premultiplied uint8 (core.data's rounding)."""
    a = arr.astype(np.uint16)
    rgb = (a[..., :3] * a[..., 3:4] + 127) // 255
    return np.concatenate([rgb, a[..., 3:4]], axis=2).astype(np.uint8)


def downsample(image: Image.Image, side: int) -> Image.Image:
    """The low-resolution twin: Lanczos on the straight RGBA image (Pillow works premultiplied inside)."""
    return image.convert("RGBA").resize((side, side), Image.LANCZOS)


def split_files(root: Path, split: str) -> list[str]:
    """File names of a split; "train" without, "validation" only, the hold-out of train/ (core.data)."""
    folder = root / ("train" if split in ("train", "validation") else split)
    rows, _ = read_metadata(folder)
    if split in ("train", "validation"):
        held = validation_holdout(rows)
        rows = [r for r in rows if (r["file_name"] in held) == (split == "validation")]
    return [r["file_name"] for r in rows]


def _load_pair(path: Path, hr_side: int, lr_side: int) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(path) as im:
        im = im.convert("RGBA")
        if im.size != (hr_side, hr_side):
            im = im.resize((hr_side, hr_side), Image.LANCZOS)
        return premultiply(np.asarray(im)), premultiply(np.asarray(downsample(im, lr_side)))


def load_pairs(
    root: Path,
    split: str,
    hr_side: int,
    scale: int,
    limit: int | None = None,
    cache: Path | None = None,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(HR (N, 4, S, S), LR (N, 4, S/scale, S/scale)) premultiplied uint8 tensors and the file names."""
    names = split_files(root, split)
    folder = root / ("train" if split in ("train", "validation") else split)
    present = [n for n in names if (folder / n).exists()]
    if len(present) < len(names):  # a dataset still being built: train on what is there
        log(f"pairs: {len(names) - len(present)} of {len(names)} {split} files are missing; using {len(present)}")
        names = present
    if limit:
        names = names[:limit]
    key = f"{root.resolve().name}-{split}-{hr_side}-{scale}-{len(names)}"
    if cache is not None and (cache / f"{key}.hr.npy").exists():
        hr, lr = np.load(cache / f"{key}.hr.npy", mmap_mode="r"), np.load(cache / f"{key}.lr.npy")
        log(f"pairs: {len(names)} {split} images from the cache {cache / key}")
        return torch.from_numpy(np.ascontiguousarray(hr)), torch.from_numpy(lr), names
    start = time.perf_counter()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pairs = list(pool.map(lambda n: _load_pair(folder / n, hr_side, hr_side // scale), names))
    hr = np.stack([p[0] for p in pairs]).transpose(0, 3, 1, 2).copy()
    lr = np.stack([p[1] for p in pairs]).transpose(0, 3, 1, 2).copy()
    log(f"pairs: {len(names)} {split} images of {folder} in {time.perf_counter() - start:.0f} s")
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{key}.hr.npy", hr)
        np.save(cache / f"{key}.lr.npy", lr)
    return torch.from_numpy(hr), torch.from_numpy(lr), names


def check_twins(root_hr: Path, root_lr: Path, split: str = "test", limit: int = 200) -> dict:
    """How close the on-the-fly low-res twin (Lanczos downsample of the high-res file) is to the dataset's
    own low-res file (e.g. emoji256a vs emoji64a): PSNR of RGB on white and of alpha, and max difference."""
    names = split_files(root_hr, split)[:limit]
    folder_hr = root_hr / ("train" if split in ("train", "validation") else split)
    folder_lr = root_lr / ("train" if split in ("train", "validation") else split)
    rgb, alpha, worst = [], [], 0
    for name in names:
        with Image.open(folder_lr / name) as real:
            real = real.convert("RGBA")
            side = real.size[0]
        with Image.open(folder_hr / name) as hr:
            twin = downsample(hr, side)
        a, b = _measure_space(real), _measure_space(twin)
        rgb.append(psnr(a[:3], b[:3]))
        alpha.append(psnr(a[3:], b[3:]))
        worst = max(
            worst,
            int(
                np.abs(
                    premultiply(np.asarray(real)).astype(np.int16) - premultiply(np.asarray(twin)).astype(np.int16)
                ).max()
            ),
        )
    return {
        "images": len(names),
        "psnr_rgb_on_white": float(np.mean(rgb)),
        "psnr_alpha": float(np.mean(alpha)),
        "max_abs_difference_premultiplied": worst,
    }


# --- measures -------------------------------------------------------------------------------------------------


def _measure_space(image: Image.Image) -> torch.Tensor:
    """(4, H, W) floats in [0, 1]: RGB composited on white, then alpha."""
    arr = torch.from_numpy(premultiply(np.asarray(image.convert("RGBA")))).permute(2, 0, 1).float() / 255
    rgb = arr[:3] + (1 - arr[3:])
    return torch.cat([rgb, arr[3:]], 0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 100.0 if mse == 0 else 10 * math.log10(1 / mse)


def _gauss(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


@functools.lru_cache(maxsize=8)
def _band(n: int, size: int = 11) -> torch.Tensor:
    g, out = _gauss(size), torch.zeros(n - size + 1, n)
    for i in range(n - size + 1):
        out[i, i : i + size] = g
    return out


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) over channels of
    (C, H, W) images in [0, 1]; valid windows only. The window is separable: two 1-D passes."""
    rows, cols = _band(a.shape[-2]), _band(a.shape[-1]).T.contiguous()

    def blur(t):  # valid 1-D Gaussian passes as band-matrix products (CPU depthwise convolutions are slow)
        return rows @ t @ cols

    a, b = a.float(), b.float()
    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a**2
    sbb = blur(b * b) - mu_b**2
    sab = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return float(s.double().mean())


# --- training -------------------------------------------------------------------------------------------------


@dataclass
class UpsamplerTrainOptions:
    data: str  # high-resolution dataset root (train/ with metadata.jsonl), e.g. emoji256a
    out: str  # run directory; the model folder is OUT/model
    scale: int = 4
    hr_side: int = 256
    width: int = 32
    blocks: int = 3
    steps: int = 20000
    batch: int = 16
    crop: int = 32  # low-resolution crop side
    lr: float = 1e-3
    lr_min: float = 1e-5
    loss: str = "mse"  # "mse" or "l1", on premultiplied RGBA in [-1, 1]
    edge_weight: float = 0.0  # weight of the same loss on horizontal/vertical differences
    val_every: int = 500
    val_images: int = 128  # of the validation hold-out
    checkpoint_every: int = 500
    max_minutes: float | None = None
    threads: int = 1
    seed: int = 0
    limit: int | None = None  # first N train images only (smoke runs)
    cache: str | None = None  # folder for the decoded pairs (.npy)
    workers: int = 1
    resume: bool = False
    init: str | None = None  # start from this upsampler folder's weights (a fine-tune); same width/blocks/scale
    adv_weight: float = 0.0  # weight of the adversarial term for the upsampler; 0 = reconstruction only
    adv_start_step: int = 0  # the upsampler gets the adversarial term from this step (the critic trains from 0)
    adv_loss: str = "hinge"  # "hinge" or "nonsaturating"
    d_lr: float = 2e-4  # discriminator Adam lr (constant), betas (0.5, 0.99)
    d_width: int = 16  # discriminator channels of its first convolution
    keep: str | None = None  # "best" (validation PSNR RGB) or "last"; default best, last when adv_weight > 0
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """ValueError naming the option for values that cannot train."""

        def bad(name, value, expected):
            raise ValueError(f"--{name.replace('_', '-')} must be {expected}, got {value!r}")

        if self.loss not in ("mse", "l1"):
            bad("loss", self.loss, "mse or l1")
        if not (isinstance(self.adv_weight, (int, float)) and math.isfinite(self.adv_weight) and self.adv_weight >= 0):
            bad("adv_weight", self.adv_weight, "a finite number >= 0")
        if not isinstance(self.adv_start_step, int) or self.adv_start_step < 0:
            bad("adv_start_step", self.adv_start_step, "an integer >= 0")
        if self.adv_loss not in ("hinge", "nonsaturating"):
            bad("adv_loss", self.adv_loss, "hinge or nonsaturating")
        if not (isinstance(self.d_lr, (int, float)) and math.isfinite(self.d_lr) and self.d_lr > 0):
            bad("d_lr", self.d_lr, "a finite number > 0")
        if not isinstance(self.d_width, int) or not 1 <= self.d_width <= 256:
            bad("d_width", self.d_width, "an integer in 1..256")
        if self.keep not in (None, "best", "last"):
            bad("keep", self.keep, "best or last")
        for name in ("steps", "batch", "crop", "val_every", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, getattr(self, name), "an integer >= 1")
        if not (self.lr > 0 and self.lr_min >= 0):
            bad("lr", self.lr, "> 0 (and lr_min >= 0)")
        if self.adv_weight > 0 and self.crop * self.scale < 16:
            bad(
                "crop",
                self.crop,
                f"at least {-(-16 // self.scale)} low-res px with --adv-weight > 0 (the critic "
                "downsamples the high-res crop 8 times)",
            )


def _augment(hr: torch.Tensor, lr: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k = int(torch.randint(4, (1,), generator=gen))
    if k:
        hr, lr = torch.rot90(hr, k, (-2, -1)), torch.rot90(lr, k, (-2, -1))
    if int(torch.randint(2, (1,), generator=gen)):
        hr, lr = hr.flip(-1), lr.flip(-1)
    return hr, lr


def _batch(hr_all, lr_all, opts: UpsamplerTrainOptions, gen: torch.Generator):
    n = hr_all.shape[0]
    lr_side = lr_all.shape[-1]
    s, c = opts.scale, opts.crop
    idx = torch.randint(n, (opts.batch,), generator=gen)
    his, los = [], []
    for i in idx.tolist():
        y, x = (int(v) for v in torch.randint(lr_side - c + 1, (2,), generator=gen))
        lo = lr_all[i, :, y : y + c, x : x + c]
        hi = hr_all[i, :, y * s : (y + c) * s, x * s : (x + c) * s]
        hi, lo = _augment(hi, lo, gen)
        his.append(hi)
        los.append(lo)
    to = lambda t: torch.stack(t).float() / 127.5 - 1  # noqa: E731
    return to(his), to(los)


def _loss(pred: torch.Tensor, target: torch.Tensor, edge_weight: float, kind: str = "mse") -> tuple[torch.Tensor, dict]:
    """Reconstruction loss on premultiplied RGBA. MSE by default: with L1 the zero-initialised residual
    barely moved (flat emoji areas make the per-pixel median residual 0), MSE gained 3 dB in 200 steps."""
    err = (pred - target) ** 2 if kind == "mse" else (pred - target).abs()
    total = err.mean()
    parts = {kind: float(total.detach())}
    if edge_weight:
        dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
        dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
        diff = lambda a, b: ((a - b) ** 2 if kind == "mse" else (a - b).abs()).mean()  # noqa: E731
        edge = diff(dx(pred), dx(target)) + diff(dy(pred), dy(target))
        total = total + edge_weight * edge
        parts["edge"] = float(edge.detach())
    return total, parts


def _adv_losses(kind: str):
    """(critic loss on real/fake logits, generator loss on fake logits): hinge or non-saturating."""
    if kind == "hinge":
        return (lambda real, fake: F.relu(1 - real).mean() + F.relu(1 + fake).mean(), lambda fake: -fake.mean())
    return (
        lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(),
        lambda fake: F.softplus(-fake).mean(),
    )


def gradient_ratio(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Sharpness: total absolute horizontal+vertical differences of `pred` over those of `target` ((C, H, W)
    or batches); 1 = as much edge energy as the real image, bilinear/Lanczos come out below 1."""

    def energy(t):
        return float((t[..., :, 1:] - t[..., :, :-1]).abs().sum() + (t[..., 1:, :] - t[..., :-1, :]).abs().sum())

    ref = energy(target)
    return 1.0 if ref == 0 else energy(pred) / ref


def gmsd(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Gradient magnitude similarity deviation (Xue et al. 2014), a perceptual full-reference measure that
    penalises both blur and false edges (ringing, noise): luma of (3, H, W) RGB in [0, 1], 2x2 average and
    downsample, Prewitt gradient magnitudes, similarity (2 m_p m_t + c) / (m_p^2 + m_t^2 + c) with c = 170/255^2,
    and its standard deviation over pixels. 0 = same edges; lower is better."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)

    def magnitude(t):
        y = F.avg_pool2d((t.float() * weights).sum(0, keepdim=True)[None], 2)
        px = torch.tensor([[1.0, 0, -1], [1, 0, -1], [1, 0, -1]]) / 3
        gx = F.conv2d(y, px.view(1, 1, 3, 3))
        gy = F.conv2d(y, px.T.contiguous().view(1, 1, 3, 3))
        return (gx**2 + gy**2).sqrt()

    mp, mt = magnitude(pred), magnitude(target)
    c = 170 / 255**2
    return float(((2 * mp * mt + c) / (mp**2 + mt**2 + c)).double().std(unbiased=False))


def _validate(model: Upsampler, hr: torch.Tensor, lr: torch.Tensor) -> dict:
    """PSNR (RGB on white, alpha) of the model and of bilinear on validation pairs, in network space, and
    the model's gradient ratio (sharpness of RGB on white against the real image, `gradient_ratio`)."""
    model.eval()
    out = {"rgb": [], "alpha": [], "bilinear_rgb": []}
    sharp, dev = [], []
    with torch.inference_mode():
        for i in range(0, hr.shape[0], 16):
            x = lr[i : i + 16].float() / 127.5 - 1
            target = hr[i : i + 16].float() / 255
            pred = (model(x).clamp(-1, 1) + 1) / 2
            base = (
                F.interpolate(x, scale_factor=model.config.scale, mode="bilinear", align_corners=False).clamp(-1, 1) + 1
            ) / 2
            for k in range(target.shape[0]):
                t = torch.cat([target[k, :3] + 1 - target[k, 3:], target[k, 3:]])
                p = torch.cat([pred[k, :3] + 1 - pred[k, 3:], pred[k, 3:]])
                b = torch.cat([base[k, :3] + 1 - base[k, 3:], base[k, 3:]])
                out["rgb"].append(psnr(p[:3], t[:3]))
                out["alpha"].append(psnr(p[3:], t[3:]))
                out["bilinear_rgb"].append(psnr(b[:3], t[:3]))
                sharp.append(gradient_ratio(p[:3], t[:3]))
                dev.append(gmsd(p[:3], t[:3]))
    model.train()
    return {
        **{f"val_psnr_{k}": float(np.mean(v)) for k, v in out.items()},
        "val_grad_ratio_rgb": float(np.mean(sharp)),
        "val_gmsd_rgb": float(np.mean(dev)),
    }


MODEL_CARD = """---
library_name: ganvas
tags: [super-resolution, upsampler, rgba, emoji]
---

# {name}

A ganvas **upsampler**: {in_res} -> {out_res} px (x{scale}), RGBA in and out (premultiplied inside, straight
alpha at the API), {params:,} parameters, {size_kb:.0f} kB. Residual CNN (ESPCN-style): {blocks} residual blocks of
two 3x3 convolutions at {width} channels, all at the input resolution, a pixel shuffle, added to a bilinear
upsample. `Pipeline(..., size=N)` uses it above the base model's native size.

## Training

- Data: `{data}` train split without its validation hold-out ({train_images} images); low-resolution inputs are
  Lanczos downsamples of the 256 px files (as emoji64a was made from the same renders).
- Loss: {loss} on premultiplied RGBA (+ {edge_weight} x the same on image gradients); {adversarial}.
- Budget: {steps} steps of batch {batch} ({crop} px low-res crops, flips and 90-degree turns), {hours:.2f} h on
  {threads} CPU thread(s); Adam lr {lr} cosine to {lr_min}. Best validation step: {best_step}.

## Evaluation

{evaluation}

## Data and licences

The emoji256a renders of the same eight openly licensed emoji designs as `models/emoji64` (Apache-2.0,
CC-BY-4.0, MIT; the table, attributions and licence texts are in `models/emoji64/README.md` and
`models/emoji64/LICENSES/`), built by `tools/build_emoji_dataset.py build --size 256 --alpha`.

## Intended use

Upscaling the 64 px images of ganvas's emoji models (and users' own 64 px sprites) to 256 px.

## Known limits

Trained on flat emoji artwork only: photos and textures come out close to bilinear. Sizes above 256 are the
256 px output resized (Lanczos), not a second pass.
"""


def _load_init(opts: UpsamplerTrainOptions, config: UpsamplerConfig) -> tuple[dict, dict]:
    """(state dict, its provenance) of the --init upsampler folder; ValueError when it does not fit."""
    from ganvas.core.io.checkpoint import CheckpointError, file_hash, load_upsampler

    folder = Path(opts.init)
    try:
        module, data = load_upsampler(folder)
    except CheckpointError as exc:
        raise ValueError(f"--init {folder}: {exc}") from None
    theirs, ours = module.config, config
    if (theirs.scale, theirs.channels, theirs.width, theirs.blocks) != (
        ours.scale,
        ours.channels,
        ours.width,
        ours.blocks,
    ):
        raise ValueError(
            f"--init {folder}: x{theirs.scale}, {theirs.channels} channels, width {theirs.width}, "
            f"{theirs.blocks} blocks; this run asks for x{ours.scale}, {ours.channels} channels, "
            f"width {ours.width}, {ours.blocks} blocks"
        )
    return (
        {k: v.clone() for k, v in module.state_dict().items()},
        {
            "folder": str(folder),
            "sha256_prefix": file_hash(folder / "model.safetensors", 10),
            "trained": data.get("trained", {}),
        },
    )


def train_upsampler(opts: UpsamplerTrainOptions, log: Callable[[str], None] = print) -> dict:
    from ganvas.core.io.checkpoint import load_training_state, save_training_state

    opts.check()
    configure_threads(opts.threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(opts.data)
    cache = Path(opts.cache) if opts.cache else None
    hr, lr, names = load_pairs(root, "train", opts.hr_side, opts.scale, opts.limit, cache, opts.workers, log)
    vhr, vlr, vnames = load_pairs(
        root, "validation", opts.hr_side, opts.scale, opts.val_images, cache, opts.workers, log
    )
    val_key = f"{len(vnames)}:{zlib.crc32(chr(10).join(vnames).encode()):08x}"
    random.seed(opts.seed)
    torch.manual_seed(opts.seed)
    config = UpsamplerConfig(
        in_resolution=opts.hr_side // opts.scale, scale=opts.scale, channels=4, width=opts.width, blocks=opts.blocks
    )
    model = Upsampler(config)
    init = _load_init(opts, config) if opts.init else None
    if init is not None:
        model.load_state_dict(init[0])
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, betas=(0.9, 0.99))
    adversarial = opts.adv_weight > 0
    modules, optimizers = {"model": model}, {"adam": optim}
    if adversarial:  # created after the upsampler and its optimizer: W = 0 draws nothing more from the RNG
        disc = PatchDiscriminator(config.channels, opts.d_width, conditional=True)
        optim_d = torch.optim.Adam(disc.parameters(), lr=opts.d_lr, betas=(0.5, 0.99))
        modules["disc"], optimizers["adam_d"] = disc, optim_d
        d_loss_fn, g_loss_fn = _adv_losses(opts.adv_loss)
    keep = opts.keep or ("last" if adversarial else "best")
    gen = torch.Generator().manual_seed(opts.seed)
    info = {"step": 0, "best": None, "seconds": 0.0}
    if opts.resume and (out / "training_state.json").exists():
        saved = json.loads((out / "training_state.json").read_text(encoding="utf-8"))
        if adversarial and "adam_d" not in saved.get("optimizers", {}):
            log("the saved state has no discriminator (a reconstruction-only run): it starts fresh here")
            modules, optimizers = {"model": model}, {"adam": optim}
        elif not adversarial and "adam_d" in saved.get("optimizers", {}):
            log("--adv-weight 0 on an adversarial run: its discriminator state is dropped")
        info, rng = load_training_state(out, modules, optimizers)
        modules, optimizers = {"model": model}, {"adam": optim}
        if adversarial:
            modules["disc"], optimizers["adam_d"] = disc, optim_d
        gen.set_state(rng["batches"])
        torch.set_rng_state(rng["torch"])
        log(f"resumed at step {info['step']}")
        if info.get("val_key") != val_key and info.get("best") is not None:
            log("the validation images changed (a dataset that grew): the best step is chosen afresh from here")
            info["best"] = None
    info["val_key"] = val_key
    (out / "options.json").write_text(json.dumps(asdict(opts), indent=2))
    stats = (out / "stats.jsonl").open("a")
    start, step = time.perf_counter(), info["step"]
    seconds0 = info["seconds"]

    def save_state():
        info["seconds"] = seconds0 + time.perf_counter() - start
        save_training_state(
            out, modules, optimizers, {"batches": gen.get_state(), "torch": torch.get_rng_state()}, info
        )

    def save_best(val: dict):
        info["best"] = {"step": step, **val}
        hours = (seconds0 + time.perf_counter() - start) / 3600
        trained = {
            "data": str(opts.data),
            "train_images": len(names),
            "steps": step,
            "hours": round(hours, 4),
            "threads": opts.threads,
            "params": count_parameters(model),
            "validation": val,
            "options": {k: v for k, v in asdict(opts).items() if k not in ("out", "resume", "cache", "extra")},
        }
        if adversarial:
            trained["adversarial"] = {
                "weight": opts.adv_weight,
                "loss": opts.adv_loss,
                "start_step": opts.adv_start_step,
                "discriminator": f"conditional patch critic, width {opts.d_width}, "
                f"{count_parameters(disc)} params (training state only)",
                "d_lr": opts.d_lr,
                "kept": keep,
            }
        if init is not None:  # the phase before this one: the recipe of the weights it started from
            trained["init"] = init[1]
        save_upsampler(out / "model", model, trained)

    model.train()
    window: list[dict] = []
    while step < opts.steps:
        if opts.max_minutes is not None and time.perf_counter() - start > opts.max_minutes * 60:
            log(f"--max-minutes reached at step {step}")
            break
        t = step / max(1, opts.steps)
        for group in optim.param_groups:
            group["lr"] = opts.lr_min + 0.5 * (opts.lr - opts.lr_min) * (1 + math.cos(math.pi * t))
        target, x = _batch(hr, lr, opts, gen)
        pred = model(x)
        loss, parts = _loss(pred, target, opts.edge_weight, opts.loss)
        if adversarial:
            cond = F.interpolate(x, scale_factor=opts.scale, mode="bilinear", align_corners=False)
            disc.requires_grad_(True)
            d_loss = d_loss_fn(disc(target, cond), disc(pred.detach(), cond))
            optim_d.zero_grad(set_to_none=True)
            d_loss.backward()
            optim_d.step()
            parts["d_loss"] = float(d_loss.detach())
            if step >= opts.adv_start_step:
                disc.requires_grad_(False)
                g_adv = g_loss_fn(disc(pred, cond))
                loss = loss + opts.adv_weight * g_adv
                parts["g_adv"] = float(g_adv.detach())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        step += 1
        info["step"] = step
        window.append(parts)
        if step % opts.val_every == 0 or step == opts.steps:
            val = _validate(model, vhr, vlr)
            record = {
                "step": step,
                "lr": optim.param_groups[0]["lr"],
                **{k: float(np.mean([w[k] for w in window])) for k in window[0]},
                **val,
                "seconds": round(seconds0 + time.perf_counter() - start, 1),
            }
            window = []
            stats.write(json.dumps(record) + "\n")
            stats.flush()
            log(json.dumps(record))
            if keep == "last" or info["best"] is None or val["val_psnr_rgb"] > info["best"]["val_psnr_rgb"]:
                save_best(val)
        if step % opts.checkpoint_every == 0:
            save_state()
    save_state()
    stats.close()
    return {"model": str(out / "model"), "step": step, "best": info["best"]}


# --- evaluation -----------------------------------------------------------------------------------------------


def evaluate_upsampler(
    loaded: LoadedUpsampler | None,
    data: Path,
    split: str = "test",
    lr_data: Path | None = None,
    limit: int | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """PSNR/SSIM (RGB on white, alpha) of the upsampler, Lanczos and bicubic against the real high-res
    images of `split`. Low-res inputs: `lr_data`'s files of the same name (e.g. emoji64a), else Lanczos
    downsamples of the high-res files. Images are upscaled from their uint8 pixels, as a user's file is."""
    names = split_files(data, split)
    if limit:
        names = names[:limit]
    folder = data / ("train" if split in ("train", "validation") else split)
    lr_folder = None if lr_data is None else lr_data / ("train" if split in ("train", "validation") else split)
    scale = loaded.info.scale if loaded is not None else 4
    methods = {"lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC}
    scores: dict[str, dict[str, list[float]]] = {
        m: {"psnr_rgb": [], "ssim_rgb": [], "psnr_alpha": [], "ssim_alpha": [], "grad_ratio_rgb": [], "gmsd_rgb": []}
        for m in (["upsampler"] if loaded is not None else []) + list(methods)
    }
    seconds = 0.0
    for k, name in enumerate(names):
        with Image.open(folder / name) as im:
            real = im.convert("RGBA")
        side = real.size[0] // scale
        if lr_folder is not None:
            with Image.open(lr_folder / name) as im:
                small = im.convert("RGBA")
            if small.size != (side, side):
                raise ValueError(
                    f"{lr_folder / name}: {small.size[0]} px, expected {side} px ({real.size[0]} / x{scale})"
                )
        else:
            small = downsample(real, side)
        outputs = {m: small.resize(real.size, f) for m, f in methods.items()}
        if loaded is not None:
            t0 = time.perf_counter()
            outputs["upsampler"] = upscale_image(loaded, small, threads)
            seconds += time.perf_counter() - t0
        target = _measure_space(real)
        for m, image in outputs.items():
            pred = _measure_space(image)
            scores[m]["psnr_rgb"].append(psnr(pred[:3], target[:3]))
            scores[m]["ssim_rgb"].append(ssim(pred[:3], target[:3]))
            scores[m]["psnr_alpha"].append(psnr(pred[3:], target[3:]))
            scores[m]["ssim_alpha"].append(ssim(pred[3:], target[3:]))
            scores[m]["grad_ratio_rgb"].append(gradient_ratio(pred[:3], target[:3]))
            scores[m]["gmsd_rgb"].append(gmsd(pred[:3], target[:3]))
        if (k + 1) % 200 == 0:
            log(f"{k + 1}/{len(names)} images")
    report = {
        "data": str(data),
        "split": split,
        "images": len(names),
        "low_res_inputs": str(lr_data) if lr_data is not None else "Lanczos downsamples of the high-res files",
        "scale": scale,
        "measure": "mean over images of PSNR (dB) and SSIM, RGB composited on white and alpha; grad_ratio_rgb: "
        "edge energy (absolute pixel differences) of RGB on white over the real image's (1 = as much; above 1 = "
        "false edges such as ringing); gmsd_rgb: gradient magnitude similarity deviation (lower = closer edges)",
        "methods": {m: {k: float(np.mean(v)) for k, v in s.items()} for m, s in scores.items()},
    }
    if loaded is not None:
        report["upsampler"] = {
            "name": loaded.info.name,
            "hash": loaded.info.hash,
            "ms_per_image": 1000 * seconds / max(1, len(names)),
        }
        ours, lanczos = report["methods"]["upsampler"], report["methods"]["lanczos"]
        report["gain_over_lanczos_db"] = {
            "rgb": ours["psnr_rgb"] - lanczos["psnr_rgb"],
            "alpha": ours["psnr_alpha"] - lanczos["psnr_alpha"],
        }
    return report


def report_text(report: dict) -> str:
    lines = [
        f"{report['split']}: {report['images']} images, x{report['scale']}, inputs: {report['low_res_inputs']}",
        f"{'method':<10} {'PSNR rgb':>9} {'SSIM rgb':>9} {'PSNR a':>8} {'SSIM a':>8} {'grad ratio':>10} {'GMSD':>7}",
    ]
    for m, s in report["methods"].items():
        lines.append(
            f"{m:<10} {s['psnr_rgb']:9.2f} {s['ssim_rgb']:9.4f} {s['psnr_alpha']:8.2f} {s['ssim_alpha']:8.4f} "
            f"{s.get('grad_ratio_rgb', float('nan')):10.3f} {s.get('gmsd_rgb', float('nan')):7.4f}"
        )
    if "gain_over_lanczos_db" in report:
        g = report["gain_over_lanczos_db"]
        lines.append(f"upsampler over Lanczos: {g['rgb']:+.2f} dB (RGB on white), {g['alpha']:+.2f} dB (alpha)")
    return "\n".join(lines)


def info_for(module: Upsampler, name: str = "upsampler") -> LoadedUpsampler:
    """Wrap an in-memory upsampler (tests, training) like a loaded one."""
    import threading

    c = module.config
    return LoadedUpsampler(
        UpsamplerInfo(name, "in-memory", c.in_resolution, c.scale, c.channels),
        module.eval(),
        torch.device("cpu"),
        threading.Lock(),
    )
