"""Shared by the ComfyUI tests: finding a ComfyUI checkout, importing its API, reading the workflows.

ComfyUI is not on PyPI. Point GANVAS_COMFYUI_DIR at a checkout (and GANVAS_COMFYUI_PYTHON at the Python
that has its requirements and ganvas installed); the variables are read once, at import, because the
autouse fixture in conftest.py clears GANVAS_* for each test.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "comfy_nodes"
WORKFLOWS = PACK / "workflows"

COMFYUI_DIR = os.environ.get("GANVAS_COMFYUI_DIR") or None
COMFYUI_PYTHON = os.environ.get("GANVAS_COMFYUI_PYTHON") or None
NO_CHECKOUT = (
    "no ComfyUI checkout configured: set GANVAS_COMFYUI_DIR to a ComfyUI folder (ComfyUI is not on "
    "PyPI) and GANVAS_COMFYUI_PYTHON to a Python with its requirements and ganvas installed"
)

# Widget values of each node in a UI workflow, in the frontend's order; CONTROL is the extra value that
# follows a widget with control_after_generate ("fixed", "randomize", ...).
CONTROL = "<control_after_generate>"
WIDGETS = {
    "GanvasModelLoader": ["model_name", "device"],
    "GanvasGenerate": ["prompt", "seed", CONTROL, "batch_size", "truncation", "style", "size"],
    "GanvasInterpolate": [
        "prompt_from",
        "prompt_to",
        "seed_from",
        CONTROL,
        "seed_to",
        CONTROL,
        "frames",
        "truncation",
        "style",
    ],
    "GanvasEncodePrompt": ["text"],
    "GanvasMixPrompts": ["weight"],
    "GanvasSave": ["filename_prefix"],
    "GanvasUpscale": ["size"],
    "SaveImage": ["filename_prefix"],
    "JoinImageWithAlpha": [],
}


def import_comfy_api():
    """(comfy_api.latest, folder_paths) from the configured checkout or the environment, or a skip reason."""
    if COMFYUI_DIR and COMFYUI_DIR not in sys.path:
        sys.path.insert(0, COMFYUI_DIR)
    try:
        import comfy.cli_args
        import torch

        if not torch.cuda.is_available():
            comfy.cli_args.args.cpu = True  # what `main.py --cpu` sets; model_management reads it on import
        import comfy.model_management  # noqa: F401
        import comfy.utils  # noqa: F401
        import comfy_api.latest
        import folder_paths
    except Exception as exc:  # ImportError, or a checkout whose requirements are missing here
        where = f"GANVAS_COMFYUI_DIR={COMFYUI_DIR}" if COMFYUI_DIR else NO_CHECKOUT
        return None, f"comfy_api not importable in {sys.executable} ({type(exc).__name__}: {exc}); {where}"
    return (comfy_api.latest, folder_paths), None


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text("utf-8"))


def ui_to_api(ui: dict) -> dict:
    """What the frontend's graphToPrompt makes of a UI workflow (widget values + links), for our nodes."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        names = WIDGETS[node["type"]]
        values = node.get("widgets_values", [])
        if len(values) != len(names):
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values, expected {len(names)}")
        inputs = {n: v for n, v in zip(names, values) if n != CONTROL}
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                _, origin, slot, target, _, _ = links[socket["link"]]
                assert target == node["id"], f"link {socket['link']} does not end at node {node['id']}"
                inputs[socket["name"]] = [str(origin), slot]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def save_rgba_checkpoint(folder: Path, seed: int = 0, styles: list[str] | None = None) -> Path:
    """A tiny transparent (RGBA, 4-channel) checkpoint with random weights: enough for the plumbing."""
    import torch
    from conftest import set_prompt_template

    from ganvas.core.io import checkpoint
    from ganvas.core.model.config import ModelConfig
    from ganvas.core.model.networks import Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(ModelConfig(resolution=32, channels=4, g_channels=8, d_channels=8, cond_dim=64))
        for name, param in generator.named_parameters():
            if ".proj." in name:  # text modulation starts at zero; switch it on so prompts differ
                torch.nn.init.normal_(param, std=0.1)
    trained = {"note": "random weights for tests", **({"styles": styles} if styles else {})}
    return set_prompt_template(checkpoint.save_model(folder, generator.eval(), trained))  # takes styles, as emoji64


EVIDENCE = os.environ.get("GANVAS_COMFY_EVIDENCE") or None  # a file: the e2e tests append ComfyUI's answers


def record_evidence(name: str, data) -> None:
    """Append what ComfyUI answered (a /prompt body, an execution error) to GANVAS_COMFY_EVIDENCE, if set."""
    if EVIDENCE:
        with open(EVIDENCE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"case": name, "answer": data}, ensure_ascii=False) + "\n")
