"""Run blocking work on worker threads and hand the outcome back on Qt's main thread.

Krita's UI thread must never wait on the network, nor on scaling a large image. Each task gets a
`Call` (so it can be cancelled) and a ticket; `finished(ticket)` is emitted from the worker thread,
and Qt queues it to the receiver's thread (the UI), where the docker ignores tickets it no longer
waits for. Network calls get a thread each (`submit`); image work (`submit_image`) runs on one
QThreadPool thread of its own, so two large insertions never scale at once.
"""

from __future__ import annotations

import itertools
import logging
import threading
import traceback
from typing import Any, Callable

from .client import Call, ClientError
from .qt import QObject, QRunnable, QThreadPool, Signal

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


class _Job(QRunnable):
    def __init__(self, tasks: "Tasks", ticket: Ticket, work: Callable[[Call], Any]):
        super().__init__()  # auto-delete: QThreadPool.start takes ownership and deletes it after run()
        self.tasks, self.ticket, self.work = tasks, ticket, work

    def run(self):
        self.tasks._run(self.ticket, self.work)


class Tasks(QObject):
    finished = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.image_pool = QThreadPool(self)
        self.image_pool.setMaxThreadCount(1)

    def submit(self, kind: str, work: Callable[[Call], Any]) -> Ticket:
        ticket = Ticket(kind)
        threading.Thread(target=self._run, args=(ticket, work), name=f"ganvas-{kind}-{ticket.id}", daemon=True).start()
        return ticket

    def submit_image(self, kind: str, work: Callable[[Call], Any]) -> Ticket:
        """Image work (QImage only: Qt allows it off the UI thread); never Krita's API, which is UI-thread only."""
        ticket = Ticket(kind)
        self.image_pool.start(_Job(self, ticket, work))
        return ticket

    def wait_images(self, msecs: int = -1) -> bool:
        """Block until image work is done (Krita closing; tests)."""
        return self.image_pool.waitForDone(msecs)

    def _run(self, ticket: Ticket, work: Callable[[Call], Any]) -> None:
        try:
            ticket.result = work(ticket.call)
        except ClientError as exc:
            ticket.error = exc
        except Exception as exc:  # a bug: reported in the docker, with the traceback in Krita's log
            log.error("ganvas %s task failed:\n%s", ticket.kind, traceback.format_exc())
            ticket.error = ClientError("internal", f"internal error in the ganvas plugin ({type(exc).__name__}: {exc})")
        try:
            self.finished.emit(ticket)
        except RuntimeError:  # the receiver was deleted while the call ran (Krita closing)
            pass
