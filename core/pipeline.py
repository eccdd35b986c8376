"""The one generation path: request -> plugins -> text encoder -> generator -> images + metadata.

    from ganvas.core.pipeline import Pipeline
    pipe = Pipeline.load("shapes")               # registered name or checkpoint folder
    res = pipe("a red circle", n=4, seed=7, truncation=0.8)
    res.images, res.seeds, res.request, res.timings
    pipe.interpolate(["a red apple", "a green apple"], steps=8, seed=3)

Seeds: image i uses seed + i, its noise drawn on the CPU from its own torch.Generator (exactly as the
trainer draws its sample grids). Each image is computed on its own (a batch of one): CPU matrix kernels
change their summation order with the batch size, which moved a few pixels by one level between a
batch of 1 and a batch of 64 in our measurement; computing per image costs ~1.4x throughput at 32 px
and makes seed s the same picture alone, in a batch of 64, or in another process.
`Pipeline.load(..., exact_seeds=False)` batches instead (faster, pixels may differ by a level).

Threads: the generator runs at the pipeline's own torch thread count (GANVAS_THREADS, else 1, or
configure_threads / Pipeline.threads), whatever the host set, which gets its setting back (render_threads).
"""

from __future__ import annotations

import copy
import math
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ganvas.core.errors import GanvasError, InvalidRequest
from ganvas.core.io.checkpoint import CheckpointError, file_hash, load_generator
from ganvas.core.io.images import to_pil
from ganvas.core.model.networks import noise  # re-exported: hosts and plugins import it from here
from ganvas.core.plugin_manager import GanvasPlugins, get_plugin_manager
from ganvas.core.registry import cache_key, produce, resolve_model, state_hash  # noqa: F401 (resolve_model: hosts' API)
from ganvas.core.requests import (
    DEFAULT_MODEL,
    DEFAULT_TRUNCATION,
    MAX_SEED,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    default_model_name,
    prompt_template,
    trained_styles,
)
from ganvas.core.threads import configure_threads, default_threads, render_threads  # noqa: F401 (hosts' API)

BATCH_SIZE = 64  # forward-pass chunk when exact_seeds=False
PROMPT_CACHE_SIZE = 4096


def random_seed() -> int:
    return secrets.randbelow(2**32)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation (exact at t=0 and t=1, so key frames equal plain generations)."""
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1).item()
    omega = math.acos(cos)
    if omega < 1e-4:
        return a + (b - a) * t
    return (math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / math.sin(omega)


# --- prompt embeddings ------------------------------------------------------------------------------------


class PromptCache:
    """Thread-safe LRU of sentence vectors for one text encoder.

    One lock around encode as well: Hugging Face fast tokenizers raise "Already borrowed" when two
    threads use one tokenizer at the same time.
    """

    def __init__(self, encoder: Any, maxsize: int = PROMPT_CACHE_SIZE):
        self.encoder = encoder
        self.maxsize = maxsize
        self._vectors: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        with self._lock:
            missing = list(dict.fromkeys(p for p in prompts if p not in self._vectors))
            self.hits += len(prompts) - len(missing)
            self.misses += len(missing)
            if missing:
                encoded = self.encoder.encode(missing)
                vectors = getattr(encoded, "sentence", encoded)
                if not torch.is_tensor(vectors) or vectors.ndim != 2 or vectors.shape[0] != len(missing):
                    raise GanvasError(
                        f"text encoder {type(self.encoder).__name__} returned "
                        f"{getattr(vectors, 'shape', type(vectors).__name__)} for {len(missing)} prompts"
                    )
                for prompt, vector in zip(missing, vectors.detach().float().cpu()):
                    self._vectors[prompt] = vector.clone()
            for p in prompts:
                self._vectors.move_to_end(p)
            out = torch.stack([self._vectors[p] for p in prompts])
            while len(self._vectors) > self.maxsize:
                self._vectors.popitem(last=False)
            return out


_prompt_caches: dict[int, PromptCache] = {}
_prompt_caches_lock = threading.Lock()


def prompt_cache_for(encoder: Any) -> PromptCache:
    with _prompt_caches_lock:
        cache = _prompt_caches.get(id(encoder))
        if cache is None or cache.encoder is not encoder:
            cache = _prompt_caches[id(encoder)] = PromptCache(encoder)
        return cache


# --- loaded models ----------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    info: ModelInfo
    generator: torch.nn.Module
    device: torch.device
    lock: threading.Lock


_models: dict[tuple, LoadedModel] = {}
_models_lock = threading.Lock()


def _load_folder(name: str, folder: Path) -> tuple[torch.nn.Module, ModelInfo]:
    generator, config = load_generator(folder)
    cfg = generator.config
    try:
        template = prompt_template(config)
    except ValueError as exc:
        raise CheckpointError(f"{folder / 'config.json'}: {exc}") from None
    info = ModelInfo(
        name,
        file_hash(folder / "model.safetensors", 10),
        cfg.resolution,
        cfg.z_dim,
        cfg.text_encoder,
        str(folder.resolve()),
        trained_styles(config),
        cfg.channels,
        template,
    )
    return generator, info


def _from_module(name: str, module: Any, origin: str) -> tuple[torch.nn.Module, ModelInfo]:
    cfg = getattr(module, "config", None)
    if (
        not isinstance(module, torch.nn.Module)
        or cfg is None
        or not all(hasattr(cfg, a) for a in ("z_dim", "resolution", "text_encoder"))
    ):
        raise GanvasError(
            f"model {name!r} from {origin}: the loader returned {type(module).__name__}; expected "
            f"a checkpoint folder or an nn.Module with .config.z_dim/.resolution/.text_encoder"
        )
    template = getattr(module, "prompt_template", None)  # a loader's module may say how styles enter its prompt
    try:
        template = prompt_template({"prompt_template": template})
    except ValueError as exc:
        raise GanvasError(f"model {name!r} from {origin}: {exc}") from None
    module.eval().requires_grad_(False)
    return module, ModelInfo(
        name,
        state_hash(module),
        cfg.resolution,
        cfg.z_dim,
        cfg.text_encoder,
        None,
        channels=getattr(cfg, "channels", 3),
        prompt_template=template,
    )


def load_model(name: str, source: Any, device: str = "cpu", origin: str = "a path") -> LoadedModel:
    """Load (or reuse) a model; cached per checkpoint file (path, mtime, size) or per loader."""
    key = cache_key(name, source, origin, device)
    with _models_lock:
        if key in _models:
            return _models[key]
        produced = produce("model", name, source, origin)
        if isinstance(produced, Path):
            generator, info = _load_folder(name, produced)
        else:
            generator, info = _from_module(name, produced, origin)
        loaded = LoadedModel(info, generator.to(device), torch.device(device), threading.Lock())
        _models[key] = loaded
        return loaded


def clear_model_cache() -> None:
    with _models_lock:
        _models.clear()


# --- the pipeline -----------------------------------------------------------------------------------------


class Pipeline:
    """A loaded model bound to a plugin manager. Thread-safe: calls on one model run one at a time."""

    threads: int | None = None  # torch CPU threads for the generator forward; None: default_threads()

    def __init__(
        self,
        model: LoadedModel,
        plugins: GanvasPlugins,
        encoder_factory: Callable[[], Any],
        exact_seeds: bool = True,
        load_warnings: list[str] | None = None,
    ):
        self.model = model
        self.plugins = plugins
        self._encoder_factory = encoder_factory
        self._prompts: PromptCache | None = None
        self._prompts_lock = threading.Lock()
        self.exact_seeds = exact_seeds
        self.load_warnings = load_warnings or []

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        plugins: GanvasPlugins | None = None,
        device: str | None = None,
        exact_seeds: bool = True,
    ) -> "Pipeline":
        """A pipeline for a registered model name or checkpoint folder (None: the default model)."""
        plugins = plugins or get_plugin_manager()
        warnings: list[str] = []
        name, source, origin = resolve_model(name_or_path, plugins, warnings)
        try:
            model = load_model(name, source, device or os.environ.get("GANVAS_DEVICE") or "cpu", origin)
        except CheckpointError as exc:
            raise GanvasError(f"model {name!r}: {exc}") from None
        encoders = plugins.text_encoders(warnings)
        wanted = model.info.text_encoder
        if wanted not in encoders:
            raise GanvasError(
                f"model {name!r} needs text encoder {wanted!r}, which no plugin provides "
                f"(available: {', '.join(sorted(encoders)) or 'none'})"
            )
        return cls(model, plugins, encoders[wanted].value, exact_seeds, warnings)

    # --- properties ---
    @property
    def name(self) -> str:
        return self.model.info.name

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def resolution(self) -> int:
        return self.model.info.resolution

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, {self.resolution}px, hash {self.info.hash})"

    # --- building blocks ---
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N, D) sentence vectors, cached per prompt; the encoder loads on first use."""
        with self._prompts_lock:
            if self._prompts is None:
                self._prompts = prompt_cache_for(self._encoder_factory())
        # The encoder at the host's thread count moved a sentence vector by ~1e-7, enough to change a pixel
        # level (ComfyUI at 2 threads): encode at the pipeline's count, like the generator.
        with render_threads(self.threads):
            return self._prompts(list(prompts))

    def render(
        self,
        text: torch.Tensor,
        z: torch.Tensor,
        callback: Callable[[int, int], None] | None = None,
        progress: bool = False,
    ) -> list:
        """Generator forward for rows of (text, scaled noise) -> RGB PIL images at native resolution."""
        from tqdm.auto import tqdm

        total = z.shape[0]
        step = 1 if self.exact_seeds else BATCH_SIZE
        G, device = self.model.generator, self.model.device
        images = []
        with (
            self.model.lock,
            render_threads(self.threads),
            torch.inference_mode(),
            tqdm(total=total, disable=not progress, unit="img", file=sys.stderr, leave=False) as bar,
        ):
            for start in range(0, total, step):
                out = G(z[start : start + step].to(device), text[start : start + step].to(device))
                images.extend(to_pil(out))
                bar.update(out.shape[0])
                if callback is not None:
                    callback(len(images), total)
        return images

    # --- generation ---
    def __call__(
        self,
        prompt: str | GenerationRequest,
        n: int = 1,
        seed: int | None = None,
        truncation: float = DEFAULT_TRUNCATION,
        *,
        style: str | None = None,
        size: int | None = None,
        extra: dict | None = None,
        host: str = "python",
        callback=None,
        progress: bool = False,
    ) -> GenerationResult:
        if isinstance(prompt, GenerationRequest):
            return self.generate(prompt, callback=callback, progress=progress)
        request = GenerationRequest(prompt, n, seed, truncation, self.name, style, size, host, dict(extra or {}))
        return self.generate(request, callback=callback, progress=progress)

    def _start(self, request: GenerationRequest) -> GenerationRequest:
        request.validate()
        if not self._serves(request.model):
            raise InvalidRequest(
                f"this pipeline serves model {self.name!r}, the request asks for {request.model!r} "
                f"(ganvas.core.pipeline.generate(request) picks the model)",
                "model",
            )
        original = copy.deepcopy(request)
        original.model = request.model or self.name  # the host's spelling (name or path) replays best
        if original.seed is None:
            original.seed = random_seed()
        return original

    def _serves(self, model: str | None) -> bool:
        if model in (None, self.name):
            return True
        if self.info.path is None:
            return False
        try:
            return Path(model).expanduser().resolve() == Path(self.info.path)
        except (OSError, ValueError):
            return False

    def _prepare(self, request: GenerationRequest, warnings: list[str]) -> GenerationRequest:
        """The plugins' ganvas_prepare_request, then the model's prompt template puts the style word in (after
        every plugin, so checks and the metadata see the prompt the model gets)."""
        prepared = self.plugins.prepare_request(copy.deepcopy(request), warnings)
        try:
            prepared.validate()
        except InvalidRequest as exc:
            raise InvalidRequest(
                f"a ganvas_prepare_request plugin produced an invalid request: {exc}", exc.param
            ) from None
        prepared.prompt = self.info.styled_prompt(prepared.prompt, prepared.style)
        return prepared

    def generate(
        self, request: GenerationRequest, *, callback=None, progress: bool = False, frames: Sequence[int] | None = None
    ) -> GenerationResult:
        """Run one request through the plugins and the model. Interpolation requests (made by
        `interpolate`, recognisable by request.extra["interpolate"]) are replayed too."""
        if "interpolate" in request.extra:
            return self._interpolate(request, frames, callback, progress)
        start = time.perf_counter()
        timings: dict[str, float] = {}
        warnings = list(self.load_warnings)
        original = self._start(request)
        if original.seed + original.n - 1 > MAX_SEED:
            raise InvalidRequest(f"seed + n - 1 exceeds {MAX_SEED}", "seed")
        prepared = self._prepare(original, warnings)
        timings["prepare"] = time.perf_counter() - start
        mark = time.perf_counter()
        self.plugins.check_request(prepared, warnings)
        timings["check"] = time.perf_counter() - mark

        mark = time.perf_counter()
        seeds = [prepared.seed + i for i in range(prepared.n)]
        text = self.encode([prepared.prompt]).expand(len(seeds), -1)
        timings["encode"] = time.perf_counter() - mark
        mark = time.perf_counter()
        z = noise(self.info.z_dim, seeds) * prepared.truncation
        images = self.render(text, z, callback, progress)
        timings["generate"] = time.perf_counter() - mark
        result = GenerationResult(images, seeds, prepared, original, timings, self.info, [], warnings)
        return self._finish(result, start)

    def interpolate(
        self,
        prompts: str | Sequence[str],
        steps: int = 8,
        seed: int | None = None,
        truncation: float = DEFAULT_TRUNCATION,
        *,
        seeds: Sequence[int] | None = None,
        style: str | None = None,
        size: int | None = None,
        extra: dict | None = None,
        host: str = "python",
        frames: Sequence[int] | None = None,
        callback=None,
        progress: bool = False,
    ) -> GenerationResult:
        """Frames of a morph between key frames: prompts and/or seeds (a walk in text and noise).

        K key frames = max(len(prompts), len(seeds)); a list of length 1 is held constant. Each pair of
        neighbouring key frames gets `steps` frames (slerp), plus the last key frame: (K-1)*steps + 1.
        Frame 0 equals pipe(prompts[0], seed=seeds[0]).images[0]. `frames` picks a subset by index.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        seed_list = list(seeds) if seeds is not None else [seed if seed is not None else random_seed()]
        if not prompts:
            raise InvalidRequest("interpolate needs at least one prompt", "prompt")
        spec = {"prompts": prompts, "seeds": seed_list, "steps": steps}
        request = GenerationRequest(
            prompts[0],
            1,
            seed_list[0],
            truncation,
            self.name,
            style,
            size,
            host,
            {**(extra or {}), "interpolate": spec},
        )
        return self._interpolate(request, frames, callback, progress)

    def _interpolate(self, request: GenerationRequest, frames, callback, progress) -> GenerationResult:
        start = time.perf_counter()
        timings: dict[str, float] = {}
        warnings = list(self.load_warnings)
        spec = request.extra.get("interpolate")
        if not isinstance(spec, dict):
            raise InvalidRequest("extra.interpolate must be {prompts, seeds, steps}", "extra")
        prompts, seed_list, steps = spec.get("prompts"), spec.get("seeds"), spec.get("steps", 8)
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise InvalidRequest("interpolate: prompts must be a non-empty list of text", "prompt")
        if (
            not isinstance(seed_list, list)
            or not seed_list
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seed_list)
        ):
            raise InvalidRequest(f"interpolate: seeds must be a non-empty list of integers in 0..{MAX_SEED}", "seed")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InvalidRequest(f"interpolate: steps must be a positive integer, got {steps!r}", "steps")
        keys = max(len(prompts), len(seed_list))
        if keys < 2:
            raise InvalidRequest("interpolate needs two or more prompts or seeds", "prompt")
        for label, values in (("prompts", prompts), ("seeds", seed_list)):
            if len(values) not in (1, keys):
                raise InvalidRequest(
                    f"interpolate: {len(values)} {label} for {keys} key frames (give 1 or {keys})",
                    "prompt" if label == "prompts" else "seed",
                )
        total = (keys - 1) * steps + 1
        # A range, not a list: nothing the size of `total` exists before the policy has checked n=total.
        chosen = range(total) if frames is None else list(frames)
        if not chosen or frames is not None and any(not isinstance(k, int) or not 0 <= k < total for k in chosen):
            raise InvalidRequest(f"frames must be indices in 0..{total - 1}", "frames")

        request = request.replace(prompt=prompts[0], seed=seed_list[0], n=total)
        original = self._start(request)
        # Every key prompt goes through prepare and check, so policy and style apply to all of them.
        prepared_keys = []
        for p in prompts:
            prepared_keys.append(
                self._prepare(original.replace(prompt=p, extra=copy.deepcopy(original.extra)), warnings)
            )
        timings["prepare"] = time.perf_counter() - start
        mark = time.perf_counter()
        for prepared in prepared_keys:
            self.plugins.check_request(prepared, warnings)
        timings["check"] = time.perf_counter() - mark

        mark = time.perf_counter()
        key_prompts = [p.prompt for p in prepared_keys] * (keys if len(prompts) == 1 else 1)
        key_seeds = seed_list * (keys if len(seed_list) == 1 else 1)
        key_text = self.encode(key_prompts)
        timings["encode"] = time.perf_counter() - mark
        mark = time.perf_counter()
        key_noise = noise(self.info.z_dim, key_seeds)
        texts, zs, frame_info, frame_seeds = [], [], [], []
        psi = prepared_keys[0].truncation
        for k in chosen:
            j = min(k // steps, keys - 2)
            t = (k - j * steps) / steps
            texts.append(slerp(key_text[j], key_text[j + 1], t))
            zs.append(slerp(key_noise[j], key_noise[j + 1], t) * psi)
            frame_info.append(
                {
                    "index": k,
                    "t": t,
                    "prompts": [key_prompts[j], key_prompts[j + 1]],
                    "seeds": [key_seeds[j], key_seeds[j + 1]],
                }
            )
            frame_seeds.append(key_seeds[j + 1] if t == 1 else key_seeds[j])
        images = self.render(torch.stack(texts), torch.stack(zs), callback, progress)
        timings["generate"] = time.perf_counter() - mark
        result = GenerationResult(
            images, frame_seeds, prepared_keys[0], original, timings, self.info, [], warnings, frames=frame_info
        )
        return self._finish(result, start)

    def _finish(self, result: GenerationResult, start: float) -> GenerationResult:
        """Post-process, bring to a requested size (upsampler above the native side), attach metadata, run sinks."""
        request, warnings = result.request, result.warnings
        mark = time.perf_counter()
        upscaled: dict[int, str] = {}
        upscale_seconds = 0.0
        for i, image in enumerate(result.images):
            image = self.plugins.postprocess(image, request, i, warnings)
            if request.size is not None and image.size != (request.size, request.size):
                # Above the image's side: the upsampler, then Lanczos to the exact side (never stretched
                # pixels); below it: Lanczos down. Recorded in the metadata (Size, upsampler).
                tick = time.perf_counter()
                image, used = self._to_size(image, request.size, warnings)
                upscale_seconds += time.perf_counter() - tick
                if used is not None:
                    upscaled[i] = used
            result.images[i] = image
        result.timings["postprocess"] = time.perf_counter() - mark - upscale_seconds
        if upscaled:
            result.timings["upscale"] = upscale_seconds
        mark = time.perf_counter()
        for i, image in enumerate(result.images):
            fields = self.plugins.image_metadata(request, result, i, warnings)
            if i in upscaled:
                fields.setdefault("upsampler", upscaled[i])
            image.info.update(fields)
            result.metadata.append(fields)
        result.timings["metadata"] = time.perf_counter() - mark
        self.plugins.after_generate(result, warnings)
        result.timings["total"] = time.perf_counter() - start
        return result

    # --- sizes above the native one: the upsampler (core/upsampler.py) ---
    upsampler_name: str | None = None  # registered upsampler or folder; None: $GANVAS_UPSAMPLER, else automatic

    def load_upsampler(self, warnings: list[str] | None = None):
        """The upsampler for this pipeline (a core.upsampler.LoadedUpsampler), or None if none is registered.

        `upsampler_name` (else $GANVAS_UPSAMPLER) names one; otherwise the first registered upsampler trained
        for this model's resolution (third-party plugins first), else the first registered one."""
        import ganvas.core.upscaling as ups

        wanted = self.upsampler_name or os.environ.get("GANVAS_UPSAMPLER") or None
        cached = getattr(self, "_upsampler", None)
        if cached is not None and cached[0] == wanted:
            return cached[1]
        chosen = ups.choose(self.plugins, self.resolution, wanted, warnings)
        loaded = None if chosen is None else ups.load(*chosen[:2], str(self.model.device), chosen[2])
        self._upsampler = (wanted, loaded)
        return loaded

    def _to_size(self, image, size: int, warnings: list[str]):
        """-> (image at size x size, the upsampler's label or None when none was used)."""
        import ganvas.core.upscaling as ups

        if size <= max(image.size):
            return ups.resize_to(image, size), None
        loaded = self.load_upsampler(warnings)
        if loaded is None:
            raise InvalidRequest(
                f"size {size} is above this model's {max(image.size)} px and no upsampler is "
                f"registered (ganvas does not stretch pixels); ask for {max(image.size)} or less",
                "size",
            )
        out, _ = ups.upscale_to(loaded, image, size, self.threads)
        return out, loaded.info.label()

    def upscale(self, images, size: int | None = None):
        """Upscale PIL images (one or a list) with this pipeline's upsampler: each image at its own resolution
        (up to 512 px a side; fully convolutional, so nothing is resized to 64 first) times the upsampler's
        scale, then Lanczos to `size` when given (a side in pixels; at or below the image's side it is a
        plain Lanczos resize). RGBA stays RGBA (straight alpha), anything else comes back RGB. Each image is
        computed alone, so generate(size=256) equals upscale(generate(size=None), 256) pixel for pixel."""
        import ganvas.core.upscaling as ups

        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 2048):
            raise InvalidRequest(f"size must be an integer in 8..2048, got {size!r}", "size")
        loaded = self.load_upsampler() if size is None or any(size > max(im.size) for im in batch) else None
        if loaded is None and (size is None or any(size > max(im.size) for im in batch)):
            raise GanvasError("no upsampler is registered (ship one under models/upsamplers/ or install a plugin)")
        out = [ups.upscale_to(loaded, im, size, self.threads)[0] for im in batch]
        return out[0] if single else out


def generate(request: GenerationRequest, *, plugins: GanvasPlugins | None = None, **options) -> GenerationResult:
    """The one call for hosts: load (cached) the request's model and run the request."""
    return Pipeline.load(request.model, plugins=plugins).generate(request, **options)


__all__ = [
    "DEFAULT_MODEL",
    "Pipeline",
    "generate",
    "configure_threads",
    "default_threads",
    "render_threads",
    "default_model_name",
    "noise",
    "slerp",
    "load_model",
    "clear_model_cache",
    "resolve_model",
    "GenerationRequest",
    "GenerationResult",
]
