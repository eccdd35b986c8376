"""Training data: captioned images held in memory as one uint8 tensor.

Formats: a Hugging Face `imagefolder` (images + metadata.jsonl with file_name/text), a folder of images
with `.txt` caption sidecars, or the built-in procedural `shapes` task. Every format ends up as the
same `CaptionedImages`, so training and evaluation never care where pixels came from.
"""

from __future__ import annotations

import hashlib
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


# The prompt forms a captioned image can be trained on (caption-segment dropout): the dataset's full caption
# ("fox; animal, face; noto style"), the form the hosts send for a name plus a --style ("fox; noto style"),
# and the bare name ("fox", any design). Column k of CaptionedImages.caption_forms holds form k.
CAPTION_FORMS = ("full", "typed", "name")


# How a style word enters a caption of a styled dataset (emoji: "fox; animal, face; noto style"). A model
# trained on one records it as its config.json "prompt_template", so hosts' `style` builds the same form.
STYLE_PROMPT_TEMPLATE = "{prompt}; {style} style"


def typed_prompt(label: str, style: str | None) -> str:
    """What every host sends for prompt `label` with style `style` (the model's prompt template)."""
    return STYLE_PROMPT_TEMPLATE.format(prompt=label, style=style.strip()) if style and style.strip() else label


@dataclass
class CaptionedImages:
    images: torch.Tensor  # (N, C, R, R) uint8: RGB, or RGBA with premultiplied colour
    captions: list[str]  # distinct captions
    caption_index: torch.Tensor  # (N,) int64 into `captions`: each image's full caption
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) never fatal
    source: str = ""
    styles: list[str] = field(default_factory=list)  # distinct metadata "style" words, most frequent first
    labels: list[str] | None = None  # per image: the concept's name (metadata "label"), when known
    image_styles: list[str] | None = None  # per image: its design's style word, when known
    caption_forms: torch.Tensor | None = None  # (N, len(CAPTION_FORMS)) into `captions`, when labels are known

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]


def load_image(path: Path, resolution: int, channels: int = 3) -> np.ndarray:
    """Open, centre-crop to square, resize; (R, R, channels) uint8. Raises on unreadable files.

    channels=3 composites transparency on white; channels=4 keeps alpha and premultiplies the colour
    (fully transparent pixels become 0 whatever colour the file stored there)."""
    with Image.open(path) as im:
        im.load()
        if channels == 4:
            return _premultiplied(_square(im.convert("RGBA"), resolution))
        if im.mode in ("RGBA", "LA", "P") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(canvas, rgba)
        im = im.convert("RGB")
    return np.asarray(_square(im, resolution), dtype=np.uint8)


def _square(im: Image.Image, resolution: int) -> Image.Image:
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = im.crop((left, top, left + side, top + side))
    if side != resolution:
        im = im.resize((resolution, resolution), Image.LANCZOS)
    return im


def _premultiplied(im: Image.Image) -> np.ndarray:
    arr = np.asarray(im, dtype=np.uint16)
    rgb = (arr[..., :3] * arr[..., 3:4] + 127) // 255
    return np.concatenate([rgb, arr[..., 3:4]], axis=2).astype(np.uint8)


def image_channels(folder: Path, names: list[str]) -> int:
    """4 when the first readable image has an alpha channel (the dataset is transparent), else 3."""
    for name in names[:20]:
        try:
            with Image.open(folder / name) as im:
                return 4 if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info else 3
        except (OSError, UnidentifiedImageError, ValueError):
            continue
    return 3


def _assemble(
    pairs: list[tuple[Path, str]], resolution: int, source: str, channels: int = 3, rows: list[dict] | None = None
) -> CaptionedImages:
    arrays, caption_ids, skipped, kept = [], [], [], []
    captions: dict[str, int] = {}
    for k, (path, text) in enumerate(pairs):
        try:
            arr = load_image(path, resolution, channels)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            skipped.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        arrays.append(arr)
        kept.append(k)
        caption_ids.append(captions.setdefault(text, len(captions)))
    if not arrays:
        raise ValueError(f"no readable captioned images in {source} ({len(skipped)} skipped)")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    data = CaptionedImages(images, list(captions), torch.tensor(caption_ids), skipped, source)
    if rows is not None:
        _attach_forms(data, [rows[k] for k in kept], captions)
    return data


def _attach_forms(data: CaptionedImages, rows: list[dict], captions: dict[str, int]):
    """Per-image concept/style and the three prompt forms, when every row names its `label` and `style`."""
    if not rows or not all(isinstance(r.get("label"), str) and isinstance(r.get("style"), str) for r in rows):
        return
    data.labels = [r["label"].strip() for r in rows]
    data.image_styles = [r["style"].strip() for r in rows]
    forms = []
    for full_id, label, style in zip(data.caption_index.tolist(), data.labels, data.image_styles):
        typed = captions.setdefault(typed_prompt(label, style), len(captions))
        name = captions.setdefault(label, len(captions))
        forms.append([full_id, typed, name])
    data.captions = list(captions)
    data.caption_forms = torch.tensor(forms)


def read_metadata(folder: Path, caption_field: str = "text") -> tuple[list[dict], list[tuple[str, str]]]:
    """The usable rows of folder/metadata.jsonl (file_name + non-empty caption) and the skipped ones."""
    meta = folder / "metadata.jsonl"
    rows, skipped = [], []
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
        rows.append({**row, caption_field: text.strip()})
    return rows, skipped


def validation_holdout(rows: list[dict], fraction: float = 0.05) -> set[str]:
    """File names carved from train/ as the validation split: held-out concept-design pairs, like test/.

    Deterministic (a hash of the file name, so adding images never reshuffles it), and only images whose
    concept keeps another design in train, so validation measures recombination exactly as test does."""
    per_concept = Counter(r.get("label", r["text"]) for r in rows)
    chosen, left = set(), Counter(per_concept)
    for r in sorted(rows, key=lambda r: r["file_name"]):
        digest = int(hashlib.sha256(r["file_name"].encode()).hexdigest()[:8], 16)
        concept = r.get("label", r["text"])
        if digest / 0xFFFFFFFF < fraction and left[concept] >= 2:
            chosen.add(r["file_name"])
            left[concept] -= 1
    return chosen


def load_imagefolder(
    folder: Path, resolution: int, caption_field: str = "text", channels: int | None = None, subset: str = "all"
) -> CaptionedImages:
    """An imagefolder split. subset: "all", "train" (without the validation hold-out) or "validation"."""
    rows, skipped = read_metadata(folder, caption_field)
    if subset != "all":
        held = validation_holdout(rows)
        rows = [r for r in rows if (r["file_name"] in held) == (subset == "validation")]
    styles = Counter(r["style"].strip() for r in rows if isinstance(r.get("style"), str) and r["style"].strip())
    if channels is None:
        channels = image_channels(folder, [r["file_name"] for r in rows])
    pairs = [(folder / r["file_name"], r[caption_field]) for r in rows]
    data = _assemble(pairs, resolution, str(folder), channels, rows)
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
    "a large red circle in the centre",
    "a small blue square on the left",
    "a large green star at the top",
    "a large yellow triangle at the bottom",
    "a small pink cross on the right",
    "a large cyan diamond in the centre",
    "a large red star in the centre",
    "a large blue diamond on the left",
    "a large orange square on the left and a small purple circle on the right",
]


def shapes_caption_bank(seed: int = 0, two_object_scenes: int = 2000, variants: int = 3):
    """Fixed (objects, caption) pairs for training: every non-held-out single object in up to `variants`
    wordings (synonyms), plus a fixed set of two-object scenes. A fixed bank keeps the set of distinct
    captions small enough to embed once (MiniLM encodes ~40-100 captions/s on two cores)."""
    from ganvas.core.tasks.shapes import caption, sample_objects, single_object_combinations

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
    from ganvas.core.tasks.shapes import render

    entries, resolution, seed = args
    rng = random.Random(seed)
    out = np.empty((len(entries), resolution, resolution, 3), dtype=np.uint8)
    for i, (objects, background) in enumerate(entries):
        out[i] = np.asarray(render(objects, resolution, background=background, rng=rng))
    return out


def make_shapes(
    resolution: int, size: int = 20000, seed: int = 0, two_object_prob: float = 0.25, workers: int = 1
) -> CaptionedImages:
    """Render a deterministic pool of shapes images (same seed -> same pool, whatever `workers` is)."""
    single, double = shapes_caption_bank(seed)
    rng = random.Random(seed + 1)
    scenes = [rng.choice(double if rng.random() < two_object_prob else single) for _ in range(size)]
    backgrounds = [rng.choice(("white", "black")) for _ in range(size)]
    chunk = 1024
    jobs = [
        ([(scenes[j][0], backgrounds[j]) for j in range(i, min(i + chunk, size))], resolution, seed * 7919 + i)
        for i in range(0, size, chunk)
    ]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_render_chunk, jobs))
    else:
        parts = [_render_chunk(job) for job in jobs]
    images = torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()
    captions: dict[str, int] = {}
    index = [captions.setdefault(text, len(captions)) for _, text in scenes]
    return CaptionedImages(images, list(captions), torch.tensor(index), [], "shapes")


def load_dataset(
    spec: str, resolution: int, shapes_size: int = 20000, seed: int = 0, workers: int = 1, subset: str = "all"
) -> CaptionedImages:
    """`shapes`, a folder with metadata.jsonl (imagefolder), or a folder of images with .txt sidecars,
    through the built-in formats only (core/datasets/formats.py). Hosts resolve `--data` through the
    formats plugins register (`ganvas_register_datasets`) instead."""
    from ganvas.core.datasets.formats import load_builtin

    return load_builtin(spec, resolution, size=shapes_size, seed=seed, workers=workers, subset=subset)
