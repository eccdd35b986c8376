"""PNG text fields that explain and reproduce an image.

Fields (all PNG text chunks, also in image.info):
  Description     the prompt as generated (PNG's standard keyword for a description)
  Software        "ganvas <version>"
  seed, model, model_hash, truncation, ganvas_version
  parameters      A1111 format, so existing image browsers (A1111, InvokeAI, SD Prompt Reader, Civitai)
                  show prompt, seed and model
  ganvas          JSON: the host's original request with this image's seed; `ganvas generate
                  --from-png IMAGE` replays it

The prompt is deliberately not stored under the keyword "prompt": ComfyUI reads a "prompt" chunk as
its own JSON graph and would fail to load the image, where it falls back to "parameters" otherwise.
"""

from __future__ import annotations

import json

from ganvas import __version__
from ganvas.core.hookspecs import hookimpl
from ganvas.core.io.record import reproduction_record


def _num(value: float) -> str:
    return f"{value:g}"


def a1111_parameters(
    prompt: str,
    seed: int,
    width: int,
    height: int,
    model: str,
    model_hash: str,
    truncation: float,
    style: str | None = None,
    extra: str | None = None,
) -> str:
    """<prompt>\\nSteps: 1, Sampler: GAN, Seed: 7, Size: 64x64, Model hash: ..., Model: ..., ..."""
    fields = [
        ("Steps", "1"),
        ("Sampler", "GAN"),
        ("Seed", str(seed)),
        ("Size", f"{width}x{height}"),
        ("Model hash", model_hash),
        ("Model", model),
        ("Truncation", _num(truncation)),
    ]
    if style:
        fields.append(("Style", style))
    if extra:
        fields.append(("Interpolation", extra))
    fields.append(("Version", f"ganvas {__version__}"))
    # A1111 quotes values that contain its separators
    text = ", ".join(f"{k}: {json.dumps(v) if (',' in v or ':' in v) else v}" for k, v in fields)
    return f"{prompt}\n{text}"


@hookimpl(trylast=True)
def ganvas_image_metadata(request, result, index):
    image = result.images[index]
    seed = result.seeds[index]
    prompt = request.prompt
    extra = None
    if result.frames is not None:
        frame = result.frames[index]
        prompt = frame["prompts"][0]
        if frame["t"] > 0:
            extra = f"to {frame['prompts'][1]!r} seed {frame['seeds'][1]} at t={frame['t']:.3f}"
    return {
        "Description": prompt,
        "Software": f"ganvas {__version__}",
        "seed": str(seed),
        "model": result.model.name,
        "model_hash": result.model.hash,
        "truncation": _num(request.truncation),
        "ganvas_version": __version__,
        "parameters": a1111_parameters(
            prompt,
            seed,
            image.width,
            image.height,
            result.model.name,
            result.model.hash,
            request.truncation,
            request.style,
            extra,
        ),
        # default=str: a plugin option in request.extra that JSON cannot hold must not cost the whole record
        "ganvas": json.dumps(
            reproduction_record(request, result, index), ensure_ascii=False, sort_keys=True, default=str
        ),
    }
