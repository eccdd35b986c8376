"""Default GAN backend: the shipped models and upsamplers, prompt whitespace, the built-in dataset formats.

Models: every folder with a config.json under the package's models/ (e.g. models/shapes/) is
registered by folder name, and so is every such folder under the directories listed in
GANVAS_MODELS_PATH (os.pathsep-separated; these come first, so a user folder can replace a shipped
model of the same name).

Upsamplers: every checkpoint folder under models/upsamplers/ (e.g. models/upsamplers/upsampler-x4/), and
every folder of GANVAS_MODELS_PATH (or a subfolder `upsamplers/` of one) whose config.json has an
"upsampler" section, by folder name. An upsampler folder is never registered as a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ganvas.core.hookspecs import hookimpl

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
UPSAMPLERS_DIR = MODELS_DIR / "upsamplers"


def _is_upsampler(folder: Path) -> bool:
    """An upsampler checkpoint's config.json has an "upsampler" section (core/upsampler.py); torch-free."""
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("upsampler"), dict)


def _extra_dirs() -> list[Path]:
    return [Path(p) for p in os.environ.get("GANVAS_MODELS_PATH", "").split(os.pathsep) if p.strip()]


def model_folders() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for base in [*_extra_dirs(), MODELS_DIR]:
        if not base.is_dir():
            continue
        for folder in sorted(base.iterdir()):
            if (folder / "config.json").is_file() and not _is_upsampler(folder):
                found.setdefault(folder.name, folder)
    return found


def upsampler_folders() -> dict[str, Path]:
    found: dict[str, Path] = {}
    bases = [*(b for d in _extra_dirs() for b in (d, d / "upsamplers")), UPSAMPLERS_DIR]
    for base in bases:
        if not base.is_dir():
            continue
        for folder in sorted(base.iterdir()):
            if (folder / "config.json").is_file() and _is_upsampler(folder):
                found.setdefault(folder.name, folder)
    return found


@hookimpl(trylast=True)
def ganvas_register_models(register):
    for name, folder in model_folders().items():
        register(name, folder, description=f"checkpoint folder {folder}")


@hookimpl(trylast=True)
def ganvas_register_upsamplers(register):
    for name, folder in upsampler_folders().items():
        register(name, folder, description=f"upsampler checkpoint folder {folder}")


@hookimpl(trylast=True)
def ganvas_register_datasets(register):
    # The loaders live in core/datasets/formats.py; imported lazily (they pull in torch, and listing plugins
    # should stay instant). Explicit signatures: a loader gets only the options it names.
    def shapes(path, resolution, seed=0, size=20000, workers=1):
        from ganvas.core.datasets import formats

        return formats.shapes(path, resolution, seed=seed, size=size, workers=workers)

    def imagefolder(path, resolution, split=None, subset="all", channels=None, caption_field="text"):
        from ganvas.core.datasets import formats

        return formats.imagefolder(
            path, resolution, split=split, subset=subset, channels=channels, caption_field=caption_field
        )

    def sidecar(path, resolution):
        from ganvas.core.datasets import formats

        return formats.sidecar(path, resolution)

    register("shapes", shapes, description="procedural coloured shapes with exact captions (SHAPES.md)")
    register(
        "imagefolder", imagefolder, description="Hugging Face imagefolder: images + metadata.jsonl (file_name, text)"
    )
    register("sidecar", sidecar, description="a folder of images, each with a .txt caption beside it")


@hookimpl(trylast=True)
def ganvas_prepare_request(request):
    # Only whitespace: the style word is put in by the pipeline, with the model's own prompt template
    # (config.json "prompt_template"), not by a rule for every model.
    request.prompt = request.prompt.strip()
    return request
