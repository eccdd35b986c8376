"""The docker's persisted settings: Krita's readSetting/writeSetting (group "ganvas" in kritarc).

Krita stores strings, so every value is parsed back here, and a value that no longer parses (an edited
kritarc, an older plugin version) falls back to its default instead of breaking the docker.
"""
from __future__ import annotations

from typing import Callable

GROUP = "ganvas"

DEFAULTS = {
    "server_url": "http://127.0.0.1:8000",
    # {port} and {host} come from the server URL; `ganvas krita install` writes the full path of its Python here.
    "server_command": "ganvas serve --port {port}",
    "api_key": "",          # stored in plain text in kritarc, like every Krita setting; local servers need none
    "model": "",
    "style": "",
    "count": "4",
    "truncation": "1.0",
    "size": "0",            # 0 = the model's native resolution
    "seed": "0",
    "seed_locked": "false",
    "live": "false",
    "timeout": "30",
}


class Settings:
    def __init__(self, read: Callable[[str, str], str], write: Callable[[str, str], None]):
        self._read, self._write = read, write

    @classmethod
    def krita(cls) -> "Settings":
        from krita import Krita

        app = Krita.instance()
        return cls(lambda key, default: app.readSetting(GROUP, key, default),
                   lambda key, value: app.writeSetting(GROUP, key, value))

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

    def flag(self, key: str) -> bool:
        return self.text(key).strip().lower() in ("true", "1", "yes", "on")

    def set(self, key: str, value) -> None:
        if key not in DEFAULTS:
            raise KeyError(f"unknown ganvas setting {key!r}")
        if isinstance(value, bool):
            value = "true" if value else "false"
        self._write(key, str(value))
