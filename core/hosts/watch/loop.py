"""The watch loop: recover, scan what is already there, then events + periodic rescans -> jobs.

Jobs run one at a time on the loop's thread; the observer thread only queues paths. `stop` (an
Event: SIGINT/SIGTERM in the CLI, tests directly) is checked between prompts, so stopping leaves the
running job in processing/, where the next start resumes it.

A job stalled by an I/O error is retried with backoff (retry_delay, doubling up to retry_max) while
the watcher runs; --once does not wait for it: it ends, and `unfinished` / `unclaimed` say what is left.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ganvas.core.hosts.watch.jobs import DEFAULT_MAX_BYTES, DEFAULT_MAX_PROMPTS, Limits, is_job_name
from ganvas.core.hosts.watch.layout import Inbox, WatchLock
from ganvas.core.hosts.watch.observer import EventSink, start_observer, stop_observer
from ganvas.core.hosts.watch.processor import DEFAULT_COMPACT_BYTES, DEFAULT_MAX_ATTEMPTS, JobProcessor
from ganvas.core.hosts.watch.runner import Pipelines
from ganvas.core.hosts.watch.stability import StabilityTracker

log = logging.getLogger("ganvas.watch")

DEFAULT_QUIET = 2.0
DEFAULT_RESCAN = 60.0


@dataclass
class WatchConfig:
    inbox: Path
    outbox: Path
    model: str | None = None
    poll: float | None = None  # None: native events (polling fallback); else PollingObserver(timeout)
    once: bool = False
    quiet: float = DEFAULT_QUIET
    empty_quiet: float | None = None  # None: 10 quiet periods
    rescan: float = DEFAULT_RESCAN
    duplicates: str = "skip"
    max_bytes: int = DEFAULT_MAX_BYTES
    max_prompts: int = DEFAULT_MAX_PROMPTS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    fsync: bool = False
    allow_model_paths: bool = False  # may a job's "model" be a checkpoint folder (else registered names only)
    retry_delay: float = 1.0  # first retry of a job stalled by an I/O error; doubles each time
    retry_max: float = 300.0
    compact_bytes: int = DEFAULT_COMPACT_BYTES


def check_folders(inbox: Path, outbox: Path) -> None:
    """The outbox may not be the inbox or one of its state folders (outputs would look like inputs)."""
    from ganvas.core.errors import GanvasError

    i, o = Path(inbox).resolve(), Path(outbox).resolve()
    box = Inbox(i)
    if o == i or o in (box.processing, box.done, box.failed, box.state):
        raise GanvasError(
            f"--out {outbox} must be a folder outside the inbox's own folders (e.g. a sibling of {inbox})"
        )


class Watcher:
    def __init__(
        self,
        config: WatchConfig,
        stop: threading.Event | None = None,
        pipelines: Pipelines | None = None,
        observer_factories: tuple | None = None,
    ):
        check_folders(config.inbox, config.outbox)
        self.config = config
        self.stop = stop or threading.Event()
        self.inbox = Inbox(config.inbox)
        self.pipelines = pipelines or Pipelines(config.model, config.allow_model_paths)
        self.observer_factories = observer_factories or (None, None)
        self.tracker = StabilityTracker(config.quiet, config.empty_quiet)
        self.processor: JobProcessor | None = None
        self.observer_kind = ""
        self.ready_event = threading.Event()  # set once recovery is over and files are being watched
        self.retries: dict[Path, tuple[float, float]] = {}  # stalled job -> (when to retry, current delay)

    @property
    def unfinished(self) -> list[tuple[str, str]]:
        """(file, reason) of jobs an I/O error left in processing/."""
        return sorted(self.processor.stalled.values()) if self.processor else []

    @property
    def unclaimed(self) -> list[tuple[str, str]]:
        """(file, reason) of inbox files that could not be claimed."""
        return sorted((p.name, r) for p, r in self.processor.unclaimed.items()) if self.processor else []

    def run(self) -> dict[str, int]:
        """Watch until stopped (or, with once, until the backlog is done); returns outcome counts."""
        cfg = self.config
        lock = WatchLock(self.inbox.lock_path)
        self.inbox.ensure()  # refuses symlinked inbox folders before anything moves
        lock.acquire()
        observer = None
        try:
            pipe = self.pipelines.warm_up()
            self.processor = JobProcessor(
                self.inbox,
                cfg.outbox,
                self.pipelines,
                limits=Limits(cfg.max_bytes, cfg.max_prompts),
                duplicates=cfg.duplicates,
                max_attempts=cfg.max_attempts,
                stop=self.stop,
                fsync=cfg.fsync,
                quiet=cfg.quiet,
                compact_bytes=cfg.compact_bytes,
            )
            log.info(
                "model %s (%d px, hash %s); inbox %s -> outbox %s",
                pipe.name,
                pipe.resolution,
                pipe.info.hash,
                self.inbox.root,
                cfg.outbox,
            )
            self.processor.recover()
            self._schedule_retries()
            sink = EventSink(self.inbox.root, is_job_name)
            if not cfg.once:
                observer, self.observer_kind = start_observer(sink, cfg.poll, *self.observer_factories)
            for path in self.inbox.candidates():  # startup scan: files dropped while nobody watched
                self.tracker.touch(path)
            log.info(
                "watching %s (%s; quiet period %g s, rescan every %g s)%s",
                self.inbox.root,
                self.observer_kind or "backlog only",
                cfg.quiet,
                cfg.rescan,
                f"; {len(self.tracker)} waiting" if len(self.tracker) else "",
            )
            self.ready_event.set()
            self._loop(sink)
        finally:
            stop_observer(observer)
            if self.processor is not None:
                self.processor.close()
            lock.release()
        if self.processor is None:
            return {}
        counts = dict(self.processor.counts)
        for key, items in (("not finished", self.unfinished), ("not claimed", self.unclaimed)):
            if items:
                counts[key] = len(items)
        return counts

    def _loop(self, sink: EventSink) -> None:
        cfg = self.config
        tick = min(max(cfg.quiet / 4, 0.05), 0.5)
        last_scan = time.monotonic()
        while not self.stop.is_set():
            for path in sink.drain():
                self.tracker.touch(path)
            now = time.monotonic()
            if now - last_scan >= (tick if cfg.once else cfg.rescan):
                self._rescan()
                last_scan = now
            ready = self.tracker.ready()
            if ready:
                # One job, then look again: a long job must not leave the others' stability checks stale.
                self._take(ready[0])
                continue
            if self._retry_one():
                continue
            if cfg.once and not len(self.tracker):
                return
            due = self.tracker.next_due()  # sleep until the next file's quiet period ends, or an event
            sink.wake.wait(tick if due is None else min(tick, max(due, 0.01)))
            sink.wake.clear()

    def _schedule_retries(self) -> None:
        """Give newly stalled jobs a first retry time; forget those that are no longer stalled."""
        if self.config.once:  # cron runs again; the next start resumes them
            return
        now = time.monotonic()
        for source, (name, _reason) in self.processor.stalled.items():
            if source not in self.retries:
                self.retries[source] = (now + self.config.retry_delay, self.config.retry_delay)
                log.info("%s: retry in %g s", name, self.config.retry_delay)
        for source in [s for s in self.retries if s not in self.processor.stalled]:
            del self.retries[source]

    def _retry_one(self) -> bool:
        """Retry the stalled job that is due first; True if one ran."""
        now = time.monotonic()
        due = [(when, source) for source, (when, _delay) in self.retries.items() if when <= now]
        if not due:
            return False
        source = min(due)[1]
        delay = self.retries.pop(source)[1]
        self._guarded(self.processor.retry, source)
        if source in self.processor.stalled:
            delay = min(delay * 2, self.config.retry_max)
            self.retries[source] = (time.monotonic() + delay, delay)
            log.info("%s: retry in %g s", self.processor.stalled[source][0], delay)
        self._schedule_retries()
        return True

    def _take(self, path: Path) -> None:
        self.tracker.discard(path)
        self._guarded(self.processor.take, path)
        self._schedule_retries()

    def _guarded(self, step, path: Path) -> None:
        try:
            step(path)
        except OSError as exc:  # the processor keeps I/O errors; this is a last resort: report, keep watching
            log.error("cannot process %s: %s", path.name, exc)
        except Exception:  # a bug must not take the watcher down; the job resumes on restart
            log.exception("unexpected error while processing %s", path.name)

    def _rescan(self) -> None:
        """The safety net for missed events; with --once it only re-stats the backlog it started with."""
        if self.config.once:
            for path in self.tracker.paths():
                self.tracker.touch(path)
            return
        for path in self.inbox.candidates():
            self.tracker.touch(path)
        for path in self.tracker.paths():  # forget files that were removed
            self.tracker.touch(path)
        for path in [p for p in self.processor.unclaimed if not p.exists()]:  # renamed or taken away
            del self.processor.unclaimed[path]
