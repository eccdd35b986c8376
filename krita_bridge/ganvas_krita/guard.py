"""Keep plugin bugs out of Krita's traceback dialog: slots report errors in the docker instead.

Krita installs a sys.excepthook that opens a modal "Python error" dialog. A painter should see a line
in the docker, not that. `guarded` wraps slots: an exception is logged with its traceback (stderr,
which Krita's log keeps), shown through the owner's `show_internal_error`, and passed to `listeners`
(the end-to-end test registers one so that a bug fails the test at once, not at a timeout).
"""

from __future__ import annotations

import functools
import logging
import traceback
from typing import Callable

log = logging.getLogger("ganvas.krita")

listeners: list[Callable[[BaseException, str], None]] = []


def report(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log.error("ganvas plugin error:\n%s", text)
    for listener in list(listeners):
        try:
            listener(exc, text)
        except Exception:  # a listener must not turn one error into two
            log.exception("ganvas error listener failed")
    return text


def guarded(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            report(exc)
            show = getattr(self, "show_internal_error", None)
            if show is not None:
                try:
                    show(exc)
                except Exception:
                    log.exception("ganvas could not show an error")
            return None

    return wrapper
