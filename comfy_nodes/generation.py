"""The nodes' work, through the ganvas pipeline only: load, check, encode, generate, interpolate, convert.

No ComfyUI import here (the nodes pass in a per-image callback for progress and interruption), so
this module is tested without ComfyUI. torch and ganvas.core are imported inside the functions: the
pack's import must stay light (ComfyUI imports it at start).

Pixels: the pipeline returns 8-bit images (the same ones `ganvas generate` saves): RGB, or RGBA with
straight alpha for transparent models. An IMAGE is the RGB bytes / 255 as float32 (straight colour, as
the PNG holds it); ComfyUI's SaveImage computes clip(255 * x).astype(uint8), which gives the same bytes
back for every level 0..255, so a saved PNG equals `ganvas generate`'s PNG. A MASK is ComfyUI's
1 - alpha, [B, H, W] (zeros for RGB models), with values picked so that ComfyUI's Join Image with Alpha
followed by Save Image writes the model's alpha bytes exactly (see MASK_LEVELS).
"""
from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .conditioning import PromptConditioning

HOST = "comfyui"
NO_STYLE = "none"   # the style combo's "no style" entry ("" from older workflows means the same)
OnImage = Callable[[int, int], None]  # (images done, images in total)
PACK_DIR = Path(__file__).resolve().parent
PACK_MARKER = ".ganvas-pack.json"     # written by `ganvas comfy install --copy` (plugins/comfy_command.py)


# --- is ganvas there? -------------------------------------------------------------------------------------

def pip_target() -> str:
    """What to pip-install into ComfyUI's Python: the ganvas source tree this pack belongs to, else "ganvas"."""
    candidates = [PACK_DIR.parent]
    try:
        source = json.loads((PACK_DIR / PACK_MARKER).read_text("utf-8")).get("source")
        if isinstance(source, str):
            candidates.insert(0, Path(source).parent)
    except (OSError, ValueError, AttributeError):
        pass
    for repo in candidates:
        try:
            if "ganvas" in (repo / "pyproject.toml").read_text("utf-8") and (repo / "core").is_dir():
                return str(repo)
        except OSError:
            continue
    return "ganvas"


def missing_ganvas_message(exc: BaseException) -> str:
    python = sys.executable
    missing = getattr(exc, "name", None)
    if isinstance(exc, ModuleNotFoundError) and (missing is None or missing == "ganvas" or missing.startswith("ganvas.")):
        return (f"the ganvas Python package is not installed in ComfyUI's Python ({python}): run "
                f"`{python} -m pip install {pip_target()}` and restart ComfyUI (ComfyUI's torch is kept; "
                f"ganvas needs torch>=2.4)")
    return (f"the ganvas Python package in ComfyUI's Python ({python}) does not import: "
            f"{type(exc).__name__}: {exc}. Reinstall it: `{python} -m pip install {pip_target()}`, then restart ComfyUI")


_ganvas_ok = False


def ganvas_problem() -> str | None:
    """None when ganvas imports in this Python, else the message that says how to install it (for the UI)."""
    global _ganvas_ok
    if _ganvas_ok:
        return None
    try:
        importlib.import_module("ganvas.core.requests")
        importlib.import_module("ganvas.core.plugins")
    except ImportError as exc:
        return missing_ganvas_message(exc)
    _ganvas_ok = True
    return None


def require_ganvas():
    """ganvas.core.pipeline, or an error that says how to install ganvas into ComfyUI's Python."""
    try:
        pipeline = importlib.import_module("ganvas.core.pipeline")
    except ImportError as exc:
        raise RuntimeError(missing_ganvas_message(exc)) from exc
    return pipeline


def load_pipeline(source: str, device: str = "cpu"):
    """A ganvas Pipeline for a checkpoint folder path or a registered model name (cached by ganvas)."""
    return require_ganvas().Pipeline.load(source, device=device)


def pipeline_threads(pipe):
    """Run the body (text encoding included) at the pipeline's own torch thread count, under its render lock.

    The pipeline sets its thread count around the generator's forward only; the text encoder runs at the
    host's count (ComfyUI: 2), and its sentence vector moved by ~1e-7 between 1 and 2 threads, enough to
    move a few pixels of emoji64's images by a level against `ganvas generate` (1 thread)."""
    return require_ganvas().render_threads(getattr(pipe, "threads", None))


def require_pipeline(model: Any, field: str = "model"):
    """The model input as a pipeline, or a one-line error (an API prompt can send "model": null)."""
    if hasattr(model, "info") and hasattr(model, "generate") and hasattr(model, "interpolate"):
        return model
    got = "null" if model is None else type(model).__name__
    raise TypeError(f"{field} is {got}, not a ganvas model: connect the model output of a Ganvas Model Loader "
                    f"to {field}")


# --- request checks (the request policy's limits, named after the node's fields) --------------------------

def _policy():
    """The request policy the pipeline will apply, or None when the request_policy plugin is switched off."""
    from ganvas.core.plugins import get_plugin_manager

    if "request_policy" not in get_plugin_manager().builtin_names:
        return None
    from ganvas.plugins.request_policy import current_policy

    return current_policy()  # ValueError when misconfigured


def _style_suffix(style: str) -> str:
    from ganvas.plugins.default_backend import style_suffix

    return style_suffix(style)


def style_value(style: Any) -> str | None:
    """The style word to apply: None for "", "none" or a missing input."""
    if not isinstance(style, str) or not style.strip() or style.strip().lower() == NO_STYLE:
        return None
    return style.strip()


def prompt_problem(text: Any, field: str = "prompt", style: str | None = None) -> str | None:
    """Why the request policy would refuse this prompt text (length, blocked terms), naming `field`; None if
    it passes. The length counts the text as typed (stripped) and, with a style, the suffix the style adds."""
    from ganvas.core.requests import GenerationRequest, RequestRefused

    if not isinstance(text, str):
        return None  # a linked input: its value is not known before the graph runs
    try:
        policy = _policy()
    except ValueError as exc:
        return f"ganvas's request policy is misconfigured, so nothing is generated: {exc}"
    if policy is None:
        return None
    typed = text.strip()
    limit = policy.max_prompt_chars
    suffix = _style_suffix(style) if style_value(style) else ""
    if len(typed) > limit:
        return f"{field} is {len(typed):,} characters; the limit is {limit:,} (GANVAS_MAX_PROMPT_CHARS)"
    if len(typed) + len(suffix) > limit:
        return (f"{field} is {len(typed):,} characters, {len(typed) + len(suffix):,} with the style suffix "
                f"{suffix!r}; the limit is {limit:,} (GANVAS_MAX_PROMPT_CHARS): shorten it to "
                f"{limit - len(suffix):,} or pick style {NO_STYLE}")
    try:
        policy.check(GenerationRequest(typed or "-", 1, style=style_value(style)))
    except RequestRefused as exc:
        return f"{field}: {exc.reason}"
    return None


def batch_problem(n: Any, field: str = "batch_size") -> str | None:
    try:
        policy = _policy()
    except ValueError:
        return None  # the pipeline's own check says why
    if policy is None or isinstance(n, bool) or not isinstance(n, int) or n <= policy.max_n:
        return None
    return f"{field} is {n}; the limit is {policy.max_n} images per run (GANVAS_MAX_N)"


def _invalid(message: str, field: str):
    from ganvas.core.requests import InvalidRequest

    return InvalidRequest(message, field)


def check_style(pipe, style: str | None, field: str = "style") -> None:
    """Refuse a style word the loaded model was not trained with (when its checkpoint lists its styles)."""
    styles = tuple(getattr(pipe.info, "styles", ()) or ())
    if style is None or not styles or style in styles:
        return
    raise _invalid(f"{field} {style!r} is not a style model {pipe.name!r} was trained with; its styles: "
                   f"{', '.join(styles)} (or {NO_STYLE})", field)


# --- encode, generate, interpolate ------------------------------------------------------------------------

def encode(pipe, text: str) -> PromptConditioning:
    """A single-prompt conditioning, with its sentence vector from the model's text encoder."""
    pipe = require_pipeline(pipe)
    if not isinstance(text, str) or not text.strip():
        raise _invalid("Ganvas Encode Prompt: the text is empty", "text")
    problem = prompt_problem(text, "text")
    if problem:
        raise _invalid(problem, "text")
    with pipeline_threads(pipe):
        vector = pipe.encode([text])[0]
    return PromptConditioning((text,), pipe.info.text_encoder, vector=vector)


def mixed_vector(a: PromptConditioning, b: PromptConditioning, weight: float):
    """slerp of the two sentence vectors (the vector a mix carries), None when either is missing."""
    if a.vector is None or b.vector is None:
        return None
    return require_ganvas().slerp(a.vector, b.vector, float(weight))


def _check_encoder(pipe, conditioning: PromptConditioning) -> None:
    if not isinstance(conditioning, PromptConditioning):
        raise TypeError(f"conditioning is {type(conditioning).__name__}, expected a ganvas conditioning "
                        f"(from Ganvas Encode Prompt or Ganvas Mix Prompts)")
    if conditioning.text_encoder != pipe.info.text_encoder:
        raise ValueError(f"the conditioning was encoded with text encoder {conditioning.text_encoder!r}, but model "
                         f"{pipe.name!r} uses {pipe.info.text_encoder!r}; encode the prompt with this model")


def _model_ref(pipe) -> str:
    return pipe.info.path or pipe.name  # the folder path replays best (ganvas generate --from-png)


@dataclass
class Rendered:
    """What Generate and Interpolate hand on: the pipeline's images (RGB or straight RGBA PIL images, PNG
    text fields in .info), the seed of each, and the model's channel count."""

    images: list
    seeds: list[int]
    channels: int = 3
    warnings: list[str] = field(default_factory=list)


def render(pipe, prompt: str, seed: int, batch_size: int = 1, truncation: float = 1.0, style: str | None = None,
           conditioning: PromptConditioning | None = None, on_image: OnImage | None = None) -> Rendered:
    """batch_size images, image i from seed + i. A conditioning replaces the prompt.

    Checks come first, named after the node's fields, so nothing is drawn for a request the pipeline
    would refuse. One request per call: a later `size` option (an upsampler) is one more field of it."""
    from ganvas.core.requests import GenerationRequest

    pipe = require_pipeline(pipe)
    style = style_value(style)
    check_style(pipe, style)
    problem = batch_problem(batch_size)
    if problem:
        raise _invalid(problem, "batch_size")
    if conditioning is not None:
        _check_encoder(pipe, conditioning)
        if conditioning.is_mix:
            return _render_mix(pipe, conditioning, seed, batch_size, truncation, style, on_image)
        prompt = conditioning.prompts[0]
    label = "prompt" if conditioning is None else "the conditioning's prompt"
    problem = prompt_problem(prompt, label, style)
    if problem:
        raise _invalid(problem, "prompt" if conditioning is None else "conditioning")
    request = GenerationRequest(prompt, batch_size, seed, truncation, _model_ref(pipe), style, None, HOST)
    with pipeline_threads(pipe):
        result = pipe.generate(request, callback=on_image)
    return Rendered(result.images, list(result.seeds), pipe.info.channels, list(result.warnings))


def _render_mix(pipe, conditioning: PromptConditioning, seed: int, batch_size: int, truncation: float,
                style: str | None, on_image: OnImage | None) -> Rendered:
    """Each image is the interpolation frame between the two prompts at the mix weight, for seed + i."""
    for label, text in zip(("conditioning_a", "conditioning_b"), conditioning.prompts):
        problem = prompt_problem(text, f"the prompt of {label}", style)
        if problem:
            raise _invalid(problem, "conditioning")
    frame, steps = conditioning.frame
    out = Rendered([], [], pipe.info.channels)
    for i in range(batch_size):
        def step(done, _total, offset=i):
            if on_image is not None:
                on_image(offset + done, batch_size)
        with pipeline_threads(pipe):
            result = pipe.interpolate(list(conditioning.prompts), steps, truncation=truncation, seeds=[seed + i],
                                      style=style, host=HOST, frames=[frame], callback=step)
        out.images.extend(result.images)
        out.seeds.append(seed + i)
        out.warnings.extend(result.warnings)
    return out


def generate(pipe, prompt: str, seed: int, batch_size: int = 1, truncation: float = 1.0, style: str | None = None,
             conditioning: PromptConditioning | None = None, on_image: OnImage | None = None
             ) -> tuple[list, list[int]]:
    """(PIL images, seeds) of render()."""
    rendered = render(pipe, prompt, seed, batch_size, truncation, style, conditioning, on_image)
    return rendered.images, rendered.seeds


def render_interpolation(pipe, prompt_from: str, prompt_to: str, seed_from: int, seed_to: int, frames: int,
                         truncation: float = 1.0, style: str | None = None, on_image: OnImage | None = None
                         ) -> Rendered:
    """`frames` images morphing from (prompt_from, seed_from) to (prompt_to, seed_to); an empty
    prompt_to keeps prompt_from (a walk in noise only). Same frames as `ganvas interpolate`."""
    pipe = require_pipeline(pipe)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise _invalid(f"frames must be an integer >= 2, got {frames!r}", "frames")
    style = style_value(style)
    check_style(pipe, style)
    problem = batch_problem(frames, "frames")
    if problem:
        raise _invalid(problem, "frames")
    keep = not (isinstance(prompt_to, str) and prompt_to.strip())
    for name, text in (("prompt_from", prompt_from), ("prompt_to", None if keep else prompt_to)):
        problem = prompt_problem(text, name, style)
        if problem:
            raise _invalid(problem, name)
    prompts = [prompt_from] + ([] if keep else [prompt_to])
    seeds = [seed_from, seed_to] if seed_to != seed_from else [seed_from]
    with pipeline_threads(pipe):
        result = pipe.interpolate(prompts, frames - 1, truncation=truncation, seeds=seeds, style=style, host=HOST,
                                  callback=on_image)
    return Rendered(result.images, list(result.seeds), pipe.info.channels, list(result.warnings))


def interpolate(pipe, prompt_from: str, prompt_to: str, seed_from: int, seed_to: int, frames: int,
                truncation: float = 1.0, style: str | None = None, on_image: OnImage | None = None) -> list:
    """The PIL frames of render_interpolation()."""
    return render_interpolation(pipe, prompt_from, prompt_to, seed_from, seed_to, frames, truncation, style,
                                on_image).images


# --- ComfyUI tensors ----------------------------------------------------------------------------------------

def _arrays(images: Sequence[Any]) -> list:
    import numpy as np

    if not images:
        raise ValueError("no images to convert")
    arrays = [np.asarray(im if im.mode in ("RGB", "RGBA") else im.convert("RGB"), dtype=np.uint8) for im in images]
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images of different sizes cannot form one IMAGE batch: {sorted(shapes)}")
    return arrays


def to_image_batch(images: Sequence[Any]):
    """PIL images -> ComfyUI IMAGE: float32 torch tensor [B, H, W, 3] in 0..1 (RGB bytes / 255). A transparent
    image gives its straight colour channels (alpha goes to the MASK)."""
    import numpy as np
    import torch

    rgb = np.stack([a[..., :3] for a in _arrays(images)])
    return torch.from_numpy(rgb).to(torch.float32) / 255.0


_mask_levels = None


def mask_levels():
    """MASK value for each alpha byte 0..255: 1 - a/255 in float32, lowered by an ulp where needed so that
    ComfyUI's Join Image with Alpha (1 - mask) followed by Save Image (clip(255 x) truncated to uint8)
    gives exactly a again (plain 1 - a/255 loses a level on 95 of the 256 values)."""
    global _mask_levels
    if _mask_levels is None:
        import numpy as np
        import torch

        levels = (1.0 - torch.arange(256, dtype=torch.float32) / 255).numpy().copy()
        for a in range(256):
            for _ in range(8):
                alpha = (torch.ones(1) - torch.from_numpy(levels[a:a + 1])).numpy()
                if int(np.clip(255.0 * alpha, 0, 255).astype(np.uint8)[0]) >= a:
                    break
                levels[a] = np.nextafter(levels[a], np.float32(-1))
        _mask_levels = torch.from_numpy(levels)
    return _mask_levels


def to_mask_batch(images: Sequence[Any]):
    """PIL images -> ComfyUI MASK: float32 [B, H, W], 1 - alpha (ComfyUI's convention: 1 = masked out);
    all zeros for RGB images (fully opaque)."""
    import numpy as np
    import torch

    arrays = _arrays(images)
    height, width = arrays[0].shape[:2]
    masks = torch.zeros((len(arrays), height, width), dtype=torch.float32)
    levels = mask_levels()
    for i, a in enumerate(arrays):
        if a.ndim == 3 and a.shape[2] == 4:
            masks[i] = levels[torch.from_numpy(np.ascontiguousarray(a[..., 3])).long()]
    return masks


def seeds_text(seeds: Sequence[int]) -> str:
    """'7,8,9': the format of `ganvas interpolate --seeds`."""
    return ",".join(str(s) for s in seeds)
