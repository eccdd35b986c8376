"""Alternating GAN training: hinge loss + matching-aware negatives + lazy matching-aware gradient penalty.

One `Trainer` runs on CPU or GPU, alone or as one of several processes under `torchrun` (gradients are
averaged across processes with torch.distributed; gloo on CPU, nccl on GPU). The run directory holds
stats.jsonl, sample grids, a loss plot, the latest model folder and the exact training state for --resume.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

import ganvas.core.io.checkpoint as checkpoint
from ganvas.core.datasets.folders import CAPTION_FORMS, STYLE_PROMPT_TEMPLATE, CaptionedImages
from ganvas.core.io.images import caption_grid, from_uint8, loss_plot, to_pil
from ganvas.core.model.augment import diff_augment
from ganvas.core.model.config import PRESETS, ModelConfig
from ganvas.core.model.networks import Discriminator, Generator, count_parameters, noise
from ganvas.core.text.encoder import EmbeddingCache, default_cache_dir
from ganvas.core.threads import configure_threads
from ganvas.core.training.sampling import CaptionSampler, parse_mix


@dataclass
class TrainOptions:
    data: str
    out: str
    resolution: int = 64
    steps: int = 10000
    batch: int = 32
    preset: str = "small"
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple = (0.0, 0.9)
    gp_every: int = 4  # lazy matching-aware GP: double backprop only every k-th step (CPU's biggest cost)
    gp_weight: float = 2.0
    gp_power: float = 6.0  # DF-GAN's MA-GP: weight * mean(|grad|^p)
    ema_beta: float = 0.999
    ema_images: float = 0.0  # EMA half-life in images (StyleGAN's ema_kimg); 0 = ema_beta per step
    gp_augment: bool = False  # apply the penalty to the augmented reals D actually sees
    caption_forms: str = ""  # e.g. "full:0.5,typed:0.35,name:0.15" (needs label/style metadata); "" = full only
    negatives: str = ""  # mismatched-caption kinds, e.g. "random:0.4,style:0.3,concept:0.3"; "" = random
    holdout_validation: bool = False  # train without the validation hold-out of data.validation_holdout
    evaluator: str | None = None  # evaluator folder: log validation R@1/style/diversity every val_every steps
    val_every: int = 0
    augment: str = "translation,cutout"  # DiffAugment ops; cutout can erase small objects entirely
    hard_negatives: float = 0.0  # share of mismatched captions chosen as the batch's most similar caption
    mode_seeking: float = 0.0  # weight of MSGAN's mode-seeking term (pairs of noises per caption in G's step)
    init: str | None = None  # model folder whose generator starts the run (G and its EMA; D starts fresh)
    d_warmup_steps: int = 0  # steps that train only D, so a fresh critic catches up before G follows it
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    bf16: bool = False
    shapes_size: int = 20000
    workers: int = 1  # processes that render the shapes pool
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 1000
    max_minutes: float | None = None
    resume: bool = False
    cache_dir: str | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Inputs come from the host (core/hosts/cli/train.py): `dataset`, loaded by the format registered for
    --data (`ganvas_register_datasets`); `embeddings`, an EmbeddingCache on the text encoder registered under
    the model's encoder name (`ganvas_register_text_encoders`), whose name the model records; `validation`,
    a zero-argument callable returning (hold-out, whole train split) for the --evaluator probe. Without
    them (Python, tests) the built-in formats read `opts.data` and the built-in MiniLM embeds captions."""

    def __init__(
        self,
        opts: TrainOptions,
        dataset: CaptionedImages | None = None,
        log=print,
        embeddings: EmbeddingCache | None = None,
        validation=None,
    ):
        self.opts = opts
        self.out = Path(opts.out)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.is_main = self.rank == 0
        self.log = log if self.is_main else (lambda *a, **k: None)
        if opts.threads:
            configure_threads(opts.threads)
        self.device = _pick_device(opts.device)
        if self.world > 1:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if not dist.is_initialized():
                dist.init_process_group(backend)
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "samples").mkdir(exist_ok=True)

        if opts.preset not in PRESETS:
            raise ValueError(f"unknown preset {opts.preset!r}; choose from {sorted(PRESETS)}")
        if dataset is None:
            from ganvas.core.datasets.formats import load_builtin

            dataset = load_builtin(
                opts.data,
                opts.resolution,
                size=opts.shapes_size,
                seed=opts.seed,
                workers=opts.workers,
                subset="train" if opts.holdout_validation else "all",
            )
        self.data = dataset
        if self.data.resolution != opts.resolution:
            raise ValueError(f"dataset resolution {self.data.resolution} != --resolution {opts.resolution}")
        self._write_skipped()
        self.cache = embeddings or EmbeddingCache(opts.cache_dir or default_cache_dir())
        self._validation_data = validation
        if not (opts.caption_forms or opts.negatives):  # prompt forms unused: don't spend time encoding them
            self.data.caption_forms = None
            self.data.captions = self.data.captions[: int(self.data.caption_index.max()) + 1]
        text = self.cache.lookup(self.data.captions, log=self.log)

        # The model records the encoder its text vectors came from (hosts refuse a model whose encoder is missing).
        self.config = ModelConfig(
            resolution=opts.resolution,
            channels=self.data.images.shape[1],
            text_dim=int(text.shape[1]),
            text_encoder=self.cache.encoder_name,
            **PRESETS[opts.preset],
        )
        torch.manual_seed(opts.seed)
        self.G = Generator(self.config)
        self.D = Discriminator(self.config)
        # Standardise text dimensions over the training captions (see Generator.text_mean).
        self.G.text_mean.copy_(text.mean(0))
        self.G.text_std.copy_(text.std(0).clamp(min=1e-4) if len(text) > 1 else torch.ones_like(text[0]))
        if opts.init:
            self._load_init(opts.init)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        for m in (self.G, self.D, self.G_ema):
            m.to(self.device)
        self.text = text.to(self.device)
        self.images = self.data.images.to(self.device)
        self.caption_index = self.data.caption_index.to(self.device)
        self.captions = CaptionSampler(
            self.data,
            parse_mix(opts.caption_forms, CAPTION_FORMS, "full"),
            parse_mix(opts.negatives, ("random", "style", "concept"), "random"),
            self.device,
        )
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=opts.lr_g, betas=tuple(opts.betas))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=opts.lr_d, betas=tuple(opts.betas))
        self.data_rng = torch.Generator().manual_seed(opts.seed * 1000 + self.rank)
        torch.manual_seed(opts.seed * 1000 + self.rank + 1)  # noise and augmentation differ per process
        self.step = 0
        self.images_seen = 0
        self.train_seconds = 0.0
        self.cpu_seconds = 0.0  # process CPU time, so core-hours are counted, not typed in
        self.phases: list[dict] = []
        if self.world > 1:
            self._broadcast_parameters()
        if opts.resume:
            self._resume()
        # One entry per command that trained this run (a resume may change the recipe): the card's history.
        self.phases.append({"from_step": self.step, "options": self._recorded_options()})
        self.sample_captions = self._pick_sample_captions()
        self.validation = self._validation_probe()

    # --- set-up helpers -------------------------------------------------------------------------------------
    def _load_init(self, folder: str) -> None:
        """Start G from a trained model (its EMA weights, as shipped). Its text standardisation comes along:
        the weights were learned against it. The critic and the optimisers start fresh (a model folder holds
        neither), hence --d-warmup-steps."""
        generator, _ = checkpoint.load_generator(folder, expected_text_encoder=self.config.text_encoder)
        if generator.config != self.config:
            raise checkpoint.CheckpointError(
                f"--init {folder}: its model config {generator.config} differs from this run's {self.config} "
                "(same --preset, --resolution, dataset channels and text encoder are needed)"
            )
        self.G.load_state_dict(generator.state_dict())
        self.log(f"generator initialised from {folder}")

    def _recorded_options(self) -> dict:
        return {k: v for k, v in asdict(self.opts).items() if k not in ("extra", "resume", "progress", "out")}

    def _validation_probe(self):
        if not (self.opts.evaluator and self.opts.val_every and self.is_main):
            return None
        from ganvas.core.training.validation import ValidationProbe

        if self._validation_data is not None:
            held, train = self._validation_data()
        else:
            from ganvas.core.datasets.formats import load_builtin

            held, train = (
                load_builtin(self.opts.data, self.opts.resolution, subset=subset, channels=3)
                for subset in ("validation", "all")
            )
        return ValidationProbe.from_data(held, train, self.opts.evaluator, self.cache, self.device, log=self.log)

    def _write_skipped(self):
        if self.is_main and self.data.skipped:
            lines = [f"{path}\t{reason}" for path, reason in self.data.skipped]
            (self.out / "skipped.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            self.log(f"skipped {len(lines)} unreadable files (listed in {self.out / 'skipped.txt'})")

    def _pick_sample_captions(self, count: int = 8) -> list[str]:
        chosen = self.opts.extra.get("sample_captions")
        if chosen:
            return list(chosen)
        if self.data.caption_forms is not None:  # show what users type: "name; style style" of spread-out images
            step = max(1, len(self.data) // count)
            typed = self.data.caption_forms[::step, 1][:count]
            return [self.data.captions[i] for i in typed.tolist()]
        step = max(1, len(self.data.captions) // count)
        return self.data.captions[::step][:count]

    def _broadcast_parameters(self):
        for module in (self.G, self.D, self.G_ema):
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, 0)

    def _average_gradients(self, module):
        if self.world == 1:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    # --- one step -------------------------------------------------------------------------------------------
    def _batch(self):
        idx = torch.randint(len(self.images), (self.opts.batch,), generator=self.data_rng).to(self.device)
        caps, mis_caps = self.captions.draw(idx, self.data_rng)
        if self.opts.hard_negatives:
            mis_caps = self._mismatched_captions(caps)
        real = from_uint8(self.images[idx])
        text = self.text[caps]
        mismatch_ok = (mis_caps != caps).float()
        return real, text, self.text[mis_caps], mismatch_ok

    def _mismatched_captions(self, caps):
        """Captions for the matching-aware negative: the next sample's caption, or, for a share of the batch,
        the most similar *different* caption in the batch (hard negatives make D read the words that
        change the picture least in embedding space, e.g. the shape in "a small red star on the left")."""
        mis = caps.roll(1)
        hard = int(round(self.opts.hard_negatives * len(caps)))
        if hard:
            t = self.text[caps]
            sims = t @ t.t()
            sims[caps[:, None] == caps[None, :]] = float("-inf")
            nearest = caps[sims.argmax(1)]
            mis = torch.cat([nearest[:hard], mis[hard:]])
        return mis

    def _augment(self, images):
        return diff_augment(images, ops=self.opts.augment)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.opts.bf16)

    def train_step(self) -> dict:
        opts = self.opts
        real, text, mis_text, mismatch_ok = self._batch()
        t = self.G.normalize_text(text)
        t_mis = self.G.normalize_text(mis_text)
        z = torch.randn(real.shape[0], self.config.z_dim, device=self.device)

        # Discriminator: real+matched high; fake and real+mismatched low.
        with self._autocast():
            with torch.no_grad():
                fake = self.G(z, text)
            d_real, d_mis = self.D(self._augment(real), t, t_mis)
            d_fake = self.D(self._augment(fake.float()), t)
            loss_real = F.relu(1 - d_real).mean()
            loss_fake = F.relu(1 + d_fake).mean()
            loss_mis = (F.relu(1 + d_mis) * mismatch_ok).sum() / mismatch_ok.sum().clamp(min=1)
            loss_d = loss_real + (loss_fake + loss_mis) / 2
        gp = torch.zeros((), device=self.device)
        if opts.gp_every and self.step % opts.gp_every == 0:
            gp = self._matching_aware_gp(real, t)
        self.opt_d.zero_grad(set_to_none=True)
        (loss_d.float() + gp * opts.gp_every).backward()
        self._average_gradients(self.D)
        self.opt_d.step()

        loss_g = loss_ms = torch.zeros((), device=self.device)
        if self.step >= opts.d_warmup_steps:  # a fresh critic (--init) first learns the current G
            loss_g, loss_ms = self._generator_step(real.shape[0], text, t)
        self._update_ema()
        self.step += 1
        self.images_seen += real.shape[0] * self.world
        return {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "gp": gp.item(),
            "mode_seeking": loss_ms.item(),
            "d_real": d_real.float().mean().item(),
            "d_fake": d_fake.float().mean().item(),
            "d_mis": d_mis.float().mean().item(),
        }

    def _generator_step(self, n: int, text, t):
        """Fool D on matched captions. Returns (adversarial loss, mode-seeking loss)."""
        opts = self.opts
        z = torch.randn(n, self.config.z_dim, device=self.device)
        half = n // 2
        if opts.mode_seeking and half:
            # Each caption of the first half is drawn again with a second noise in the second half.
            text, t = text.clone(), t.clone()
            text[half : 2 * half], t[half : 2 * half] = text[:half], t[:half]
        with self._autocast():
            fake = self.G(z, text)
            loss_g = -self.D(self._augment(fake.float()), t).mean()
        loss_ms = torch.zeros((), device=self.device)
        if opts.mode_seeking and half:
            # MSGAN (Mao et al. 2019): penalise two noises that give nearly the same image for one caption.
            image_gap = (fake[:half] - fake[half : 2 * half]).float().abs().mean(dim=(1, 2, 3))
            noise_gap = (z[:half] - z[half : 2 * half]).abs().mean(dim=1)
            loss_ms = 1 / (image_gap / noise_gap).mean().clamp(min=1e-5)
        self.opt_g.zero_grad(set_to_none=True)
        (loss_g.float() + opts.mode_seeking * loss_ms).backward()
        self._average_gradients(self.G)
        self.opt_g.step()
        return loss_g, loss_ms

    def _matching_aware_gp(self, real, t):
        """DF-GAN's MA-GP on real images with their own captions, w.r.t. both image and text (fp32)."""
        if self.opts.gp_augment:
            real = self._augment(real)
        real = real.detach().requires_grad_(True)
        t = t.detach().requires_grad_(True)
        out = self.D(real, t)
        g_img, g_txt = torch.autograd.grad(out.sum(), (real, t), create_graph=True)
        norm = torch.sqrt(g_img.flatten(1).pow(2).sum(1) + g_txt.pow(2).sum(1) + 1e-12)
        return self.opts.gp_weight * norm.pow(self.opts.gp_power).mean()

    @torch.no_grad()
    def _update_ema(self):
        # Ramp the EMA horizon up during the first steps so early samples are not dominated by the init.
        beta = self.opts.ema_beta
        if self.opts.ema_images:  # a horizon in images means the same thing at batch 32 and at batch 512
            beta = 0.5 ** (self.opts.batch * self.world / self.opts.ema_images)
        beta = min(beta, (1 + self.step) / (10 + self.step))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # --- outputs --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, captions: list[str], seeds: int = 8):
        text = self.cache.lookup(captions).to(self.device)  # one cache per run: no re-read per sample grid
        rows, tensors = [], []
        for i in range(len(captions)):
            z = noise(self.config.z_dim, range(seeds)).to(self.device)  # the pipeline's seeds 0..n-1
            imgs = self.G_ema(z, text[i : i + 1].expand(seeds, -1)).float()
            tensors.append(imgs)
            rows.append(to_pil(imgs))
        spread = torch.stack([im.std(0).mean() for im in tensors]).mean().item() / 2  # pixels in [0,1] units
        return rows, spread

    def write_samples(self) -> float:
        rows, spread = self.sample(self.sample_captions)
        grid = caption_grid(rows, self.sample_captions)
        grid.save(self.out / "samples" / f"step_{self.step:07d}.png")
        grid.save(self.out / "samples.png")
        return spread

    def write_loss_plot(self):
        records = [json.loads(line) for line in (self.out / "stats.jsonl").read_text().splitlines() if line.strip()]
        series = {k: [(r["step"], r[k]) for r in records if k in r] for k in ("loss_d", "loss_g", "gp")}
        loss_plot(series).save(self.out / "loss.png")

    def trained_info(self) -> dict:
        return {
            "steps": self.step,
            "images_seen": self.images_seen,
            "data": self.opts.data,
            "batch": self.opts.batch * self.world,
            "processes": self.world,
            "device": self.device.type,
            "train_hours": round(self.train_seconds / 3600, 4),
            "device_hours": round(self.train_seconds * self.world / 3600, 4),
            "bf16": self.opts.bf16,
            "params_generator": count_parameters(self.G),
            "params_discriminator": count_parameters(self.D),
            "seed": self.opts.seed,
            "cpu_core_hours": round(self.cpu_seconds / 3600, 4),
            "preset": self.opts.preset,
            "options": self._recorded_options(),
            "phases": self.phases,
            **({"styles": list(self.data.styles)} if self.data.styles else {}),
        }

    def save(self):
        if not self.is_main:
            return
        info = {
            "step": self.step,
            "images_seen": self.images_seen,
            "train_seconds": self.train_seconds,
            "cpu_seconds": self.cpu_seconds,
            "phases": self.phases,
            "options": {k: v for k, v in asdict(self.opts).items() if k != "extra"},
            "config": self.config.to_dict(),
        }
        rng = {"torch": torch.get_rng_state(), "data": self.data_rng.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        checkpoint.save_training_state(
            self.out, {"G": self.G, "D": self.D, "G_ema": self.G_ema}, {"G": self.opt_g, "D": self.opt_d}, rng, info
        )
        from ganvas.core.io.model_card import basic_card

        checkpoint.save_model(
            self.out / "model",
            self.G_ema,
            self.trained_info(),
            card=basic_card(self.out.name, self.trained_info()),
            prompt_template=STYLE_PROMPT_TEMPLATE if self.data.styles else None,
        )

    def _resume(self):
        if not (self.out / "training_state.json").exists():
            self.log(f"--resume: no training state in {self.out}; starting from step 0")
            return
        info, rng = checkpoint.load_training_state(
            self.out, {"G": self.G, "D": self.D, "G_ema": self.G_ema}, {"G": self.opt_g, "D": self.opt_d}
        )
        saved_cfg = ModelConfig.from_dict(info["config"])
        if saved_cfg != self.config:
            raise checkpoint.CheckpointError(f"{self.out}: saved model config {saved_cfg} differs from {self.config}")
        self.step, self.images_seen = info["step"], info["images_seen"]
        self.train_seconds = info.get("train_seconds", 0.0)
        self.cpu_seconds = info.get("cpu_seconds", 0.0)
        self.phases = list(info.get("phases", []))
        if self.rank == 0:
            torch.set_rng_state(rng["torch"])
            self.data_rng.set_state(rng["data"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        else:  # other processes continue with fresh but distinct streams
            torch.manual_seed(self.opts.seed * 1000 + self.rank + 1 + self.step)
        self.log(f"resumed {self.out} at step {self.step} ({self.images_seen} images seen)")

    # --- the loop -------------------------------------------------------------------------------------------
    def run(self) -> dict:
        opts = self.opts
        self.log(
            f"training {count_parameters(self.G) / 1e6:.2f}M-param G / {count_parameters(self.D) / 1e6:.2f}M-param D "
            f"at {opts.resolution}px on {len(self.data)} images ({len(self.data.captions)} captions), "
            f"device {self.device}, {self.world} process(es), batch {opts.batch}/process"
        )
        bar = None
        if self.is_main and opts.progress:
            from tqdm import tqdm

            bar = tqdm(total=opts.steps, initial=self.step, unit="step", dynamic_ncols=True)
        start = time.time()
        window_start, window_images = time.time(), 0
        stats_file = open(self.out / "stats.jsonl", "a", encoding="utf-8") if self.is_main else None
        last = {}
        try:
            while self.step < opts.steps:
                t0, c0 = time.time(), time.process_time()
                last = self.train_step()
                self.train_seconds += time.time() - t0
                self.cpu_seconds += time.process_time() - c0
                window_images += opts.batch * self.world
                if not all(math.isfinite(v) for v in last.values()):
                    self.save_on_failure()
                    raise FloatingPointError(
                        f"losses became non-finite at step {self.step} ({last}); the last good checkpoint is "
                        f"in {self.out}/model. Lower --lr-d/--lr-g or enable the gradient penalty."
                    )
                if self.step % opts.log_every == 0 or self.step == opts.steps:
                    now = time.time()
                    rate = window_images / max(now - window_start, 1e-9)
                    window_start, window_images = now, 0
                    record = {
                        "step": self.step,
                        "images_seen": self.images_seen,
                        "images_per_s": round(rate, 1),
                        **{k: round(v, 5) for k, v in last.items()},
                        "time": round(now - start, 1),
                    }
                    if self.step % opts.sample_every == 0 and self.is_main:
                        record["seed_pixel_std"] = round(self.write_samples(), 5)
                    if self.validation and self.step % opts.val_every == 0:
                        record.update(self.validation(self.G_ema))
                    if stats_file:
                        stats_file.write(json.dumps(record) + "\n")
                        stats_file.flush()
                    if bar:
                        bar.set_postfix(img_s=f"{rate:.0f}", D=f"{last['loss_d']:.3f}", G=f"{last['loss_g']:.3f}")
                if bar:
                    bar.update(1)
                if self.step % opts.checkpoint_every == 0:
                    self.save()
                if self._time_is_up(start):
                    self.log(f"\nstopping at step {self.step}: --max-minutes {opts.max_minutes} reached")
                    break
        finally:
            if bar:
                bar.close()
            if stats_file:
                stats_file.close()
        if self.is_main:
            self.write_samples()
            self.save()
            self.write_loss_plot()
        return {"step": self.step, "images_seen": self.images_seen, **last}

    def _time_is_up(self, start: float) -> bool:
        """All processes must stop at the same step, or one would wait forever in the next all-reduce."""
        up = bool(self.opts.max_minutes) and time.time() - start > self.opts.max_minutes * 60
        if self.world > 1:
            flag = torch.tensor([1.0 if up else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            up = bool(flag.item())
        return up

    def save_on_failure(self):
        """Keep the last good model folder untouched; only record where the run failed."""
        if self.is_main:
            (self.out / "FAILED.txt").write_text(f"non-finite losses at step {self.step}\n", encoding="utf-8")


def train(
    opts: TrainOptions,
    log=print,
    dataset: CaptionedImages | None = None,
    embeddings: EmbeddingCache | None = None,
    validation=None,
) -> dict:
    trainer = Trainer(opts, dataset, log=log, embeddings=embeddings, validation=validation)
    try:
        return trainer.run()
    finally:
        if trainer.world > 1 and dist.is_initialized():
            # Rank 0 is still writing samples and checkpoints after the loop: tearing the group down
            # under it made gloo abort another process ("terminate called without an active exception").
            dist.barrier()
            dist.destroy_process_group()
