"""The nodes' work, through the ganvas pipeline only: load, encode, generate, interpolate, convert.

No ComfyUI import here (the nodes pass in a per-image callback for progress and interruption), so
this module is tested without ComfyUI. torch and ganvas.core are imported inside the functions: the
pack's import must stay light (ComfyUI imports it at start).

Pixels: the pipeline returns 8-bit RGB images (the same ones `ganvas generate` saves); an IMAGE is
those bytes / 255 as float32. ComfyUI's SaveImage computes clip(255 * x).astype(uint8), which gives
the same bytes back for every level 0..255, so a saved PNG equals `ganvas generate`'s PNG.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Sequence

from .conditioning import PromptConditioning

HOST = "comfyui"
OnImage = Callable[[int, int], None]  # (images done, images in total)


def require_ganvas():
    """ganvas.core.pipeline, or an error that says how to install ganvas into ComfyUI's Python."""
    try:
        pipeline = importlib.import_module("ganvas.core.pipeline")
    except ImportError as exc:
        raise RuntimeError(
            f"the ganvas nodes need the ganvas package in ComfyUI's Python ({sys.executable}): {exc}. "
            f"Install it there, e.g. `{sys.executable} -m pip install /path/to/ganvas` "
            f"(ComfyUI's torch is kept; ganvas needs torch>=2.4)") from exc
    return pipeline


def load_pipeline(source: str, device: str = "cpu"):
    """A ganvas Pipeline for a checkpoint folder path or a registered model name (cached by ganvas)."""
    return require_ganvas().Pipeline.load(source, device=device)


def encode(pipe, text: str) -> PromptConditioning:
    """A single-prompt conditioning, with its sentence vector from the model's text encoder."""
    from ganvas.core.requests import InvalidRequest

    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("Ganvas Encode Prompt: the text is empty", "prompt")
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


def generate(pipe, prompt: str, seed: int, batch_size: int = 1, truncation: float = 1.0, style: str | None = None,
             conditioning: PromptConditioning | None = None, on_image: OnImage | None = None
             ) -> tuple[list, list[int]]:
    """batch_size images, image i from seed + i: (PIL images, seeds). A conditioning replaces the prompt."""
    from ganvas.core.requests import GenerationRequest

    style = style.strip() if isinstance(style, str) and style.strip() else None
    if conditioning is not None:
        _check_encoder(pipe, conditioning)
        if conditioning.is_mix:
            return _generate_mix(pipe, conditioning, seed, batch_size, truncation, style, on_image)
        prompt = conditioning.prompts[0]
    request = GenerationRequest(prompt, batch_size, seed, truncation, _model_ref(pipe), style, None, HOST)
    result = pipe.generate(request, callback=on_image)
    return result.images, list(result.seeds)


def _generate_mix(pipe, conditioning: PromptConditioning, seed: int, batch_size: int, truncation: float,
                  style: str | None, on_image: OnImage | None) -> tuple[list, list[int]]:
    """Each image is the interpolation frame between the two prompts at the mix weight, for seed + i."""
    frame, steps = conditioning.frame
    images, seeds = [], []
    for i in range(batch_size):
        def step(done, _total, offset=i):
            if on_image is not None:
                on_image(offset + done, batch_size)
        result = pipe.interpolate(list(conditioning.prompts), steps, truncation=truncation, seeds=[seed + i],
                                  style=style, host=HOST, frames=[frame], callback=step)
        images.extend(result.images)
        seeds.append(seed + i)
    return images, seeds


def interpolate(pipe, prompt_from: str, prompt_to: str, seed_from: int, seed_to: int, frames: int,
                truncation: float = 1.0, style: str | None = None, on_image: OnImage | None = None) -> list:
    """`frames` images morphing from (prompt_from, seed_from) to (prompt_to, seed_to); an empty
    prompt_to keeps prompt_from (a walk in noise only). Same frames as `ganvas interpolate`."""
    from ganvas.core.requests import InvalidRequest

    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise InvalidRequest(f"frames must be an integer >= 2, got {frames!r}", "frames")
    prompts = [prompt_from] + ([prompt_to] if isinstance(prompt_to, str) and prompt_to.strip() else [])
    seeds = [seed_from, seed_to] if seed_to != seed_from else [seed_from]
    style = style.strip() if isinstance(style, str) and style.strip() else None
    result = pipe.interpolate(prompts, frames - 1, truncation=truncation, seeds=seeds, style=style, host=HOST,
                              callback=on_image)
    return result.images


def to_image_batch(images: Sequence[Any]):
    """PIL RGB images -> ComfyUI IMAGE: float32 torch tensor [B, H, W, C] in 0..1 (bytes / 255)."""
    import numpy as np
    import torch

    if not images:
        raise ValueError("no images to convert")
    arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images of different sizes cannot form one IMAGE batch: {sorted(shapes)}")
    return torch.from_numpy(np.stack(arrays)).to(torch.float32) / 255.0


def seeds_text(seeds: Sequence[int]) -> str:
    """'7,8,9': the format of `ganvas interpolate --seeds`."""
    return ",".join(str(s) for s in seeds)
