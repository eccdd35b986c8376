"""Shared fixtures: a tiny checkpoint, an isolated plugin manager, really installed test plugins.

Every test starts without the GANVAS_* settings the pipeline and plugins read (PLUGIN_ENV) and with
entry-point loading off for the shared manager (GANVAS_PLUGINS=""), so neither the caller's
environment nor whatever is installed can change the results; tests that exercise entry points
install their plugins into a private folder and opt in. GANVAS_THREADS and GANVAS_CACHE are left alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)  # see FINDINGS.md: one thread is faster on these shared 2-core machines
# pytest parses source files with `ast` to format a failure's long traceback. From a deep stack (an
# openai SDK call failing inside a server test, after other test files ran) that parse overflowed Python's
# default limit of 1000 frames, and CPython 3.11 turned the overflow into "SystemError: AST constructor
# recursion depth mismatch", an INTERNALERROR that aborted the whole session at the first such failure.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))

from ganvas.core.plugin_manager import GanvasPlugins, reset_plugin_manager, set_plugin_manager  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# Checkpoint folders shipped in models/ (what the default backend registers by folder name).
SHIPPED_MODELS = sorted(p.name for p in (REPO / "models").glob("*") if (p / "config.json").exists())
EXAMPLE_PLUGIN = REPO / "examples" / "ganvas-example-plugin"
BROKEN_PLUGIN = REPO / "tests" / "fixtures" / "broken-plugin"
PLUGIN_ENV = (
    "GANVAS_PLUGINS",
    "GANVAS_DISABLE_PLUGINS",
    "GANVAS_TRACE_PLUGINS",
    "GANVAS_STRICT_PLUGINS",
    "GANVAS_MODEL",
    "GANVAS_MODELS_PATH",
    "GANVAS_DEVICE",
    "GANVAS_BLOCKLIST",
    "GANVAS_MAX_N",
    "GANVAS_MAX_PROMPT_CHARS",
    "GANVAS_DEBUG",
    "GANVAS_VERBOSITY",
    "GANVAS_EXAMPLE_HISTORY",
)


def make_tiny_generator(seed: int = 0, text_encoder: str = "minilm"):
    """A 32 px generator, a few thousand parameters, text modulation switched on (it starts at zero)."""
    from ganvas.core.model.config import ModelConfig
    from ganvas.core.model.networks import Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(
            ModelConfig(
                resolution=32, z_dim=16, g_channels=8, d_channels=8, cond_dim=32, max_mult=4, text_encoder=text_encoder
            )
        )
        for name, param in generator.named_parameters():
            if ".proj." in name:
                torch.nn.init.normal_(param, std=0.1)
    return generator.eval()


# How a style word enters the prompt of the shipped emoji64 model (its config.json "prompt_template").
EMOJI_PROMPT_TEMPLATE = "{prompt}; {style} style"


def set_prompt_template(folder: Path, template: str | None = EMOJI_PROMPT_TEMPLATE) -> Path:
    """Give a checkpoint folder's config.json a "prompt_template" (None: remove it, the model takes no style)."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.pop("prompt_template", None)
    if template is not None:
        config["prompt_template"] = template
    path.write_text(json.dumps(config, indent=2) + "\n")
    return folder


def save_tiny_checkpoint(
    folder: Path,
    seed: int = 0,
    text_encoder: str = "minilm",
    styles: list[str] | None = None,
    prompt_template: str | None = EMOJI_PROMPT_TEMPLATE,
) -> Path:
    """A tiny checkpoint; by default it takes style words as emoji64 does (prompt_template=None: no styles)."""
    from ganvas.core.io.checkpoint import save_model

    trained = {"note": "random weights for tests", **({"styles": styles} if styles else {})}
    folder = save_model(
        folder,
        make_tiny_generator(seed, text_encoder),
        trained=trained,
        card="# tiny\n\nRandom weights, for tests only.\n",
    )
    return set_prompt_template(folder, prompt_template)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch):
    for name in PLUGIN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GANVAS_PLUGINS", "")
    from ganvas.core import policy as request_policy

    request_policy.configure()
    reset_plugin_manager()
    yield
    reset_plugin_manager()
    request_policy.configure()


@pytest.fixture
def plugins() -> GanvasPlugins:
    """A fresh manager with the built-ins only, installed as the shared one for the test."""
    manager = GanvasPlugins(entry_points=False, env={})
    previous = set_plugin_manager(manager)
    yield manager
    set_plugin_manager(previous)


@pytest.fixture
def pipe(plugins, tiny_checkpoint):
    from ganvas.core.pipeline import Pipeline

    return Pipeline.load(str(tiny_checkpoint), plugins=plugins)


@pytest.fixture(scope="session")
def installed_plugins(tmp_path_factory) -> Path:
    """pip-install the example plugin and the broken fixture plugin (real wheels, dist-info, entry points)
    into a private folder; tests put it on sys.path or PYTHONPATH. Sources are copied first so the build
    leaves nothing in the repository."""
    work = tmp_path_factory.mktemp("plugin-src")
    sources = [shutil.copytree(src, work / src.name) for src in (EXAMPLE_PLUGIN, BROKEN_PLUGIN)]
    target = tmp_path_factory.mktemp("site-packages")
    # Offline build with the environment's setuptools when it has one (Python < 3.12 venvs do);
    # otherwise let pip fetch setuptools into an isolated build environment.
    offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            *offline,
            "--target",
            str(target),
            *map(str, sources),
        ],
        check=True,
    )
    return target


def pixels(image):
    import numpy as np

    return np.asarray(image.convert("RGB"))


def run_ganvas(args: list[str], env_extra: dict | None = None, cwd: Path | None = None, timeout: int = 120):
    """Run the real command line in a fresh process (the console script's code path)."""
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "ganvas.core.hosts.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture
def messy_imagefolder(tmp_path):
    """An imagefolder with RGBA, non-square, corrupt, missing and zero-byte entries."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(12):
        arr = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)  # non-square: centre-cropped
        Image.fromarray(arr).save(folder / f"img{i}.png")
        rows.append(
            {"file_name": f"img{i}.png", "text": f"caption number {i % 4}", "style": ["noto", "twemoji", "noto"][i % 3]}
        )
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red -> white
    rgba.save(folder / "alpha.png")
    rows.append({"file_name": "alpha.png", "text": "a transparent image"})
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    rows.append({"file_name": "corrupt.png", "text": "broken"})
    (folder / "empty.png").write_bytes(b"")
    rows.append({"file_name": "empty.png", "text": "empty"})
    rows.append({"file_name": "missing.png", "text": "not there"})
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder
