"""Default GAN backend: the shipped models, the `style` rule, the built-in dataset formats.

Models: every folder with a config.json under the package's models/ (e.g. models/shapes/) is
registered by folder name, and so is every such folder under the directories listed in
GANVAS_MODELS_PATH (os.pathsep-separated; these come first, so a user folder can replace a shipped
model of the same name).
"""
from __future__ import annotations

import os
from pathlib import Path

from ganvas.core.hookspecs import hookimpl

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def model_folders() -> dict[str, Path]:
    extra = [Path(p) for p in os.environ.get("GANVAS_MODELS_PATH", "").split(os.pathsep) if p.strip()]
    found: dict[str, Path] = {}
    for base in [*extra, MODELS_DIR]:
        if not base.is_dir():
            continue
        for folder in sorted(base.iterdir()):
            if (folder / "config.json").is_file():
                found.setdefault(folder.name, folder)
    return found


@hookimpl(trylast=True)
def ganvas_register_models(register):
    for name, folder in model_folders().items():
        register(name, folder, description=f"checkpoint folder {folder}")


@hookimpl(trylast=True)
def ganvas_register_datasets(register):
    # Imported lazily: core.data pulls in torch, and listing plugins should stay instant.
    def shapes(path, resolution, **options):
        from ganvas.core.data import make_shapes

        return make_shapes(resolution, **options)

    def imagefolder(path, resolution, **options):
        from ganvas.core.data import load_imagefolder

        return load_imagefolder(Path(path), resolution, **options)

    def sidecar(path, resolution, **options):
        from ganvas.core.data import load_sidecar_folder

        return load_sidecar_folder(Path(path), resolution)

    register("shapes", shapes, description="procedural coloured shapes with exact captions (SHAPES.md)")
    register("imagefolder", imagefolder, description="Hugging Face imagefolder: images + metadata.jsonl (file_name, text)")
    register("sidecar", sidecar, description="a folder of images, each with a .txt caption beside it")


def style_suffix(style: str) -> str:
    """The emoji model's captions end in "; <style> style" (e.g. "fox; animal, face; noto style")."""
    return f"; {style.strip()} style"


@hookimpl(trylast=True)
def ganvas_prepare_request(request):
    request.prompt = request.prompt.strip()
    if request.style and request.style.strip():
        suffix = style_suffix(request.style)
        if not request.prompt.endswith(suffix):  # idempotent: a replayed request is not suffixed twice
            request.prompt += suffix
    return request
