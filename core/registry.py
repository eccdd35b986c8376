"""How a model or an upsampler is found and loaded: the one rule both follow.

A name is looked up in what plugins registered (`ganvas_register_models`, `ganvas_register_upsamplers`), unless
it is written as a path (it has a separator, starts with "." or is absolute); otherwise it must be a checkpoint
folder, which is then named after the folder; otherwise the error names what is registered:

    unknown model 'x': not a registered name (registered: emoji64, shapes) and not a checkpoint folder

A registration's value is a checkpoint folder or a zero-argument loader, which returns a folder or a module;
loaded ones are cached per checkpoint file (path, mtime, size: a retrained file reloads) or per loader.
Torch-free: the pipeline (models) and core/upscaling.py (upsamplers) bring the loading itself.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

from ganvas.core.errors import GanvasError, ModelNotFound
from ganvas.core.requests import default_model_name


def looks_like_path(name: str) -> bool:
    """Written as a path ("./x", "runs/x", "/abs"), so never looked up as a registered name."""
    return os.sep in name or (os.altsep or os.sep) in name or name.startswith(".") or Path(name).is_absolute()


def resolve(
    wanted: str | os.PathLike,
    registered: Mapping[str, Any],
    kind: str = "model",
    not_found: type[Exception] = ModelNotFound,
) -> tuple[str, Any, str]:
    """-> (name, source, origin) for a registered name, else a checkpoint folder; `not_found` otherwise.

    `registered` maps names to registrations (`.value`: folder or loader, `.plugin`: who registered it);
    `kind` ("model", "upsampler") words the error."""
    wanted = os.fspath(wanted)
    if not looks_like_path(wanted) and wanted in registered:
        entry = registered[wanted]
        return wanted, entry.value, f"plugin {entry.plugin}"
    folder = Path(wanted).expanduser()
    if folder.is_dir():
        return folder.resolve().name, folder, str(folder)
    names = ", ".join(sorted(registered)) or "none"
    raise not_found(
        f"unknown {kind} {wanted!r}: not a registered name (registered: {names}) and not a checkpoint folder"
    )


def resolve_model(
    name_or_path: str | os.PathLike | None, plugins, warnings: list[str] | None = None
) -> tuple[str, Any, str]:
    """-> (model name, source, origin): `resolve` over the registered models (None: the default model)."""
    wanted = name_or_path if name_or_path is not None else default_model_name()
    return resolve(wanted, plugins.models(warnings), "model", ModelNotFound)


def resolve_upsampler(wanted: str | os.PathLike, plugins, warnings: list[str] | None = None) -> tuple[str, Any, str]:
    """-> (upsampler name, source, origin): `resolve` over the registered upsamplers (GanvasError if neither)."""
    return resolve(wanted, plugins.upsamplers(warnings), "upsampler", GanvasError)


# --- loading -------------------------------------------------------------------------------------------------


def is_loader(source: Any) -> bool:
    return callable(source) and not isinstance(source, (str, os.PathLike))


def cache_key(name: str, source: Any, origin: str, device: str) -> tuple:
    """What a loaded model is cached under: the checkpoint file (path, mtime, size) or the loader."""
    if is_loader(source):
        return ("loader", name, origin, device)
    folder = Path(source)
    try:
        stat = (folder / "model.safetensors").stat()
        return ("folder", str(folder.resolve()), stat.st_mtime_ns, stat.st_size, name, device)
    except OSError:
        return ("folder", str(folder.resolve()), None, None, name, device)


def produce(kind: str, name: str, source: Any, origin: str) -> Any:
    """A folder source as a Path; a loader's result (a folder path or a module), its failure a GanvasError."""
    if not is_loader(source):
        return Path(source)
    try:
        produced = source()
    except Exception as exc:
        raise GanvasError(f"{kind} {name!r}: the loader from {origin} failed: {type(exc).__name__}: {exc}") from exc
    return Path(produced) if isinstance(produced, (str, os.PathLike)) else produced


def state_hash(module) -> str:
    """First 10 hex digits of a sha256 over a module's state (for modules that a loader built, with no file)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]


__all__ = [
    "looks_like_path",
    "resolve",
    "resolve_model",
    "resolve_upsampler",
    "is_loader",
    "cache_key",
    "produce",
    "state_hash",
]
