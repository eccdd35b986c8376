"""The append-only JSONL journal: what happened to each job, the record that crash recovery reads.

Events (one JSON object per line, all with "t" and "job"):
  claimed    the input was renamed into processing/ (file, path, seed_base)
  resumed    a restart picked up an unfinished job
  output     the job's output folder was chosen (dir, relative to the outbox); written before mkdir
  done       finished; the input moves to `dest` (sha256, key for duplicate detection, images)
  duplicate  same content and model as an earlier done job (`of`); the input moves to `dest`
  failed     the input moves to `dest` with an error file beside it (error)
  stalled    an I/O error stopped the job (error); it stays in processing/ and is retried
  retried    the running watcher tried a stalled job again (not a restart: no attempt is counted)
  changed    the input changed after it was read (a writer still writing); the job runs again
  compacted  written by compaction, last: duplicates it folded away, size of what it kept (bytes)

Every record is written with one os.write on an O_APPEND descriptor, so a SIGKILL leaves whole lines
(at worst one torn last line, which the reader skips). A terminal record (done/duplicate/failed) is
written *before* the input is moved, so recovery can always finish the move.

Compaction (at start and whenever the journal doubled) keeps what a restart needs: every record of a job
whose input is still in processing/, plus one short `done` record per duplicate-detection key; it is
written to a temporary file, fsynced and renamed over the journal, so a crash leaves the old or the new.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from ganvas.core.io.atomic import TMP_SUFFIX, atomic_open

log = logging.getLogger("ganvas.watch")

TERMINAL = ("done", "duplicate", "failed")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Journal:
    def __init__(self, path: Path, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as fh:  # a torn last line must not swallow the next record
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        os.write(fd, b"\n")
            self._fd = fd
        return self._fd

    def append(self, event: str, job: str, **fields: Any) -> dict[str, Any]:
        record = {"t": _now(), "event": event, "job": job, **fields}
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        fd = self._open()
        try:
            if os.write(fd, line) != len(line):  # a full disk: part of the line went out
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            if self.fsync:
                os.fsync(fd)
        except OSError:
            self.close()  # reopening ends a torn line first, so the next record stays readable
            raise
        return record

    def size(self) -> int:
        try:
            return os.fstat(self._fd).st_size if self._fd is not None else self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def compact(self, history: "JobHistory") -> int:
        """Replace the journal by what `history` still needs (temp file, fsync, rename); the new size."""
        for stale in self.path.parent.glob(f".{self.path.name}.*{TMP_SUFFIX}"):  # a compaction a crash cut short
            stale.unlink(missing_ok=True)  # (only the watcher holding the inbox lock compacts)
        with atomic_open(self.path) as fh:  # fsynced, renamed over the journal, folder fsynced
            for record in history.needed():
                fh.write((json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
            summary = {
                "t": _now(),
                "event": "compacted",
                "job": "",
                "bytes": fh.tell(),
                "duplicates": history.duplicates - history.kept_duplicates(),
            }
            fh.write((json.dumps(summary, sort_keys=True) + "\n").encode("utf-8"))
            size = fh.tell()
            self.close()  # before the rename: no record may be appended to the journal being replaced
        history.compacted_bytes = size
        return size

    def records(self) -> Iterator[dict[str, Any]]:
        """All whole records in order; unreadable lines (a torn write) are skipped with a warning."""
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return
        with fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    log.warning("%s line %d: unreadable journal record skipped (torn write?)", self.path, number)
                    continue
                if isinstance(record, dict) and all(isinstance(record.get(k), str) for k in ("event", "job")):
                    yield record

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


KEY_FIELDS = ("job", "key", "dir", "dest")  # what duplicate detection reads from a done record


class JobHistory:
    """The journal folded per job: latest fields, event list, and done keys for duplicate detection.

    `live` (job ids with an input in processing/): only those jobs are kept whole; of the others only
    their done keys and the duplicate count, so a long history costs a key each, not every record.
    Jobs added later are kept until `forget` (their input has left processing/).
    """

    def __init__(self, records: Iterable[dict[str, Any]] = (), live: set[str] | None = None):
        self.jobs: dict[str, dict[str, Any]] = {}
        self.done_keys: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.compacted_bytes = 0
        self._records: dict[str, list[dict[str, Any]]] = {}  # raw records of kept jobs, for compaction
        self._live = live
        for record in records:
            self.add(record)
        self._live = None

    def add(self, record: dict[str, Any]) -> None:
        event = record["event"]
        if event == "compacted":
            self.duplicates += int(record.get("duplicates") or 0)
            self.compacted_bytes = int(record.get("bytes") or 0)
            return
        if event == "duplicate":
            self.duplicates += 1
        if event == "done" and record.get("key"):
            self.done_keys.setdefault(record["key"], {k: record[k] for k in KEY_FIELDS if k in record})
        if self._live is not None and record["job"] not in self._live:
            return
        self._records.setdefault(record["job"], []).append(record)
        job = self.jobs.setdefault(record["job"], {"events": []})
        job["events"].append(event)
        job.update({k: v for k, v in record.items() if k not in ("event", "t")})
        if event in TERMINAL:
            job["terminal"] = event

    def forget(self, job_id: str) -> None:
        """The job's input left processing/: only its done key (already taken) is still needed."""
        self.jobs.pop(job_id, None)
        self._records.pop(job_id, None)

    def needed(self) -> Iterator[dict[str, Any]]:
        """What a compacted journal holds: a short done record per key, then every record of kept jobs."""
        for kept in self.done_keys.values():
            if kept.get("job") not in self._records:  # a kept job's own records carry its key
                yield {"t": "", "event": "done", **kept}
        for records in self._records.values():
            yield from records

    def kept_duplicates(self) -> int:
        return sum(r["event"] == "duplicate" for records in self._records.values() for r in records)

    def attempts(self, job_id: str) -> int:
        events = self.jobs.get(job_id, {}).get("events", [])
        return sum(1 for e in events if e in ("claimed", "resumed"))
