"""ganvas nodes for ComfyUI (V3 schema): Model Loader, Generate, Interpolate, Encode Prompt, Mix Prompts, Save,
Upscale.

ComfyUI imports this folder's __init__.py (ComfyUI/custom_nodes/ganvas is a link to or a copy of this
folder; `ganvas comfy install COMFYUI_DIR` makes it) and awaits `comfy_entrypoint()`.

Importing this file needs neither ComfyUI nor torch: the nodes' module (which imports comfy_api) loads
inside the entry point, and torch and the ganvas pipeline only inside the nodes' `execute`. So the pack
adds little to ComfyUI's start, and a broken ganvas install shows up as a node error, not a crash.
The nodes import `ganvas.core` when they run: ganvas must be installed in ComfyUI's own Python.
"""

from __future__ import annotations

import logging

NODE_IDS = (
    "GanvasModelLoader",
    "GanvasGenerate",
    "GanvasInterpolate",
    "GanvasEncodePrompt",
    "GanvasMixPrompts",
    "GanvasSave",
    "GanvasUpscale",
)
CATEGORY = "ganvas"
MODEL_TYPE = "GANVAS_MODEL"
CONDITIONING_TYPE = "GANVAS_CONDITIONING"
METADATA_TYPE = "GANVAS_METADATA"

log = logging.getLogger("ganvas.comfy")


async def comfy_entrypoint():
    """ComfyUI's V3 entry point: register the `ganvas` model folder, hook ganvas's models into ComfyUI's
    unloading (memory.py) and return the extension."""
    try:
        from .memory import install_unload_hook
        from .model_folders import register_model_folder
        from .nodes import GanvasExtension

        register_model_folder()
        install_unload_hook()
    except Exception:
        # ComfyUI catches this too and starts without the pack; the traceback here says why.
        log.exception("ganvas: the ComfyUI nodes could not be loaded; ComfyUI continues without them")
        raise
    return GanvasExtension()


__all__ = ["comfy_entrypoint", "NODE_IDS"]
