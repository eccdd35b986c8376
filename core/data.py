"""Training data: captioned images held in memory as one uint8 tensor.

Formats: a Hugging Face `imagefolder` (images + metadata.jsonl with file_name/text), a folder of images
with `.txt` caption sidecars, or the built-in procedural `shapes` task. Every format ends up as the
same `CaptionedImages`, so training and evaluation never care where pixels came from.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class CaptionedImages:
    images: torch.Tensor                 # (N, 3, R, R) uint8
    captions: list[str]                  # distinct captions
    caption_index: torch.Tensor          # (N,) int64 into `captions`
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) never fatal
    source: str = ""
    styles: list[str] = field(default_factory=list)  # distinct metadata "style" words, most frequent first

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]


def load_image(path: Path, resolution: int) -> np.ndarray:
    """Open, composite transparency on white, centre-crop to square, resize. Raises on unreadable files."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(canvas, rgba)
        im = im.convert("RGB")
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = im.crop((left, top, left + side, top + side))
    if side != resolution:
        im = im.resize((resolution, resolution), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def _assemble(pairs: list[tuple[Path, str]], resolution: int, source: str) -> CaptionedImages:
    arrays, caption_ids, skipped = [], [], []
    captions: dict[str, int] = {}
    for path, text in pairs:
        try:
            arr = load_image(path, resolution)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            skipped.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        arrays.append(arr)
        caption_ids.append(captions.setdefault(text, len(captions)))
    if not arrays:
        raise ValueError(f"no readable captioned images in {source} ({len(skipped)} skipped)")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return CaptionedImages(images, list(captions), torch.tensor(caption_ids), skipped, source)


def load_imagefolder(folder: Path, resolution: int, caption_field: str = "text") -> CaptionedImages:
    meta = folder / "metadata.jsonl"
    pairs, skipped, styles = [], [], Counter()
    for line_no, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, text = row["file_name"], row[caption_field]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            skipped.append((f"{meta}:{line_no}", f"bad metadata line: {exc}"))
            continue
        if not isinstance(text, str) or not text.strip():
            skipped.append((str(folder / str(name)), f"empty or missing {caption_field!r}"))
            continue
        pairs.append((folder / name, text.strip()))
        if isinstance(row.get("style"), str) and row["style"].strip():
            styles[row["style"].strip()] += 1
    data = _assemble(pairs, resolution, str(folder))
    data.skipped[:0] = skipped
    # The captions' style words (emoji64: "noto", "twemoji", ...), recorded in the checkpoint so hosts
    # can offer them; images that failed to load still count, which only matters for the order.
    data.styles = [style for style, _ in styles.most_common()]
    return data


def load_sidecar_folder(folder: Path, resolution: int) -> CaptionedImages:
    pairs, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        sidecar = path.with_suffix(".txt")
        if not sidecar.exists():
            skipped.append((str(path), "no .txt caption beside it"))
            continue
        text = sidecar.read_text(encoding="utf-8", errors="replace").strip()
        if not text:
            skipped.append((str(path), "empty caption file"))
            continue
        pairs.append((path, text))
    data = _assemble(pairs, resolution, str(folder))
    data.skipped[:0] = skipped
    return data


# --- the procedural shapes task -------------------------------------------------------------------------

# Sample-grid captions for shapes runs: one per shape, two of them held-out pairs (composition), one pair.
SHAPES_SAMPLE_CAPTIONS = [
    "a large red circle in the centre", "a small blue square on the left", "a large green star at the top",
    "a large yellow triangle at the bottom", "a small pink cross on the right", "a large cyan diamond in the centre",
    "a large red star in the centre", "a large blue diamond on the left",
    "a large orange square on the left and a small purple circle on the right",
]

def shapes_caption_bank(seed: int = 0, two_object_scenes: int = 2000, variants: int = 3):
    """Fixed (objects, caption) pairs for training: every non-held-out single object in up to `variants`
    wordings (synonyms), plus a fixed set of two-object scenes. A fixed bank keeps the set of distinct
    captions small enough to embed once (MiniLM encodes ~40-100 captions/s on two cores)."""
    from .shapes import caption, sample_objects, single_object_combinations

    rng = random.Random(seed)
    single, double = [], []
    for obj in single_object_combinations(held_out="exclude"):
        wordings = {caption([obj])} | {caption([obj], rng) for _ in range(variants - 1)}
        single.extend(([obj], text) for text in sorted(wordings))
    while len(double) < two_object_scenes:
        objects = sample_objects(rng, two_object_prob=1.0, held_out="exclude")
        if len(objects) == 2:
            double.append((objects, caption(objects)))
    return single, double


def _render_chunk(args):
    from .shapes import render

    entries, resolution, seed = args
    rng = random.Random(seed)
    out = np.empty((len(entries), resolution, resolution, 3), dtype=np.uint8)
    for i, (objects, background) in enumerate(entries):
        out[i] = np.asarray(render(objects, resolution, background=background, rng=rng))
    return out


def make_shapes(resolution: int, size: int = 20000, seed: int = 0, two_object_prob: float = 0.25,
                workers: int = 1) -> CaptionedImages:
    """Render a deterministic pool of shapes images (same seed -> same pool, whatever `workers` is)."""
    single, double = shapes_caption_bank(seed)
    rng = random.Random(seed + 1)
    scenes = [rng.choice(double if rng.random() < two_object_prob else single) for _ in range(size)]
    backgrounds = [rng.choice(("white", "black")) for _ in range(size)]
    chunk = 1024
    jobs = [([(scenes[j][0], backgrounds[j]) for j in range(i, min(i + chunk, size))], resolution, seed * 7919 + i)
            for i in range(0, size, chunk)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_render_chunk, jobs))
    else:
        parts = [_render_chunk(job) for job in jobs]
    images = torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()
    captions: dict[str, int] = {}
    index = [captions.setdefault(text, len(captions)) for _, text in scenes]
    return CaptionedImages(images, list(captions), torch.tensor(index), [], "shapes")


def load_dataset(spec: str, resolution: int, shapes_size: int = 20000, seed: int = 0,
                 workers: int = 1) -> CaptionedImages:
    """`shapes`, a folder with metadata.jsonl (imagefolder), or a folder of images with .txt sidecars."""
    if spec == "shapes":
        return make_shapes(resolution, size=shapes_size, seed=seed, workers=workers)
    folder = Path(spec)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset {spec!r} is neither 'shapes' nor an existing folder")
    if (folder / "metadata.jsonl").exists():
        return load_imagefolder(folder, resolution)
    if (folder / "train" / "metadata.jsonl").exists():
        return load_imagefolder(folder / "train", resolution)
    return load_sidecar_folder(folder, resolution)
