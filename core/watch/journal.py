"""The append-only JSONL journal: what happened to each job, the record that crash recovery reads.

Events (one JSON object per line, all with "t" and "job"):
  claimed    the input was renamed into processing/ (file, path, seed_base)
  resumed    a restart picked up an unfinished job
  output     the job's output folder was chosen (dir, relative to the outbox); written before mkdir
  done       finished; the input moves to `dest` (sha256, key for duplicate detection, images)
  duplicate  same content and model as an earlier done job (`of`); the input moves to `dest`
  failed     the input moves to `dest` with an error file beside it (error)

Every record is written with one os.write on an O_APPEND descriptor, so a SIGKILL leaves whole lines
(at worst one torn last line, which the reader skips). A terminal record (done/duplicate/failed) is
written *before* the input is moved, so recovery can always finish the move.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

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
        os.write(fd, line)
        if self.fsync:
            os.fsync(fd)
        return record

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


class JobHistory:
    """The journal folded per job: latest fields, event list, and done keys for duplicate detection."""

    def __init__(self, records: Iterator[dict[str, Any]] = ()):
        self.jobs: dict[str, dict[str, Any]] = {}
        self.done_keys: dict[str, dict[str, Any]] = {}
        for record in records:
            self.add(record)

    def add(self, record: dict[str, Any]) -> None:
        job = self.jobs.setdefault(record["job"], {"events": []})
        job["events"].append(record["event"])
        job.update({k: v for k, v in record.items() if k not in ("event", "t")})
        if record["event"] in TERMINAL:
            job["terminal"] = record["event"]
        if record["event"] == "done" and record.get("key"):
            self.done_keys.setdefault(record["key"], record)

    def attempts(self, job_id: str) -> int:
        events = self.jobs.get(job_id, {}).get("events", [])
        return sum(1 for e in events if e in ("claimed", "resumed"))
