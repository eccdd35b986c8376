"""The reproduction record: the `ganvas` PNG text chunk that `ganvas generate --from-png` replays.

Written by the png_metadata plugin, read by the CLI; the format is a core contract, so both sides import it
from here (hosts never import a plugin).
"""

from __future__ import annotations

import json

from ganvas import __version__

FORMAT = "ganvas.image"
FORMAT_VERSION = 1


def reproduction_record(request, result, index: int) -> dict:
    """What --from-png needs: the original request for exactly this image, and what made it."""
    original = result.input_request.to_dict()
    record = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "ganvas_version": __version__,
        "prompt": request.prompt,
        "seed": result.seeds[index],
        "model": {
            "name": result.model.name,
            "hash": result.model.hash,
            "path": result.model.path,
            "resolution": result.model.resolution,
        },
    }
    if result.frames is not None:
        record["frame"] = result.frames[index]["index"]
        record["request"] = original  # interpolation spec lives in request["extra"]["interpolate"]
    else:
        record["request"] = {**original, "n": 1, "seed": result.seeds[index]}
    return record


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
        raise ValueError(
            f"{source}: ganvas metadata version {record.get('version')!r}; this ganvas reads {FORMAT_VERSION}"
        )
    return record
