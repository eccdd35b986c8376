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
NO_STYLE = "none"  # the style combo's "no style" entry ("" from older workflows means the same)
OnImage = Callable[[int, int], None]  # (images done, images in total)
PACK_DIR = Path(__file__).resolve().parent
PACK_MARKER = ".ganvas-pack.json"  # written by `ganvas comfy install --copy` (comfy_nodes/installer.py)


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
    if isinstance(exc, ModuleNotFoundError) and (
        missing is None or missing == "ganvas" or missing.startswith("ganvas.")
    ):
        return (
            f"the ganvas Python package is not installed in ComfyUI's Python ({python}): run "
            f"`{python} -m pip install {pip_target()}` and restart ComfyUI (ComfyUI's torch is kept; "
            f"ganvas needs torch>=2.4)"
        )
    return (
        f"the ganvas Python package in ComfyUI's Python ({python}) does not import: "
        f"{type(exc).__name__}: {exc}. Reinstall it: `{python} -m pip install {pip_target()}`, then restart ComfyUI"
    )


_ganvas_ok = False


def ganvas_problem() -> str | None:
    """None when ganvas imports in this Python, else the message that says how to install it (for the UI)."""
    global _ganvas_ok
    if _ganvas_ok:
        return None
    try:
        importlib.import_module("ganvas.core.requests")
        importlib.import_module("ganvas.core.plugin_manager")
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
    raise TypeError(
        f"{field} is {got}, not a ganvas model: connect the model output of a Ganvas Model Loader to {field}"
    )


# --- request checks (the request policy's limits, named after the node's fields) --------------------------


def _policy():
    """The request policy the pipeline will apply, or None when the request_policy plugin is switched off."""
    from ganvas.core.plugin_manager import get_plugin_manager

    if "request_policy" not in get_plugin_manager().builtin_names:
        return None
    from ganvas.core.policy import current_policy

    return current_policy()  # ValueError when misconfigured


def style_value(style: Any) -> str | None:
    """The style word to apply: None for "", "none" or a missing input."""
    if not isinstance(style, str) or not style.strip() or style.strip().lower() == NO_STYLE:
        return None
    return style.strip()


def prompt_problem(
    text: Any, field: str = "prompt", style: str | None = None, template: str | None = None
) -> str | None:
    """Why the request policy would refuse this prompt text (length, blocked terms), naming `field`; None if
    it passes. The length counts the text as typed (stripped) and, with a style, what the model's prompt
    template (`template`, the model's `info.prompt_template`) adds."""
    from ganvas.core.errors import RequestRefused
    from ganvas.core.requests import GenerationRequest, fill_prompt_template

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
    styled = fill_prompt_template(template, typed, style_value(style)) if style_value(style) and template else typed
    added = len(styled) - len(typed)
    if len(typed) > limit:
        return f"{field} is {len(typed):,} characters; the limit is {limit:,} (GANVAS_MAX_PROMPT_CHARS)"
    if len(styled) > limit:
        words = (
            f"the style suffix {styled[len(typed) :]!r}"
            if styled.startswith(typed)
            else f"style {style_value(style)!r} (the model's prompt template {template!r})"
        )
        return (
            f"{field} is {len(typed):,} characters, {len(styled):,} with {words}; the limit is {limit:,} "
            f"(GANVAS_MAX_PROMPT_CHARS): shorten it to {limit - added:,} or pick style {NO_STYLE}"
        )
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
    from ganvas.core.errors import InvalidRequest

    return InvalidRequest(message, field)


def check_style(pipe, style: str | None, field: str = "style") -> None:
    """Refuse a style for a model without a prompt template (it takes no style word), and a style word the
    loaded model was not trained with (when its checkpoint lists its styles)."""
    if style is not None and getattr(pipe.info, "prompt_template", None) is None:
        raise _invalid(
            f"{field} {style!r}: model {pipe.name!r} takes no style word (its config.json has no "
            f"\"prompt_template\"); pick {NO_STYLE}",
            field,
        )
    styles = tuple(getattr(pipe.info, "styles", ()) or ())
    if style is None or not styles or style in styles:
        return
    raise _invalid(
        f"{field} {style!r} is not a style model {pipe.name!r} was trained with; its styles: "
        f"{', '.join(styles)} (or {NO_STYLE})",
        field,
    )


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
        raise TypeError(
            f"conditioning is {type(conditioning).__name__}, expected a ganvas conditioning "
            f"(from Ganvas Encode Prompt or Ganvas Mix Prompts)"
        )
    if conditioning.text_encoder != pipe.info.text_encoder:
        raise ValueError(
            f"the conditioning was encoded with text encoder {conditioning.text_encoder!r}, but model "
            f"{pipe.name!r} uses {pipe.info.text_encoder!r}; encode the prompt with this model"
        )


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


def render(
    pipe,
    prompt: str,
    seed: int,
    batch_size: int = 1,
    truncation: float = 1.0,
    style: str | None = None,
    conditioning: PromptConditioning | None = None,
    on_image: OnImage | None = None,
    size: Any = None,
) -> Rendered:
    """batch_size images, image i from seed + i. A conditioning replaces the prompt.

    Checks come first, named after the node's fields, so nothing is drawn for a request the pipeline
    would refuse. One request per call: `size` (the size combo: "native", "128", ...) is the request's
    size, so above the native side the pipeline's upsampler makes the image, as in `ganvas generate --size`."""
    from ganvas.core.requests import GenerationRequest

    pipe = require_pipeline(pipe)
    side = size_value(size)
    style = style_value(style)
    check_style(pipe, style)
    problem = batch_problem(batch_size)
    if problem:
        raise _invalid(problem, "batch_size")
    if conditioning is not None:
        _check_encoder(pipe, conditioning)
        if conditioning.is_mix:
            return _render_mix(pipe, conditioning, seed, batch_size, truncation, style, on_image, side)
        prompt = conditioning.prompts[0]
    label = "prompt" if conditioning is None else "the conditioning's prompt"
    problem = prompt_problem(prompt, label, style, pipe.info.prompt_template)
    if problem:
        raise _invalid(problem, "prompt" if conditioning is None else "conditioning")
    request = GenerationRequest(prompt, batch_size, seed, truncation, _model_ref(pipe), style, side, HOST)
    with pipeline_threads(pipe):
        result = pipe.generate(request, callback=on_image)
    return Rendered(result.images, list(result.seeds), pipe.info.channels, list(result.warnings))


def _render_mix(
    pipe,
    conditioning: PromptConditioning,
    seed: int,
    batch_size: int,
    truncation: float,
    style: str | None,
    on_image: OnImage | None,
    size: int | None = None,
) -> Rendered:
    """Each image is the interpolation frame between the two prompts at the mix weight, for seed + i."""
    for label, text in zip(("conditioning_a", "conditioning_b"), conditioning.prompts):
        problem = prompt_problem(text, f"the prompt of {label}", style, pipe.info.prompt_template)
        if problem:
            raise _invalid(problem, "conditioning")
    frame, steps = conditioning.frame
    out = Rendered([], [], pipe.info.channels)
    for i in range(batch_size):

        def step(done, _total, offset=i):
            if on_image is not None:
                on_image(offset + done, batch_size)

        with pipeline_threads(pipe):
            result = pipe.interpolate(
                list(conditioning.prompts),
                steps,
                truncation=truncation,
                seeds=[seed + i],
                style=style,
                size=size,
                host=HOST,
                frames=[frame],
                callback=step,
            )
        out.images.extend(result.images)
        out.seeds.append(seed + i)
        out.warnings.extend(result.warnings)
    return out


def generate(
    pipe,
    prompt: str,
    seed: int,
    batch_size: int = 1,
    truncation: float = 1.0,
    style: str | None = None,
    conditioning: PromptConditioning | None = None,
    on_image: OnImage | None = None,
    size: Any = None,
) -> tuple[list, list[int]]:
    """(PIL images, seeds) of render()."""
    rendered = render(pipe, prompt, seed, batch_size, truncation, style, conditioning, on_image, size)
    return rendered.images, rendered.seeds


# --- sizes: the pipeline's upsampler -----------------------------------------------------------------------

NATIVE = "native"
GENERATE_SIZES = (NATIVE, "128", "256", "512")  # Ganvas Generate's size combo
UPSCALE_SIZES = ("x scale", "128", "256", "512", "1024")  # Ganvas Upscale's: one upsampler pass, or a side


def size_value(size: Any, field: str = "size") -> int | None:
    """The size combo's value as the request's size: None for native (also "native (64)", "", None, 0), else
    the side in pixels ("256" or 256). Anything else is refused naming the field."""
    if (
        size is None
        or size == 0
        or isinstance(size, str)
        and (not size.strip() or size.strip().lower().startswith(NATIVE))
    ):
        return None
    if isinstance(size, str) and size.strip().isascii() and size.strip().isdigit():
        size = int(size.strip())
    from ganvas.core.requests import MAX_SIZE, MIN_SIZE

    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise _invalid(
            f"{field} must be {NATIVE} or a side in pixels ({MIN_SIZE}..{MAX_SIZE}, e.g. 256), got {size!r}", field
        )
    return size


def upscale_size(size: Any, field: str = "size") -> int | None:
    """Ganvas Upscale's size: None for one upsampler pass ("x scale", "x4", 0), else a side in pixels."""
    if isinstance(size, str) and size.strip().lower().startswith("x"):
        return None
    if isinstance(size, str) and size.strip().lower().startswith(NATIVE):
        raise _invalid(
            f"{field} {size!r}: Ganvas Upscale takes 'x scale' (one upsampler pass) or a side in pixels", field
        )
    return size_value(size, field)


def from_image_batch(images, mask=None) -> list:
    """ComfyUI IMAGE [B, H, W, C] (+ optional MASK [B, H, W] or [H, W], 1 - alpha) -> PIL images: RGB, or
    RGBA with straight alpha when a mask with any transparency is given. Bytes as ComfyUI's Save Image and Join Image with Alpha
    make them (clip(255 x) truncated), so an IMAGE + MASK from Ganvas Generate gives the model's bytes back."""
    import numpy as np
    import torch
    from PIL import Image

    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.shape[0] < 1:
        raise _invalid(
            f"images must be an IMAGE batch [B, H, W, 3], got "
            f"{tuple(getattr(images, 'shape', ())) or type(images).__name__}",
            "images",
        )
    batch, height, width = images.shape[:3]
    rgb = images[..., :3] if images.shape[-1] != 1 else images.expand(-1, -1, -1, 3)
    rgb = np.clip(255.0 * rgb.detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
    alpha = None
    if torch.is_tensor(mask) and not mask.any():
        # All zeros is fully opaque: an RGB model's mask, or Load Image's 64x64 placeholder for a file without
        # alpha. Such images are upscaled as RGB, as an RGB model's `size` does.
        mask = None
    if mask is not None:
        if not torch.is_tensor(mask) or mask.ndim not in (2, 3):
            raise _invalid(
                f"mask must be a MASK [B, H, W], got {tuple(getattr(mask, 'shape', ())) or type(mask).__name__}", "mask"
            )
        mask = mask.detach().cpu().float()
        mask = mask[None] if mask.ndim == 2 else mask
        if tuple(mask.shape[1:]) != (height, width) or mask.shape[0] not in (1, batch):
            raise _invalid(
                f"mask is {tuple(mask.shape)}, the images are {batch} x {height} x {width}: give one "
                f"mask per image (or one for all) of the images' size",
                "mask",
            )
        alpha = np.clip(255.0 * (torch.ones(1) - mask).numpy(), 0, 255).astype(np.uint8)
    out = []
    for i in range(batch):
        if alpha is None:
            out.append(Image.fromarray(rgb[i], "RGB"))
        else:
            a = alpha[i if alpha.shape[0] == batch else 0]
            out.append(Image.fromarray(np.dstack([rgb[i], a]), "RGBA"))
    return out


def upscale(pipe, images, mask=None, size: Any = None, on_image: OnImage | None = None) -> list:
    """Ganvas Upscale's work: each image through `pipe.upscale` (the pipeline's upsampler; RGBA when a mask
    gives alpha), one pass (x the upsampler's scale) or to `size` x `size`. -> PIL images (RGB or RGBA).
    A non-square image with a size is refused: the upsampler never stretches, and a square side would."""
    pipe = require_pipeline(pipe)
    side = upscale_size(size)
    pictures = from_image_batch(images, mask)
    width, height = pictures[0].size
    if side is not None and width != height:
        raise _invalid(
            f"size {side} makes a square image, but the images are {width} x {height}: pick 'x scale' "
            f"(one upsampler pass keeps the aspect ratio)",
            "size",
        )
    out = []
    for image in pictures:
        out.append(pipe.upscale(image, side))
        if on_image is not None:
            on_image(len(out), len(pictures))
    return out


def render_interpolation(
    pipe,
    prompt_from: str,
    prompt_to: str,
    seed_from: int,
    seed_to: int,
    frames: int,
    truncation: float = 1.0,
    style: str | None = None,
    on_image: OnImage | None = None,
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
        problem = prompt_problem(text, name, style, pipe.info.prompt_template)
        if problem:
            raise _invalid(problem, name)
    prompts = [prompt_from] + ([] if keep else [prompt_to])
    seeds = [seed_from, seed_to] if seed_to != seed_from else [seed_from]
    with pipeline_threads(pipe):
        result = pipe.interpolate(
            prompts, frames - 1, truncation=truncation, seeds=seeds, style=style, host=HOST, callback=on_image
        )
    return Rendered(result.images, list(result.seeds), pipe.info.channels, list(result.warnings))


def interpolate(
    pipe,
    prompt_from: str,
    prompt_to: str,
    seed_from: int,
    seed_to: int,
    frames: int,
    truncation: float = 1.0,
    style: str | None = None,
    on_image: OnImage | None = None,
) -> list:
    """The PIL frames of render_interpolation()."""
    return render_interpolation(
        pipe, prompt_from, prompt_to, seed_from, seed_to, frames, truncation, style, on_image
    ).images


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
                alpha = (torch.ones(1) - torch.from_numpy(levels[a : a + 1])).numpy()
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
