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

FORMAT = "ganvas.image"
FORMAT_VERSION = 1


def _num(value: float) -> str:
    return f"{value:g}"


def a1111_parameters(prompt: str, seed: int, width: int, height: int, model: str, model_hash: str,
                     truncation: float, style: str | None = None, extra: str | None = None) -> str:
    """<prompt>\\nSteps: 1, Sampler: GAN, Seed: 7, Size: 64x64, Model hash: ..., Model: ..., ..."""
    fields = [("Steps", "1"), ("Sampler", "GAN"), ("Seed", str(seed)), ("Size", f"{width}x{height}"),
              ("Model hash", model_hash), ("Model", model), ("Truncation", _num(truncation))]
    if style:
        fields.append(("Style", style))
    if extra:
        fields.append(("Interpolation", extra))
    fields.append(("Version", f"ganvas {__version__}"))
    # A1111 quotes values that contain its separators
    text = ", ".join(f"{k}: {json.dumps(v) if (',' in v or ':' in v) else v}" for k, v in fields)
    return f"{prompt}\n{text}"


def reproduction_record(request, result, index: int) -> dict:
    """What --from-png needs: the original request for exactly this image, and what made it."""
    original = result.input_request.to_dict()
    record = {"format": FORMAT, "version": FORMAT_VERSION, "ganvas_version": __version__,
              "prompt": request.prompt, "seed": result.seeds[index],
              "model": {"name": result.model.name, "hash": result.model.hash, "path": result.model.path,
                        "resolution": result.model.resolution}}
    if result.frames is not None:
        record["frame"] = result.frames[index]["index"]
        record["request"] = original  # interpolation spec lives in request["extra"]["interpolate"]
    else:
        record["request"] = {**original, "n": 1, "seed": result.seeds[index]}
    return record


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
        "parameters": a1111_parameters(prompt, seed, image.width, image.height, result.model.name,
                                       result.model.hash, request.truncation, request.style, extra),
        # default=str: a plugin option in request.extra that JSON cannot hold must not cost the whole record
        "ganvas": json.dumps(reproduction_record(request, result, index), ensure_ascii=False, sort_keys=True,
                             default=str),
    }


def read_reproduction_record(text: dict[str, str], source: str = "image") -> dict:
    """Parse the `ganvas` chunk of a PNG's text fields; ValueError with a one-line reason otherwise."""
    raw = text.get("ganvas")
    if raw is None:
        raise ValueError(f"{source}: no ganvas metadata (not made by ganvas, or its text chunks were stripped)")
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: ganvas metadata is not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("request"), dict):
        raise ValueError(f"{source}: unrecognised ganvas metadata (expected format {FORMAT!r})")
    if record.get("version") != FORMAT_VERSION:
        raise ValueError(f"{source}: ganvas metadata version {record.get('version')!r}; this ganvas reads {FORMAT_VERSION}")
    return record
