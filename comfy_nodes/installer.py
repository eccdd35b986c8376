"""`ganvas comfy install COMFYUI_DIR [--copy]`: put the ComfyUI node pack into COMFYUI_DIR/custom_nodes/ganvas.

The installer and its click command (added to the CLI by the built-in plugin plugins/commands.py). It sits
beside the pack it installs, but the pack's __init__.py (what ComfyUI imports) never imports it. Not named
install.py: ComfyUI-Manager runs a node pack's install.py when it installs or updates the pack.

The pack (comfy_nodes/ of this package) is linked by default, so it follows this ganvas install; --copy
copies it (Windows without symlink rights, or a ComfyUI on another machine). The nodes import
`ganvas.core` when they run, so ganvas must also be installed in the Python that runs ComfyUI; the
command checks that Python when it can find it and prints the pip line when ganvas is missing there.

Nothing is lost: an existing custom_nodes/ganvas that this command did not make is left alone (error),
a link or an earlier copy made by it is replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ganvas import __version__

PACK_DIR = Path(__file__).resolve().parent  # comfy_nodes/, the pack itself
PACK_NAME = "ganvas"  # the folder name under custom_nodes
MARKER = ".ganvas-pack.json"  # written into a copy, so a later install knows the copy is ours
MODEL_FOLDER = "ganvas"  # ComfyUI/models/ganvas: the pack registers it with folder_paths


class InstallError(Exception):
    """One-line install failure that names the path at fault."""


@dataclass
class InstallResult:
    target: Path
    mode: str  # "link" or "copy"
    replaced: str | None  # what was there before ("link to ...", "earlier copy"), None if nothing
    models_dir: Path | None  # ComfyUI/models/ganvas, created when ComfyUI has a models/ folder


def custom_nodes_dir(comfyui_dir: str | os.PathLike) -> Path:
    """COMFYUI_DIR/custom_nodes; created only when COMFYUI_DIR is clearly a ComfyUI checkout."""
    root = Path(comfyui_dir).expanduser()
    if not root.is_dir():
        raise InstallError(f"{root}: no such folder (give the ComfyUI folder, the one with main.py)")
    nodes = root / "custom_nodes"
    if nodes.is_dir():
        return nodes
    if (root / "main.py").is_file() and (root / "comfy").is_dir():
        nodes.mkdir()
        return nodes
    raise InstallError(f"{root} does not look like ComfyUI: it has no custom_nodes/ folder and no main.py")


def _is_our_copy(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text("utf-8")).get("pack") == PACK_NAME
    except (OSError, ValueError, AttributeError):
        return False


def _describe_existing(target: Path) -> str | None:
    if target.is_symlink():
        return f"link to {os.readlink(target)}"
    if not target.exists():
        return None
    if target.is_dir() and _is_our_copy(target):
        return "earlier copy"
    raise InstallError(
        f"{target} already exists and was not made by `ganvas comfy install`; move it away first (nothing was changed)"
    )


def _remove(target: Path) -> None:
    if target.is_symlink() or target.is_file():
        target.unlink()
    else:
        shutil.rmtree(target)


def _copy_pack(source: Path, target: Path) -> None:
    staging = target.with_name(f".{target.name}.installing")
    if staging.exists() or staging.is_symlink():
        _remove(staging)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (staging / MARKER).write_text(
        json.dumps({"pack": PACK_NAME, "ganvas_version": __version__, "source": str(source)}, indent=2) + "\n", "utf-8"
    )
    if target.exists() or target.is_symlink():
        _remove(target)
    staging.rename(target)  # the copy appears complete or not at all


def _link_pack(source: Path, target: Path) -> None:
    staging = target.with_name(f".{target.name}.installing")
    if staging.exists() or staging.is_symlink():
        _remove(staging)
    try:
        staging.symlink_to(source, target_is_directory=True)
    except OSError as exc:
        raise InstallError(f"cannot create a symbolic link at {target} ({exc.strerror or exc}); use --copy") from None
    if target.exists() or target.is_symlink():
        _remove(target)
    os.replace(staging, target)


def install(comfyui_dir: str | os.PathLike, copy: bool = False, source: Path = PACK_DIR) -> InstallResult:
    """Link (or copy) the pack to COMFYUI_DIR/custom_nodes/ganvas and create COMFYUI_DIR/models/ganvas."""
    if not (source / "__init__.py").is_file():
        raise InstallError(f"the node pack is missing from this ganvas install ({source}/__init__.py)")
    nodes = custom_nodes_dir(comfyui_dir)
    target = nodes / PACK_NAME
    replaced = _describe_existing(target)
    if not copy and target.is_symlink() and target.resolve() == source.resolve():
        replaced = "the same link"
    else:
        (_copy_pack if copy else _link_pack)(source, target)
    models_root = nodes.parent / "models"
    models_dir = None
    if models_root.is_dir():
        models_dir = models_root / MODEL_FOLDER
        models_dir.mkdir(exist_ok=True)
    return InstallResult(target, "copy" if copy else "link", replaced, models_dir)


def find_comfy_python(comfyui_dir: str | os.PathLike) -> Path | None:
    """The Python a ComfyUI folder usually runs with: its venv, or the portable build's python_embeded."""
    root = Path(comfyui_dir).expanduser()
    for candidate in (
        root / ".venv" / "bin" / "python",
        root / "venv" / "bin" / "python",
        root / ".venv" / "Scripts" / "python.exe",
        root / "venv" / "Scripts" / "python.exe",
        root.parent / "python_embeded" / "python.exe",
    ):
        if candidate.is_file():
            return candidate
    return None


def has_ganvas(python: str | os.PathLike) -> bool | None:
    """Whether `python` can import ganvas (None when it cannot be run). Does not import torch."""
    code = (
        "import importlib.util, sys\n"
        "try:\n    found = importlib.util.find_spec('ganvas.core') is not None\n"
        "except ImportError:\n    found = False\n"
        "sys.exit(0 if found else 3)\n"
    )
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {0: True, 3: False}.get(done.returncode)


def pip_source() -> str:
    """What to pip-install into ComfyUI's Python: this source tree when it is one, else the package."""
    repo = PACK_DIR.parent
    return str(repo) if (repo / "pyproject.toml").is_file() else "ganvas"


def make_comfy_group():
    """The `ganvas comfy` click group (built on demand: click stays out of plugin loading)."""
    import click

    @click.group("comfy")
    def comfy_group():
        """The ComfyUI node pack (nodes: Ganvas Model Loader, Generate, Interpolate, Encode/Mix Prompts, Save)."""

    @comfy_group.command("install")
    @click.argument("comfyui_dir", type=click.Path(file_okay=False))
    @click.option("--copy", "copy", is_flag=True, help="copy the pack instead of linking it")
    @click.option(
        "--python",
        "python",
        type=click.Path(dir_okay=False),
        help="the Python that runs ComfyUI, to check that ganvas is installed there  "
        "[default: COMFYUI_DIR's venv, if any]",
    )
    def install_command(comfyui_dir, copy, python):
        """Install the node pack into COMFYUI_DIR/custom_nodes/ganvas (a link, or a copy with --copy).

        Checkpoint folders (config.json + model.safetensors) go in COMFYUI_DIR/models/ganvas; ganvas must
        be installed in ComfyUI's Python too. Restart ComfyUI afterwards.

        \b
        Examples:
          ganvas comfy install ~/ComfyUI
          ganvas comfy install ~/ComfyUI --copy --python ~/ComfyUI/.venv/bin/python
        """
        try:
            result = install(comfyui_dir, copy=copy)
        except InstallError as exc:
            raise click.ClickException(str(exc)) from None
        for line, to_stderr in report_lines(result, comfyui_dir, python):
            click.echo(line, err=to_stderr)

    return comfy_group


def report_lines(result: InstallResult, comfyui_dir, python=None) -> list[tuple[str, bool]]:
    """What the command prints: (line, goes to stderr)."""
    if result.replaced == "the same link":
        lines = [(f"{result.target} already links to {PACK_DIR}", False)]
    else:
        what = (
            f"linked {result.target} -> {PACK_DIR}" if result.mode == "link" else f"copied the pack to {result.target}"
        )
        lines = [(what + (f" (replaced the {result.replaced})" if result.replaced else ""), False)]
    if result.models_dir is not None:
        lines.append((f"model folder: {result.models_dir} (put checkpoint folders here)", False))
    python = Path(python) if python else find_comfy_python(comfyui_dir)
    if python is None:
        lines.append(
            (
                "ganvas must be installed in the Python that runs ComfyUI: "
                f"<that python> -m pip install {pip_source()}",
                False,
            )
        )
        return lines
    found = has_ganvas(python)
    if found:
        lines.append((f"ganvas is importable from {python}", False))
    elif found is False:
        lines.append((f"ganvas is not installed in {python}; run: {python} -m pip install {pip_source()}", True))
    else:
        lines.append((f"could not run {python} to check for ganvas", True))
    return lines
