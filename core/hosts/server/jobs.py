"""What a worker thread runs: the pipeline call, then PNG encoding (b64_json or the url store)."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

from ganvas.core.hosts.server.hub import ModelHub
from ganvas.core.hosts.server.store import ImageStore
from ganvas.core.io.png import save_png
from ganvas.core.requests import GenerationRequest, GenerationResult


def encode_png(image) -> bytes:
    buffer = io.BytesIO()
    save_png(image, buffer)  # keeps the PNG text metadata (prompt, seed, model) that the pipeline attached
    return buffer.getvalue()


def result_items(
    result: GenerationResult, response_format: str, store: ImageStore, base_url: str, given_prompt: str
) -> list[dict[str, Any]]:
    items = []
    # revised_prompt: what plugins made of the prompt (style suffix, rewrites); frames mix two prompts.
    revised = result.request.prompt if result.frames is None and result.request.prompt != given_prompt else None
    for i, image in enumerate(result.images):
        data = encode_png(image)
        item: dict[str, Any] = {}
        if response_format == "b64_json":
            item["b64_json"] = base64.b64encode(data).decode("ascii")
        else:
            item["url"] = f"{base_url}/v1/images/files/{store.put(data)}.png"
        if revised is not None:
            item["revised_prompt"] = revised
        item["seed"] = result.seeds[i]
        if result.frames is not None:
            item["index"] = result.frames[i]["index"]
            item["t"] = result.frames[i]["t"]
        items.append(item)
    return items


def run_generation(
    hub: ModelHub, store: ImageStore, request: GenerationRequest, response_format: str, base_url: str
) -> dict[str, Any]:
    result = hub.pipeline(request.model).generate(request)
    return {"created": int(time.time()), "data": result_items(result, response_format, store, base_url, request.prompt)}


def run_interpolation(
    hub: ModelHub,
    store: ImageStore,
    prompts: list[str],
    seeds: list[int] | None,
    seed: int | None,
    steps: int,
    request: GenerationRequest,
    response_format: str,
    base_url: str,
) -> dict[str, Any]:
    pipe = hub.pipeline(request.model)
    result = pipe.interpolate(
        prompts,
        steps=steps,
        seed=seed,
        truncation=request.truncation,
        seeds=seeds,
        style=request.style,
        size=request.size,
        host="http",
    )
    return {"created": int(time.time()), "data": result_items(result, response_format, store, base_url, prompts[0])}
