"""GANVAS_METADATA and the PNGs Ganvas Save writes.

ComfyUI's Save Image writes only ComfyUI's own `prompt` / `workflow` text chunks, so `ganvas generate
--from-png` cannot replay its PNGs. Generate and Interpolate therefore also output GANVAS_METADATA: for
each image, the PNG text fields the pipeline attached to it (what `ganvas generate` writes: Description,
Software, seed, model, model_hash, truncation, ganvas_version, A1111 `parameters`, the `ganvas` replay
record, and whatever metadata plugins add) plus a digest of its RGB bytes and, for a transparent model,
its alpha bytes. Ganvas Save writes each image with those fields and ComfyUI's chunks.

An image is matched to its record by the digest of the bytes it arrives with, so a batch that was split,
reordered or subset on the way still gets the right record, and an image that was changed on the way
(upscaled, edited) is saved without the ganvas fields: they would replay to different pixels.

No ComfyUI import here: the node passes in the graph, the workflow and the output folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


@dataclass(frozen=True)
class ImageRecord:
    fields: dict[str, str]  # PNG text fields, as `ganvas generate` writes them
    rgb_sha256: str  # digest of the straight RGB bytes (H, W, 3), as the IMAGE holds them
    alpha: bytes | None = None  # H*W alpha bytes of a transparent model's image, None for RGB
    size: tuple[int, int] = (0, 0)  # (width, height)


@dataclass(frozen=True)
class GanvasMetadata:
    """What GANVAS_METADATA carries: one record per image made by Ganvas Generate or Interpolate."""

    records: tuple[ImageRecord, ...]

    def find(self, rgb_sha256: str) -> ImageRecord | None:
        for record in self.records:
            if record.rgb_sha256 == rgb_sha256:
                return record
        return None

    def __len__(self) -> int:
        return len(self.records)


def rgb_digest(rgb) -> str:
    """sha256 of (H, W, 3) uint8 bytes."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()).hexdigest()


def metadata_of(images: Sequence[Any]) -> GanvasMetadata:
    """GANVAS_METADATA for the pipeline's PIL images (text fields in their .info)."""
    import numpy as np

    from ganvas.core.io.png import text_fields

    records = []
    for image in images:
        pixels = np.asarray(image if image.mode in ("RGB", "RGBA") else image.convert("RGB"), dtype=np.uint8)
        alpha = pixels[..., 3].tobytes() if pixels.shape[2] == 4 else None
        records.append(ImageRecord(dict(text_fields(image)), rgb_digest(pixels[..., :3]), alpha, image.size))
    return GanvasMetadata(tuple(records))


def image_bytes(image) -> "Any":
    """One IMAGE of a batch ([H, W, C] float 0..1, torch or numpy) -> uint8 array, as ComfyUI's Save Image
    converts it (clip(255 x), truncated), so that Ganvas Save and Save Image write the same pixels."""
    import numpy as np

    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    return np.clip(255.0 * array, 0, 255).astype(np.uint8)


@dataclass
class SavedFile:
    path: Path
    with_ganvas: bool  # whether the ganvas fields were written (the image is the pipeline's own)
    mode: str  # "RGB" or "RGBA"


def comfy_fields(prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, str]:
    """ComfyUI's own text chunks, as its Save Image writes them: `prompt` (the API graph) and each
    extra_pnginfo entry (the UI's `workflow`), JSON-encoded."""
    fields: dict[str, str] = {}
    if prompt is not None:
        fields["prompt"] = json.dumps(prompt)
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            fields[str(key)] = json.dumps(value)
    return fields


def save_images(
    images, metadata: GanvasMetadata | None, paths: Sequence[Path], comfy: dict[str, str], with_metadata: bool = True
) -> list[SavedFile]:
    """Write images[i] to paths[i]: the pipeline's pixels (RGBA when its model is transparent) with ganvas's
    fields when the image's bytes are a record's, else the image as it came; ComfyUI's fields on every file.
    with_metadata=False (ComfyUI's --disable-metadata) writes no text at all."""
    import numpy as np
    from PIL import Image

    from ganvas.core.io.png import save_png

    saved = []
    for image, path in zip(images, paths):
        pixels = image_bytes(image)
        if pixels.ndim == 2:
            pixels = pixels[..., None].repeat(3, axis=2)
        record = metadata.find(rgb_digest(pixels[..., :3])) if metadata is not None and pixels.shape[2] >= 3 else None
        if record is not None and record.alpha is not None:
            alpha = np.frombuffer(record.alpha, dtype=np.uint8).reshape(pixels.shape[:2])
            out = Image.fromarray(np.dstack([pixels[..., :3], alpha]), "RGBA")
        elif pixels.shape[2] in (3, 4):
            out = Image.fromarray(np.ascontiguousarray(pixels), "RGBA" if pixels.shape[2] == 4 else "RGB")
        else:
            out = Image.fromarray(np.ascontiguousarray(pixels[..., 0]), "L").convert("RGB")
        text: dict[str, str] = {}
        if with_metadata:
            text.update(comfy)
            if record is not None:
                text.update(record.fields)  # ganvas's fields win a clash (e.g. `parameters`)
        # "x" mode, not core/io/atomic.py: never overwrite (ComfyUI's counter picked a free name; a rename would)
        with open(path, "xb") as fh:
            save_png(out, fh, text)
        saved.append(SavedFile(Path(path), record is not None and with_metadata, out.mode))
    return saved
