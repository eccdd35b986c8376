"""The docker's persisted settings: Krita's readSetting/writeSetting (group "ganvas" in kritarc).

Krita stores strings, so every value is parsed back here, and a value that no longer parses (an edited
kritarc, an older plugin version) falls back to its default instead of breaking the docker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

GROUP = "ganvas"
# `ganvas krita install` writes this file beside the plugin: the command that starts `ganvas serve` with the
# Python it was run from (Krita's PATH rarely has that environment's `ganvas`).
INSTALLED_FILE = Path(__file__).resolve().with_name("installed.json")
FALLBACK_SERVER_COMMAND = "ganvas serve --port {port}"
INSTALLER_TAIL = " -m ganvas serve --port {port}"  # install.local_server_command()
# What installers before 0.2 recorded (the CLI module has moved since): such a stored command gives way too.
LEGACY_INSTALLER_TAILS = (" -m ganvas.core.cli serve --port {port}",)

DEFAULTS = {
    "server_url": "http://127.0.0.1:8000",
    # {port} and {host} come from the server URL; empty = the command `ganvas krita install` recorded
    # (installed.json), else FALLBACK_SERVER_COMMAND. `ganvas krita install --enable` writes it here too.
    "server_command": "",
    "api_key": "",  # stored in plain text in kritarc, like every Krita setting; local servers need none
    "model": "",
    "style": "",
    "count": "4",
    "truncation": "1.0",
    "size": "0",  # 0 = the model's native resolution
    "seed": "0",
    "seed_locked": "false",
    "live": "false",
    "timeout": "30",
    "fit": "inside",  # canvas.FITS
    "scaling": "smooth",  # canvas.SCALINGS
    "options_open": "true",
}


def recorded_server_command(path: Path | None = None) -> str | None:
    """The command `ganvas krita install` recorded beside the plugin, or None (a copy made by hand, a zip
    from another machine, an unreadable file)."""
    try:
        data = json.loads(Path(path or INSTALLED_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    command = data.get("server_command") if isinstance(data, dict) else None
    return command.strip() if isinstance(command, str) and command.strip() else None


class Settings:
    def __init__(self, read: Callable[[str, str], str], write: Callable[[str, str], None]):
        self._read, self._write = read, write

    @classmethod
    def krita(cls) -> "Settings":
        from krita import Krita

        app = Krita.instance()
        return cls(
            lambda key, default: app.readSetting(GROUP, key, default),
            lambda key, value: app.writeSetting(GROUP, key, value),
        )

    @classmethod
    def memory(cls, values: dict | None = None) -> "Settings":
        """For tests and for hosts without persistent settings."""
        store = dict(values or {})
        settings = cls(lambda key, default: store.get(key, default), store.__setitem__)
        settings.store = store
        return settings

    def text(self, key: str) -> str:
        value = self._read(key, DEFAULTS[key])
        return DEFAULTS[key] if value is None else str(value)

    def integer(self, key: str, low: int, high: int) -> int:
        try:
            value = int(self.text(key))
        except ValueError:
            value = int(DEFAULTS[key])
        return min(max(value, low), high)

    def number(self, key: str, low: float, high: float) -> float:
        try:
            value = float(self.text(key))
        except ValueError:
            value = float(DEFAULTS[key])
        if value != value:  # NaN
            value = float(DEFAULTS[key])
        return min(max(value, low), high)

    def choice(self, key: str, allowed) -> str:
        value = self.text(key).strip()
        return value if value in allowed else DEFAULTS[key]

    def server_command(self) -> str:
        """What Start local server runs: the user's own command, else the recorded one, else the fallback.
        What older versions stored without the user choosing it (the fallback, saved on every start, and
        the installer's `<python> -m ganvas serve ...`) gives way to the newest recorded command."""
        stored = self.text("server_command").strip()
        recorded = recorded_server_command()
        if (
            stored
            and stored != FALLBACK_SERVER_COMMAND
            and not (recorded and stored.endswith((INSTALLER_TAIL, *LEGACY_INSTALLER_TAILS)))
        ):
            return stored
        return recorded or stored or FALLBACK_SERVER_COMMAND

    def has(self, key: str) -> bool:
        """True when the user's settings hold a value for `key` (not only the default)."""
        value = self._read(key, "")
        return value is not None and str(value) != ""

    def flag(self, key: str) -> bool:
        return self.text(key).strip().lower() in ("true", "1", "yes", "on")

    def set(self, key: str, value) -> None:
        if key not in DEFAULTS:
            raise KeyError(f"unknown ganvas setting {key!r}")
        if isinstance(value, bool):
            value = "true" if value else "false"
        self._write(key, str(value))
