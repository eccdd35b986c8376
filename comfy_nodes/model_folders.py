"""Which models the Ganvas Model Loader offers, and where each one lives.

Two sources, in this order:
1. Checkpoint folders (config.json + model.safetensors) under ComfyUI's `ganvas` model folders:
   ComfyUI/models/ganvas plus any `ganvas:` entry of extra_model_paths.yaml. A folder is offered by its
   path relative to its base ("emoji64", "mine/run3"), as ComfyUI's DiffusersLoader offers folders.
2. The models ganvas itself registers (its shipped models, GANVAS_MODELS_PATH, plugins), by name,
   unless a folder of the same name shadows it (the user's ComfyUI folder wins).

The style combo of Generate and Interpolate lists the style words those checkpoints were trained with
(config.json `trained.styles`), the default model's first.

ComfyUI's folder_paths lists files, not folders, so the folders are found here with os.walk.
Nothing here raises: a model source that fails is logged once and skipped, so the node list and
ComfyUI's start never depend on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path, PurePosixPath
from typing import Iterable

FOLDER_NAME = "ganvas"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MAX_DEPTH = 4  # followlinks=True can loop; nobody nests checkpoints deeper than this

log = logging.getLogger("ganvas.comfy")
_reported: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _reported:
        _reported.add(message)
        log.warning("%s", message)


def is_checkpoint(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def find_checkpoints(bases: Iterable[str | os.PathLike]) -> list[str]:
    """Checkpoint folders under each base, as POSIX paths relative to their base, sorted, no repeats."""
    found: list[str] = []
    for base in bases:
        base = Path(base)
        if not base.is_dir():
            continue
        for root, dirs, files in os.walk(base, followlinks=True):
            rel = Path(root).relative_to(base)
            if CONFIG_FILE in files and WEIGHTS_FILE in files and rel.parts:
                found.append(rel.as_posix())
                dirs[:] = []  # a checkpoint's own subfolders are not models
            elif len(rel.parts) >= MAX_DEPTH:
                dirs[:] = []
            else:
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(set(found))


def _safe_relative(name: str) -> PurePosixPath | None:
    """The combo value as a relative path, or None when it is absolute or climbs out ('..')."""
    rel = PurePosixPath(name.replace("\\", "/"))
    if not rel.parts or rel.is_absolute() or ".." in rel.parts or ":" in rel.parts[0]:
        return None
    return rel


def resolve_checkpoint(name: str, bases: Iterable[str | os.PathLike]) -> Path | None:
    """The first base holding checkpoint folder `name`, else None."""
    rel = _safe_relative(name)
    if rel is None:
        return None
    for base in bases:
        candidate = Path(base, *rel.parts)
        if is_checkpoint(candidate):
            return candidate
    return None


def comfy_bases() -> list[str]:
    """ComfyUI's folders for the `ganvas` model type (empty outside ComfyUI or before registration)."""
    try:
        import folder_paths

        return folder_paths.get_folder_paths(FOLDER_NAME)
    except (ImportError, KeyError):
        return []


def register_model_folder() -> str:
    """Make ComfyUI/models/ganvas a model folder of type `ganvas` (extra_model_paths.yaml adds more)."""
    import folder_paths

    path = os.path.join(folder_paths.models_dir, FOLDER_NAME)
    folder_paths.add_model_folder_path(FOLDER_NAME, path)
    return path


def registered_entries() -> dict[str, object]:
    """The models ganvas registers (its plugin manager; no torch is imported): name -> checkpoint folder
    path, or the plugin's loader when it builds the model in code."""
    try:
        from ganvas.core.plugin_manager import get_plugin_manager

        return {name: entry.value for name, entry in get_plugin_manager().models().items()}
    except Exception as exc:  # a missing or broken ganvas must not hide the folder models
        _warn_once(
            f"ganvas: cannot list ganvas's registered models ({type(exc).__name__}: {exc}); "
            f"only checkpoint folders under models/{FOLDER_NAME} are offered"
        )
        return {}


def registered_models() -> list[str]:
    """Names of the models ganvas registers."""
    return sorted(registered_entries())


def model_choices(
    bases: Iterable[str | os.PathLike] | None = None, registered: Iterable[str] | None = None
) -> list[str]:
    """The loader's combo: checkpoint folders first, then registered names they do not shadow."""
    bases = comfy_bases() if bases is None else list(bases)
    folders = find_checkpoints(bases)
    names = registered_models() if registered is None else list(registered)
    return folders + [n for n in names if n not in folders]


def default_model() -> str | None:
    try:
        from ganvas.core.requests import default_model_name

        return default_model_name()
    except Exception:
        return None


def default_choice(choices: list[str]) -> str | None:
    """ganvas's default model when offered, else the first choice."""
    wanted = default_model()
    if wanted in choices:
        return wanted
    return choices[0] if choices else None


def model_source(name: str, bases: Iterable[str | os.PathLike] | None = None) -> str:
    """What Pipeline.load gets for a combo value: a checkpoint folder path, or a registered name."""
    bases = comfy_bases() if bases is None else list(bases)
    folder = resolve_checkpoint(name, bases)
    if folder is not None:
        return str(folder)
    if _safe_relative(name) is None:
        raise ValueError(f"ganvas model {name!r}: not a model name (absolute paths and '..' are not accepted)")
    return name  # a registered name; Pipeline.load says clearly if it is unknown


def model_folder(
    name: str, bases: Iterable[str | os.PathLike] | None = None, registered: dict[str, object] | None = None
) -> Path | None:
    """The checkpoint folder behind a combo value (a folder model, or a registered name with a folder)."""
    bases = comfy_bases() if bases is None else list(bases)
    folder = resolve_checkpoint(name, bases)
    if folder is not None:
        return folder
    value = (registered_entries() if registered is None else registered).get(name)
    if isinstance(value, (str, os.PathLike)) and is_checkpoint(value):
        return Path(value)
    return None


def fingerprint(
    name: str, bases: Iterable[str | os.PathLike] | None = None, registered: dict[str, object] | None = None
) -> str:
    """Changes when a checkpoint folder's files change, so ComfyUI reloads a retrained model. ComfyUI stores it
    in the prompt (`is_changed`) that its history and saved PNGs carry, so the folder is named by a digest,
    never by its server path."""
    folder = model_folder(name, bases, registered)
    if folder is None:
        return f"name:{name}"
    parts = [hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]]
    for file in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            stat = (folder / file).stat()
            parts.append(f"{stat.st_mtime_ns}:{stat.st_size}")
        except OSError:
            parts.append("missing")
    return f"{name}|{'|'.join(parts)}"


# --- style words ------------------------------------------------------------------------------------------

NO_STYLE = "none"  # == generation.NO_STYLE
_styles_cache: dict[str, tuple[tuple, tuple[str, ...]]] = {}


def checkpoint_styles(folder: str | os.PathLike) -> tuple[str, ...]:
    """The style words a checkpoint folder's config.json records (trained.styles); () when none or unreadable.
    Cached per file version: the combo is rebuilt for every /object_info and every validation."""
    path = Path(folder) / CONFIG_FILE
    try:
        stat = path.stat()
    except OSError:
        return ()
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _styles_cache.get(str(path))
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        trained = json.loads(path.read_text("utf-8")).get("trained")
        styles = trained.get("styles") if isinstance(trained, dict) else None
        found = tuple(s for s in styles if isinstance(s, str) and s.strip()) if isinstance(styles, list) else ()
    except (OSError, ValueError, AttributeError):
        found = ()
    _styles_cache[str(path)] = (key, found)
    return found


def style_options(
    bases: Iterable[str | os.PathLike] | None = None, registered: dict[str, object] | None = None
) -> tuple[list[str], str]:
    """The style combo and its default: "none", the default model's trained styles (in its order), then the
    other offered models' styles; the default is the default model's first style ("noto" for emoji64), else
    "none". The model that runs must know the style picked (checked when it runs)."""
    bases = comfy_bases() if bases is None else list(bases)
    registered = registered_entries() if registered is None else registered
    names = model_choices(bases, registered=list(registered))
    default_name = default_choice(names)
    styles: list[str] = []
    default = NO_STYLE
    for name in ([default_name] if default_name else []) + [n for n in names if n != default_name]:
        folder = model_folder(name, bases, registered)
        own = [s for s in (checkpoint_styles(folder) if folder is not None else ()) if s.lower() != NO_STYLE]
        if name == default_name and own:
            default = own[0]
        styles.extend(s for s in own if s not in styles)
    return [NO_STYLE] + styles, default
