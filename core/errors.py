"""The errors a host shows as one line (no traceback), and how any exception becomes that one line.

They carry a `param` where one field is at fault, so an HTTP host can name it (OpenAI error shape) without
parsing messages. Torch-free: light hosts import this module.
"""

from __future__ import annotations


class GanvasError(Exception):
    """Base of the errors a host should show as one line (no traceback)."""


def one_line(exc: BaseException, *, with_type: bool = False) -> str:
    """An exception as one line (whitespace collapsed), as hosts and plugin reports show it.

    with_type=True always starts with the exception's type ("ImportError: ...": a plugin's failure, where the
    type is the clue); otherwise the message stands alone, and the type is added only where the message says
    too little: an empty one, or a KeyError or an OSError that names no file ("KeyError: 'x'")."""
    text = " ".join(str(exc).split())
    if with_type:
        return f"{type(exc).__name__}: {text or '(no message)'}"
    if not text or isinstance(exc, (KeyError, OSError)) and not getattr(exc, "filename", None):
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text


class InvalidRequest(GanvasError, ValueError):
    """A malformed request field (wrong type or range). `param` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class RequestRefused(GanvasError):
    """Raised by a `ganvas_check_request` hook to refuse a request; `reason` is shown to the user.

    `param` optionally names the field at fault ("prompt", "n"); `plugin` is filled in by the plugin
    manager with the name of the plugin that refused.
    """

    def __init__(self, reason: str, param: str | None = None, plugin: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.param = param
        self.plugin = plugin

    def __str__(self) -> str:
        return f"request refused by {self.plugin}: {self.reason}" if self.plugin else f"request refused: {self.reason}"


class ModelNotFound(GanvasError, LookupError):
    """A model name that no plugin registered and that is not a checkpoint folder."""
