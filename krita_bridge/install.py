"""Install the Krita plugin: copy it into Krita's resources folder, or pack a zip for Krita's importer.

Krita looks for `pykrita/*.desktop` in its resources folder and loads a plugin when kritarc says
`enable_<module>=true` under [python]. Paths (Krita 5, QStandardPaths):

| OS      | resources folder                     | kritarc                          |
|---------|--------------------------------------|----------------------------------|
| Linux   | $XDG_DATA_HOME/krita (~/.local/share) | $XDG_CONFIG_HOME/kritarc (~/.config) |
| macOS   | ~/Library/Application Support/krita  | ~/Library/Preferences/kritarc    |
| Windows | %APPDATA%\\krita                      | %LOCALAPPDATA%\\kritarc           |

A `ResourceDirectory=` entry at the top of kritarc (Krita's "resource folder" setting) moves the
resources folder, and is honoured here. Standard library only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from . import ENABLE_KEY, PLUGIN_MODULE, desktop_file, plugin_dir

SKIP = ("__pycache__", ".pyc", ".pyo")
INSTALLED_FILE = "installed.json"  # beside the plugin's modules; ganvas_krita/settings.py reads it


class InstallError(Exception):
    """A problem the user can fix (a path, a permission), said in one line."""


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def default_kritarc(platform: str | None = None, env=None) -> Path:
    platform, env = platform or sys.platform, os.environ if env is None else env
    if platform.startswith("win"):
        return Path(env.get("LOCALAPPDATA") or _home() / "AppData" / "Local") / "kritarc"
    if platform == "darwin":
        return _home() / "Library" / "Preferences" / "kritarc"
    return Path(env.get("XDG_CONFIG_HOME") or _home() / ".config") / "kritarc"


def default_resources_dir(platform: str | None = None, env=None, kritarc: Path | None = None) -> Path:
    platform, env = platform or sys.platform, os.environ if env is None else env
    custom = read_kritarc_entry(kritarc or default_kritarc(platform, env), "", "ResourceDirectory")
    if custom:
        return Path(custom)
    if platform.startswith("win"):
        return Path(env.get("APPDATA") or _home() / "AppData" / "Roaming") / "krita"
    if platform == "darwin":
        return _home() / "Library" / "Application Support" / "krita"
    return Path(env.get("XDG_DATA_HOME") or _home() / ".local" / "share") / "krita"


def _plugin_files():
    """(path in the plugin folder, source file) for every file the plugin needs (installed.json is written
    fresh by each install)."""
    source = plugin_dir()
    if not (source / "__init__.py").is_file() or not desktop_file().is_file():
        raise InstallError(f"the plugin files are missing from {source.parent} (a broken ganvas install?)")
    for path in sorted(source.rglob("*")):
        if (
            path.is_file()
            and not any(part == SKIP[0] for part in path.parts)
            and not path.name.endswith(SKIP[1:])
            and path.relative_to(source).as_posix() != INSTALLED_FILE
        ):
            yield path.relative_to(source), path


def installed_record(server_command: str | None = None) -> str:
    """installed.json: what the docker's Start local server runs when the user has not typed a command (the
    full path of this Python, since Krita's PATH rarely has the environment ganvas lives in)."""
    from .ganvas_krita import __version__

    return (
        json.dumps(
            {
                "server_command": server_command or local_server_command(),
                "python": sys.executable,
                "plugin_version": __version__,
            },
            indent=2,
        )
        + "\n"
    )


def install(resources: Path, server_command: str | None = None) -> Path:
    """Copy the plugin into `resources`/pykrita, replacing an older copy, and record the command that starts
    a local server (installed.json). Returns the plugin folder."""
    pykrita = Path(resources).expanduser() / "pykrita"
    target = pykrita / PLUGIN_MODULE
    try:
        pykrita.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{PLUGIN_MODULE}-", dir=pykrita))
        try:
            for rel, src in _plugin_files():
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, staging / rel)
            (staging / INSTALLED_FILE).write_text(installed_record(server_command), "utf-8")
            old = pykrita / f".{PLUGIN_MODULE}-old"
            if old.exists():
                shutil.rmtree(old)
            if target.exists():
                target.rename(old)  # swap in the new copy by rename, so Krita never sees half a plugin
            staging.rename(target)
            if old.exists():
                shutil.rmtree(old)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        shutil.copyfile(desktop_file(), pykrita / desktop_file().name)
    except OSError as exc:
        raise InstallError(f"cannot install into {pykrita}: {exc.strerror or exc}") from None
    return target


def build_zip(out: Path) -> Path:
    """A zip for Krita's Tools > Scripts > Import Python Plugin from File: the .desktop + the folder."""
    out = Path(out).expanduser()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(desktop_file(), desktop_file().name)
            written = set()
            for rel, src in _plugin_files():
                arcname = PurePosixPath(PLUGIN_MODULE, rel.as_posix())
                for folder in reversed(arcname.parents[:-1]):
                    # Krita's importer finds the module by its directory entry ("ganvas_krita/"), not its files.
                    if f"{folder}/" not in written:
                        zf.writestr(zipfile.ZipInfo(f"{folder}/"), "")
                        written.add(f"{folder}/")
                zf.write(src, arcname.as_posix())
            zf.writestr(f"{PLUGIN_MODULE}/{INSTALLED_FILE}", installed_record())
        os.replace(tmp, out)
    except OSError as exc:
        raise InstallError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


# --- kritarc (KConfig INI) ---------------------------------------------------------------------------------


def _section_of(line: str) -> str | None:
    stripped = line.strip()
    return stripped[1:-1] if stripped.startswith("[") and stripped.endswith("]") else None


def read_kritarc_entry(path: Path, group: str, key: str) -> str | None:
    """The value of `key` in `[group]` ("" = the entries before any group header), or None."""
    try:
        lines = Path(path).read_text("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    current = ""
    for line in lines:
        section = _section_of(line)
        if section is not None:
            current = section
        elif current == group and "=" in line:
            name, _, value = line.partition("=")
            if name.strip() == key:
                return value.strip()
    return None


def set_kritarc_entries(path: Path, group: str, entries: dict[str, str]) -> None:
    """Set keys in one [group] of kritarc, keeping every other line as it was (a line-level edit:
    KConfig's format is INI-like, but configparser would rewrite keys and comments)."""
    path = Path(path)
    try:
        lines = path.read_text("utf-8").splitlines() if path.exists() else []
    except OSError as exc:
        raise InstallError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InstallError(f"{path} is not UTF-8 text; not touching it") from None
    pending = dict(entries)
    out, current, end_of_group = [], "", None
    for line in lines:
        section = _section_of(line)
        if section is not None:
            if current == group:
                end_of_group = len(out)
            current = section
            out.append(line)
            continue
        if current == group and "=" in line:
            name = line.partition("=")[0].strip()
            if name in pending:
                out.append(f"{name}={pending.pop(name)}")
                continue
        out.append(line)
    if current == group and end_of_group is None:
        end_of_group = len(out)
    if pending:
        new = [f"{k}={v}" for k, v in pending.items()]
        if end_of_group is None:
            if out and out[-1].strip():
                out.append("")
            out += [f"[{group}]", *new]
        else:
            while end_of_group > 0 and not out[end_of_group - 1].strip():
                end_of_group -= 1  # keep the blank line between groups after the new keys
            out[end_of_group:end_of_group] = new
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.ganvas-tmp")
        tmp.write_text("\n".join(out) + "\n", "utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise InstallError(f"cannot write {path}: {exc.strerror or exc}") from None


def enable(kritarc: Path, server_command: str | None = None) -> None:
    """Turn the plugin on in kritarc (what Krita's Python Plugin Manager writes), and optionally set
    the command the docker's "Start local server" runs."""
    set_kritarc_entries(kritarc, "python", {ENABLE_KEY: "true"})
    if server_command:
        set_kritarc_entries(kritarc, "ganvas", {"server_command": server_command})


def local_server_command(python: str | None = None) -> str:
    """The command that starts `ganvas serve` with this very Python, whatever PATH Krita has."""
    return f"{shlex.quote(python or sys.executable)} -m ganvas serve --port {{port}}"


def venv_first_on_path(env=None) -> str | None:
    """The virtualenv whose `python3` comes first on PATH, if any. Krita's embedded Python finds its home
    through the first `python3` on PATH: started from such a shell it loads the venv's packages, which
    lack PyQt5, and no Python plugin loads at all."""
    env = os.environ if env is None else env
    found = shutil.which("python3", path=env.get("PATH", ""))
    if not found:
        return None
    venv = Path(found).parent.parent  # <venv>/bin/python3 (a symlink: the venv is where it sits, not its target)
    return str(venv) if (venv / "pyvenv.cfg").is_file() else None
