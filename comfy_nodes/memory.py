"""ganvas models under ComfyUI's memory management.

ganvas keeps every model it loads in its own process-wide cache (ganvas.core.pipeline), which ComfyUI
knows nothing about, so ComfyUI's "Unload Models" / "Free model and node cache" (POST /free) could not
free them, and each retrained version of a checkpoint stayed in that cache beside the older ones.

- ComfyUI unloads its models through comfy.model_management.unload_all_models() (the /free buttons, an
  out-of-memory error, --disable-smart-memory after each run); it has no registry for other libraries'
  models, so the pack wraps that function (as memory-managing custom nodes do) and, after ComfyUI's own
  unload, calls release_all(): ganvas's cache is cleared (clear_model_cache), so the models are freed
  as soon as ComfyUI drops the node outputs that still hold them (at once with "Free model and node
  cache"), and models on an accelerator move to the CPU at once, freeing its memory as ComfyUI frees
  VRAM. Such a model moves back to its device the next time a node uses it (ready()).
- The loader remembers which version (fingerprint) of each checkpoint it loaded; a changed checkpoint
  clears ganvas's cache before the new version loads, so older versions never pile up.

torch and ganvas are imported inside the functions; the hook is installed from comfy_entrypoint().
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("ganvas.comfy")
HOOK_FLAG = "_ganvas_releases_models"


@dataclass
class _Tracked:
    ref: weakref.ref  # the pipeline's LoadedModel (generator, device, lock)
    home: Any  # the torch.device it was loaded for
    name: str
    offloaded: bool = False


_tracked: dict[int, _Tracked] = {}
_versions: dict[tuple[str, str], str] = {}  # (source, device) -> fingerprint last loaded
_lock = threading.Lock()


def _live() -> list[tuple[Any, _Tracked]]:
    live = []
    for key, entry in list(_tracked.items()):
        loaded = entry.ref()
        if loaded is None:
            _tracked.pop(key, None)
        else:
            live.append((loaded, entry))
    return live


def track(pipe) -> bool:
    """Remember the pipeline's model; True when it is one the pack had not seen (a fresh load)."""
    loaded = pipe.model
    with _lock:
        _live()
        if id(loaded) in _tracked and _tracked[id(loaded)].ref() is loaded:
            return False
        _tracked[id(loaded)] = _Tracked(weakref.ref(loaded), loaded.device, pipe.name)
        return True


def load(source: str, device: str, version: str):
    """Pipeline.load through the pack: a checkpoint whose version changed first clears ganvas's cache (the
    older version is not kept beside the new one). Returns (pipeline, loaded from disk just now)."""
    from . import generation

    key = (source, device)
    with _lock:
        previous = _versions.get(key)
    if previous is not None and previous != version:
        generation.require_ganvas().clear_model_cache()
        log.info("ganvas: %s changed on disk; its older version was released from ganvas's model cache", source)
    pipe = generation.load_pipeline(source, device)
    with _lock:
        _versions[key] = version
    return pipe, track(pipe)


def _move(loaded, device) -> None:
    with loaded.lock:  # never under a render of the same model
        loaded.generator.to(device)
        loaded.device = device


def ready(pipe):
    """The pipeline, its model moved back to its own device if an unload had moved it to the CPU."""
    loaded = getattr(pipe, "model", None)
    entry = _tracked.get(id(loaded)) if loaded is not None else None
    if entry is not None and entry.offloaded and entry.ref() is loaded:
        _move(loaded, entry.home)
        entry.offloaded = False
        log.info("ganvas: model %r is back on %s", entry.name, entry.home)
    return pipe


def release_all() -> list[str]:
    """Clear ganvas's model cache and move models off accelerators; the names of the models concerned."""
    from .generation import ganvas_problem

    if ganvas_problem() is not None:
        return []
    import torch

    from ganvas.core.pipeline import clear_model_cache

    clear_model_cache()
    released = []
    with _lock:
        for loaded, entry in _live():
            if loaded.device.type != "cpu":
                _move(loaded, torch.device("cpu"))
                entry.offloaded = True
            released.append(f"{entry.name} ({entry.home})")
    return released


def install_unload_hook(model_management=None) -> bool:
    """Wrap comfy.model_management.unload_all_models so that ComfyUI's unloading releases ganvas's models
    too. Idempotent (a reloaded pack does not wrap twice); False when it was already installed."""
    if model_management is None:
        import comfy.model_management as model_management
    original = model_management.unload_all_models
    if getattr(original, HOOK_FLAG, False):
        return False

    @functools.wraps(original)
    def unload_all_models(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            try:
                released = release_all()
                log.info(
                    "ganvas: ComfyUI unloaded its models; ganvas released %d model(s)%s",
                    len(released),
                    f": {', '.join(released)}" if released else "",
                )
            except Exception:  # never let ganvas break ComfyUI's unloading
                log.exception("ganvas: releasing ganvas's models failed")

    setattr(unload_all_models, HOOK_FLAG, True)
    model_management.unload_all_models = unload_all_models
    return True
