"""File-system events from watchdog: the native observer, falling back to polling when it cannot start.

inotify refuses to start when the per-user watch or instance limit is used up (OSError ENOSPC /
EMFILE from watchdog's inotify_c.py); native events also never arrive on NFS/SMB shares or some Docker
bind mounts, hence `--poll SECONDS`. Events only say "look at this path"; the stability tracker and
the periodic rescan decide what is ready, so a dropped event costs latency, never a job.
Without watchdog installed at all, the watcher still works from its own rescans (a warning says so).
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger("ganvas.watch")

LIMIT_ERRNOS = (errno.ENOSPC, errno.EMFILE, errno.ENFILE)
DEFAULT_FALLBACK_POLL = 1.0

INOTIFY_HINT = (
    "raise the limit with `sudo sysctl fs.inotify.max_user_watches=524288` "
    "(and fs.inotify.max_user_instances), or use --poll SECONDS"
)


class EventSink:
    """Collects paths of interest from any observer thread; the loop drains them."""

    def __init__(self, folder: Path, accept: Callable[[str], bool]):
        self.folder = Path(folder).resolve()
        self.accept = accept
        self.paths: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self.wake = threading.Event()

    def offer(self, raw_path: str | bytes) -> None:
        path = Path(raw_path.decode() if isinstance(raw_path, bytes) else raw_path)
        # Only direct children: processing/, done/ and failed/ live below the inbox.
        if path.parent.resolve() == self.folder and self.accept(path.name):
            self.paths.put(self.folder / path.name)
            self.wake.set()

    def drain(self) -> list[Path]:
        out = []
        while True:
            try:
                out.append(self.paths.get_nowait())
            except queue.Empty:
                return out


def _handler(sink: EventSink):
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.is_directory or event.event_type in ("opened", "closed_no_write"):
                return
            sink.offer(event.src_path)
            dest = getattr(event, "dest_path", "")
            if dest:  # a writer that renames its temp file into place (on_moved's dest_path)
                sink.offer(dest)

    return Handler()


def start_observer(sink: EventSink, poll: float | None = None, native_factory=None, polling_factory=None):
    """Start an observer on sink.folder; returns (observer or None, description)."""
    try:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver
    except ImportError:
        log.warning("watchdog is not installed; finding new files by rescanning only (pip install watchdog)")
        return None, "rescans only (watchdog not installed)"
    native_factory = native_factory or Observer
    polling_factory = polling_factory or PollingObserver
    handler = _handler(sink)
    if poll is None:
        observer = native_factory()
        try:
            observer.schedule(handler, str(sink.folder), recursive=False)
            observer.start()
            return observer, f"native observer ({type(observer).__name__})"
        except OSError as exc:
            if exc.errno not in LIMIT_ERRNOS:
                raise
            _stop_quietly(observer)
            log.warning(
                "native file events unavailable (%s); polling every %.1f s instead. To use native events, %s",
                exc.strerror or exc,
                DEFAULT_FALLBACK_POLL,
                INOTIFY_HINT,
            )
            poll = DEFAULT_FALLBACK_POLL
    observer = polling_factory(timeout=poll)
    observer.schedule(handler, str(sink.folder), recursive=False)
    observer.start()
    return observer, f"polling every {poll:g} s"


def stop_observer(observer) -> None:
    if observer is not None:
        _stop_quietly(observer)


def _stop_quietly(observer) -> None:
    # watchdog's inotify emitter logs a spurious ERROR ("queue_events() called when the thread is
    # inactive") when it is stopped while blocked in a read; hide that one shutdown race from users.
    noisy = logging.getLogger("watchdog.observers.inotify")
    level = noisy.level
    noisy.setLevel(logging.CRITICAL)
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=5)
    except Exception as exc:  # shutting down: report, never hang or mask the real error
        log.debug("observer stop failed: %s", exc)
    finally:
        noisy.setLevel(level)
