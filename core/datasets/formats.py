"""Dataset formats: the built-in loaders, the `--data` spec rule and the loader calling convention.

A format is a loader, `loader(path, resolution, **options) -> CaptionedImages`, registered under a name
through `ganvas_register_datasets` (the default backend registers the built-ins below). This module knows
nothing of the plugin manager: a host passes the registered loaders in (`{name: loader}`), and
`Trainer(opts)` used from Python without a host falls back to `BUILTIN_FORMATS`.

A `--data` spec is `NAME` (a registered format that needs no path, e.g. `shapes`), `NAME:PATH` (a
registered format read from PATH, e.g. `imagefolder:/data/emoji64`), or a folder, whose format is detected:
metadata.jsonl in it or in its train/ -> `imagefolder`, otherwise `sidecar`.

Options a host may pass (a loader gets only those its signature names, or all of them with **kwargs; None
values are never passed):
  subset    "all", "train" or "validation": the part of the training data (validation = the deterministic
            hold-out carved from train/, see folders.validation_holdout)
  split     evaluation: a split folder of a dataset root ("train", "test", "unseen_concepts")
  channels  3 = RGB on white (what the evaluators judge); absent = the dataset's own
  seed, size, workers   for generated datasets (shapes: the pool's seed, size and rendering processes)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ganvas.core.datasets.folders import CaptionedImages, load_imagefolder, load_sidecar_folder, make_shapes

Loader = Callable[..., CaptionedImages]


class DatasetError(ValueError):
    """A `--data` spec that names no registered format and no folder, or a loader that broke its contract."""


def dataset_root(path: str | Path) -> Path:
    return Path(path).expanduser()


def split_folder(root: Path, split: str | None) -> Path:
    """The imagefolder a split lives in: ROOT/SPLIT; with no split (training), ROOT/train when ROOT holds
    no metadata.jsonl itself. "train" falls back to ROOT for a root that is itself one split folder."""
    if split is None:
        return (
            root / "train"
            if not (root / "metadata.jsonl").exists() and (root / "train" / "metadata.jsonl").exists()
            else root
        )
    folder = root / split
    if split == "train" and not (folder / "metadata.jsonl").exists() and (root / "metadata.jsonl").exists():
        return root
    if not (folder / "metadata.jsonl").exists():
        raise FileNotFoundError(f"{folder / 'metadata.jsonl'}: missing (expected a split folder with metadata.jsonl)")
    return folder


# --- the built-in formats ------------------------------------------------------------------------------------


def shapes(path, resolution: int, seed: int = 0, size: int = 20000, workers: int = 1) -> CaptionedImages:
    """The procedural shapes task (SHAPES.md); `path` is ignored."""
    return make_shapes(resolution, size=size, seed=seed, workers=workers)


def imagefolder(
    path,
    resolution: int,
    split: str | None = None,
    subset: str = "all",
    channels: int | None = None,
    caption_field: str = "text",
) -> CaptionedImages:
    """A Hugging Face imagefolder (images + metadata.jsonl with file_name/text), or a root of split folders."""
    if path is None:
        raise DatasetError("the imagefolder format needs a folder: --data imagefolder:PATH")
    return load_imagefolder(
        split_folder(dataset_root(path), split),
        resolution,
        caption_field=caption_field,
        channels=channels,
        subset=subset,
    )


def sidecar(path, resolution: int) -> CaptionedImages:
    """A folder of images, each with a .txt caption beside it."""
    if path is None:
        raise DatasetError("the sidecar format needs a folder: --data sidecar:PATH")
    return load_sidecar_folder(dataset_root(path), resolution)


BUILTIN_FORMATS: dict[str, Loader] = {"shapes": shapes, "imagefolder": imagefolder, "sidecar": sidecar}


# --- specs ---------------------------------------------------------------------------------------------------


@dataclass
class DatasetChoice:
    """A resolved `--data`: which format, read from where (None for a format that needs no path)."""

    spec: str
    format: str
    path: str | None
    loader: Loader

    def load(self, resolution: int, **options) -> CaptionedImages:
        return call_loader(self.loader, self.path, resolution, name=self.format, **options)


def detect_format(folder: Path) -> str:
    """imagefolder when metadata.jsonl is in the folder or in its train/, else sidecar."""
    if (folder / "metadata.jsonl").exists() or (folder / "train" / "metadata.jsonl").exists():
        return "imagefolder"
    return "sidecar"


def resolve_dataset(spec: str, formats: Mapping[str, Any]) -> DatasetChoice:
    """`NAME`, `NAME:PATH` or a folder -> the format's loader and path. `formats`: name -> loader (or a
    plugin manager Registration, whose `.value` is the loader). Raises DatasetError (one line) naming the
    registered formats when the spec is none of these."""

    def loader(name):
        value = formats[name]
        return getattr(value, "value", value)

    spec = str(spec)
    if spec in formats:
        return DatasetChoice(spec, spec, None, loader(spec))
    name, sep, rest = spec.partition(":")
    if sep and name in formats and rest:
        return DatasetChoice(spec, name, rest, loader(name))
    folder = dataset_root(spec)
    if folder.is_dir():
        fmt = detect_format(folder)
        if fmt in formats:
            return DatasetChoice(spec, fmt, str(folder), loader(fmt))
    names = ", ".join(sorted(formats)) or "none"
    raise DatasetError(
        f"unknown dataset {spec!r}: not a registered format (registered: {names}), FORMAT:PATH, or an existing folder"
    )


def call_loader(loader: Loader, path, resolution: int, name: str = "dataset", **options) -> CaptionedImages:
    """Call a format's loader with the options its signature takes; check that it returned CaptionedImages."""
    options = {k: v for k, v in options.items() if v is not None}
    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):  # builtins and some callables have no signature: pass everything
        params = None
    if params is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    data = loader(path, resolution, **options)
    if not isinstance(data, CaptionedImages):
        raise DatasetError(f"dataset format {name!r} returned {type(data).__name__}, expected CaptionedImages")
    if data.resolution != resolution:
        raise DatasetError(f"dataset format {name!r} returned {data.resolution} px images, asked for {resolution}")
    return data


def loader_takes(loader: Loader, option: str) -> bool:
    """Whether a loader's signature names `option` (or takes **kwargs)."""
    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):
        return True
    return option in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def load_builtin(spec: str, resolution: int, **options) -> CaptionedImages:
    """`spec` through the built-in formats only (no plugin manager): what `Trainer(opts)` does alone."""
    return resolve_dataset(spec, BUILTIN_FORMATS).load(resolution, **options)
