"""Run blocking client calls on worker threads and hand the outcome back on Qt's main thread.

Krita's UI thread must never wait on the network. Each task gets a `Call` (so it can be cancelled)
and a ticket; `finished(ticket)` is emitted from the worker thread, and Qt queues it to the receiver's
thread (the UI), where the docker ignores tickets it no longer waits for.
"""
from __future__ import annotations

import itertools
import logging
import threading
import traceback
from typing import Any, Callable

from .client import Call, ClientError
from .qt import QObject, Signal

log = logging.getLogger("ganvas.krita")


class Ticket:
    _ids = itertools.count(1)

    def __init__(self, kind: str):
        self.id = next(self._ids)
        self.kind = kind
        self.call = Call()
        self.result: Any = None
        self.error: ClientError | None = None

    def cancel(self) -> None:
        self.call.cancel()


class Tasks(QObject):
    finished = Signal(object)

    def submit(self, kind: str, work: Callable[[Call], Any]) -> Ticket:
        ticket = Ticket(kind)
        threading.Thread(target=self._run, args=(ticket, work), name=f"ganvas-{kind}-{ticket.id}",
                         daemon=True).start()
        return ticket

    def _run(self, ticket: Ticket, work: Callable[[Call], Any]) -> None:
        try:
            ticket.result = work(ticket.call)
        except ClientError as exc:
            ticket.error = exc
        except Exception as exc:  # a bug: reported in the docker, with the traceback in Krita's log
            log.error("ganvas %s task failed:\n%s", ticket.kind, traceback.format_exc())
            ticket.error = ClientError("internal", f"internal error in the ganvas plugin ({type(exc).__name__}: "
                                                   f"{exc})")
        try:
            self.finished.emit(ticket)
        except RuntimeError:  # the receiver was deleted while the call ran (Krita closing)
            pass
