"""A job's life: claim -> (duplicate check) -> parse -> run -> done/ or failed/, and crash recovery.

Order of writes, chosen so that a SIGKILL at any instant is recoverable:
  1. rename INBOX/x -> processing/<id>__x (the claim), then journal `claimed` (with seed_base);
     a file in processing/ without its record is simply claimed again on restart.
  2. journal `output` (the folder name), then mkdir it, so a restart reuses the same folder.
  3. images: temp + rename each, skipping those already complete (names depend only on index and seed).
  4. manifest.json (temp + rename).
  5. journal the terminal record (done / duplicate / failed, with the destination name), write the
     error file for failures, then move the input. A restart finishes steps 5's move from the record.
An input leaves the inbox only through done/ or failed/; it is never deleted.

Beyond a crash:
  - an input whose size or mtime changed after it was read (a writer that paused longer than the quiet
    period) is run again once it is quiet, before any terminal record, so no line is lost;
  - an I/O error (outbox full or read-only, a share gone) leaves the job in processing/ as `stalled`;
    the watch loop retries it (`retry`), and a restart resumes it as usual;
  - a file that cannot be claimed (a name too long for processing/, no permission) stays in the inbox
    and is listed in `unclaimed`, logged once per reason;
  - a symlink in processing/ fails without its target being read.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ganvas.core.hosts.watch.faults import crash_point
from ganvas.core.hosts.watch.jobs import JobError, Limits, ParsedJob, parse_job, read_job
from ganvas.core.hosts.watch.journal import JobHistory, Journal
from ganvas.core.hosts.watch.layout import JOB_ID_CHARS, Inbox, UnsafeFolder, free_name, new_job_id
from ganvas.core.hosts.watch.outputs import choose_output_dir, clean_temps, write_json
from ganvas.core.hosts.watch.runner import MANIFEST, JobContext, Pipelines, RunOutcome, run_job

log = logging.getLogger("ganvas.watch")

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_COMPACT_BYTES = 4 * 1024 * 1024  # compact the journal past this size (and past twice its last compaction)
MAX_RERUNS = 10  # an input that keeps changing after the claim fails after this many re-runs
STALL_ERRORS = (OSError, UnsafeFolder)  # the job cannot finish now, but may later: it stays in processing/


def error_file(dest: Path) -> Path:
    """failed/x.txt -> failed/x.error.json"""
    return dest.with_name(Path(dest.name).stem + ".error.json")


def _error_companion(candidate: str) -> list[str]:
    return [Path(candidate).stem + ".error.json"]


class JobProcessor:
    def __init__(
        self,
        inbox: Inbox,
        outbox: Path,
        pipelines: Pipelines,
        *,
        limits: Limits = Limits(),
        duplicates: str = "skip",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        stop: threading.Event | None = None,
        fsync: bool = False,
        quiet: float = 2.0,
        compact_bytes: int = DEFAULT_COMPACT_BYTES,
    ):
        if duplicates not in ("skip", "process"):
            raise ValueError(f"duplicates must be 'skip' or 'process', got {duplicates!r}")
        self.inbox = inbox
        self.outbox = Path(outbox)
        self.pipelines = pipelines
        self.limits = limits
        self.duplicates = duplicates
        self.max_attempts = max_attempts
        self.stop = stop or threading.Event()
        self.quiet = quiet
        self.compact_bytes = compact_bytes
        inbox.ensure()
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(inbox.journal_path, fsync=fsync)
        live = {job_id for job_id, _ in map(Inbox.split_claimed, inbox.in_processing()) if job_id}
        self.history = JobHistory(self.journal.records(), live=live)
        self._maybe_compact()
        self.counts: Counter[str] = Counter()
        self.stalled: dict[Path, tuple[str, str]] = {}  # processing/ path -> (file, reason)
        self.unclaimed: dict[Path, str] = {}  # inbox path -> reason
        self._reruns: Counter[str] = Counter()

    def close(self) -> None:
        self.journal.close()

    def _maybe_compact(self) -> None:
        size = self.journal.size()
        if size > max(self.compact_bytes, 2 * self.history.compacted_bytes):
            kept = self.journal.compact(self.history)
            log.info(
                "journal compacted: %d -> %d bytes (%d duplicate keys, %d unfinished jobs kept)",
                size,
                kept,
                len(self.history.done_keys),
                len(self.history.jobs),
            )

    def _finished(self, job_id: str) -> None:
        """The input left processing/: drop the job from memory, compact the journal if it grew."""
        self.history.forget(job_id)
        self._reruns.pop(job_id, None)
        try:
            self._maybe_compact()
        except OSError as exc:  # the journal is still whole; try again after the next job
            log.warning("journal compaction failed: %s", _reason(exc))

    def _record(self, event: str, job_id: str, **fields: Any) -> dict[str, Any]:
        record = self.journal.append(event, job_id, **fields)
        self.history.add(record)
        return record

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.inbox.root).as_posix()

    # --- entry points ---------------------------------------------------------------------------------

    def take(self, path: Path) -> str | None:
        """Claim a stable inbox file and run it. Returns done/failed/duplicate/interrupted/stalled,
        "unclaimed" when it cannot be claimed, None if gone."""
        job_id = new_job_id()
        try:
            source = self.inbox.claim(path, job_id)
        except STALL_ERRORS as exc:
            return self._unclaimable(path, exc)
        self.unclaimed.pop(path, None)
        if source is None:
            log.info("%s vanished before it could be claimed", path.name)
            return None
        crash_point("claimed-file")
        return self._guard(job_id, source, path.name, lambda: self._claimed(job_id, source, path.name))

    def _claimed(self, job_id: str, source: Path, name: str) -> str:
        self._record("claimed", job_id, file=name, path=self._rel(source), seed_base=secrets.randbelow(2**32))
        crash_point("claimed")
        return self._run(job_id, source)

    def _unclaimable(self, path: Path, exc: Exception) -> str:
        reason = _claim_reason(exc, self.inbox.processing)
        if self.unclaimed.get(path) != reason:  # once per file and reason, not at every rescan
            log.error("cannot claim %s: %s; it stays in the inbox", path.name, reason)
        self.unclaimed[path] = reason
        return "unclaimed"

    def retry(self, source: Path) -> str:
        """Run a stalled job again (the watch loop's retry after an I/O error); no attempt is counted."""
        name = self.stalled.pop(source, (source.name, ""))[0]
        job_id, _ = Inbox.split_claimed(source)
        if not os.path.lexists(source):  # taken out of processing/ by hand: nothing left to retry
            log.warning("%s is no longer in processing/; not retried", name)
            return "gone"
        if job_id not in self.history.jobs:  # stalled before its first record: as after a crash
            return self._recover_one(source)[1]

        def again() -> str:
            if self.history.jobs[job_id].get("terminal"):
                return self._complete(job_id, source)
            self._record("retried", job_id)
            return self._run(job_id, source)

        return self._guard(job_id, source, name, again)

    def _guard(self, job_id: str, source: Path, name: str, work) -> str:
        """Run `work`; an I/O error leaves the job in processing/ as stalled (retried, or resumed on restart)."""
        try:
            return work()
        except STALL_ERRORS as exc:
            reason = _reason(exc)
            self.stalled[source] = (name, reason)
            try:
                self._record("stalled", job_id, error=reason)
            except OSError:  # the journal's disk may be the full one; memory still knows
                pass
            log.error("%s did not finish: %s; it stays in processing/", name, reason)
            return "stalled"

    def recover(self) -> list[tuple[str, str]]:
        """Finish or redo every job left in processing/ by a crash; [(file, outcome)]."""
        results = []
        for source in self.inbox.in_processing():
            if self.stop.is_set():
                break
            try:
                results.append(self._recover_one(source))
            except Exception:  # one broken leftover must not keep the watcher from starting
                log.exception("could not recover %s; it stays in processing/", source.name)
        return results

    def _recover_one(self, source: Path) -> tuple[str, str]:
        job_id, name = Inbox.split_claimed(source)
        job = self.history.jobs.get(job_id) if job_id else None
        if job_id is None:  # put there by hand: give it a job id like any claim
            job_id = new_job_id()
            target = self.inbox.processing / f"{job_id}__{name}"
            try:
                os.rename(source, target)
            except OSError as exc:
                failure = exc  # `exc` is unbound once the except block ends; the lambda keeps its own name
                return name, self._guard(job_id, source, name, lambda: _raise(failure))
            source = target
        return name, self._guard(job_id, source, name, lambda: self._resume(job_id, source, name, job))

    def _resume(self, job_id: str, source: Path, name: str, job: dict[str, Any] | None) -> str:
        if job is None:  # claimed, killed before the journal record: nothing was made yet
            log.info("recovering %s (claimed, not yet started)", name)
            self._record("claimed", job_id, file=name, path=self._rel(source), seed_base=secrets.randbelow(2**32))
            return self._run(job_id, source)
        if job.get("terminal"):
            return self._complete(job_id, source)
        attempts = self._attempts(job_id)
        if attempts >= self.max_attempts:  # a job that keeps killing the watcher must not loop forever
            error = {
                "message": f"interrupted {attempts} times while running (watcher killed or crashed); "
                f"gave up after {self.max_attempts} attempts",
                "kind": "interrupted",
            }
            out_dir = self.outbox / job["dir"] if job.get("dir") else None
            return self._fail(job_id, source, error, out_dir=out_dir)
        log.info("resuming %s (attempt %d of %d)", name, attempts + 1, self.max_attempts)
        self._record("resumed", job_id, path=self._rel(source))
        return self._run(job_id, source)

    def _attempts(self, job_id: str) -> int:
        """Runs of the job that died or are under way; one stopped cleanly (a signal, an I/O error) is not counted."""
        count, running = 0, False
        for event in self.history.jobs.get(job_id, {}).get("events", []):
            if event in ("claimed", "resumed") or (event == "retried" and not running):
                count, running = count + 1, True
            elif event in ("interrupted", "stalled") and running:
                count, running = count - 1, False
        return count

    # --- running --------------------------------------------------------------------------------------

    def _run(self, job_id: str, source: Path) -> str:
        job = self.history.jobs[job_id]
        name = job["file"]
        started = time.perf_counter()
        try:
            data, read_sig = read_job(source, self.limits)
        except JobError as exc:
            return self._fail(job_id, source, exc.to_dict())
        except OSError as exc:
            return self._fail(job_id, source, {"message": f"cannot read: {exc.strerror or exc}", "kind": "unreadable"})
        sha = hashlib.sha256(data).hexdigest()
        key = hashlib.sha256(f"{sha}|{self.pipelines.model_key()}".encode()).hexdigest()
        earlier = self.history.done_keys.get(key)
        # A duplicate is skipped only while the earlier job's outputs are still there to be found.
        if (
            "dir" not in job
            and self.duplicates == "skip"
            and earlier is not None
            and (self.outbox / str(earlier.get("dir")) / MANIFEST).exists()
        ):
            return self._if_unchanged(job_id, source, read_sig, lambda: self._duplicate(job_id, source, earlier))
        error = None
        try:
            parsed = parse_job(name, data, self.limits)
        except JobError as exc:
            error = exc.to_dict()
        except Exception as exc:  # a limit of a decoder we did not foresee: fail now with its words, not on restart
            error = {"message": f"cannot parse: {type(exc).__name__}: {exc}", "kind": "invalid_job"}
        if error is not None:
            return self._if_unchanged(job_id, source, read_sig, lambda: self._fail(job_id, source, error))
        out_dir = self._output_dir(job_id, job, name)
        ctx = JobContext(job_id, name, job["seed_base"], out_dir, self._attempts(job_id), sha)
        outcome = run_job(ctx, parsed, self.pipelines, self.stop)
        if outcome.interrupted:
            return self._interrupted(job_id, name)
        seconds = time.perf_counter() - started
        if outcome.problems:
            return self._if_unchanged(
                job_id,
                source,
                read_sig,
                lambda: self._fail(job_id, source, _problems_error(parsed, outcome), out_dir=out_dir, outcome=outcome),
            )
        return self._if_unchanged(
            job_id, source, read_sig, lambda: self._done(job_id, source, out_dir, outcome, sha, key, seconds)
        )

    def _interrupted(self, job_id: str, name: str) -> str:
        self._record("interrupted", job_id)
        log.info("stopped during %s; it resumes on the next start", name)
        self.counts["interrupted"] += 1
        return "interrupted"

    def _if_unchanged(self, job_id: str, source: Path, read_sig: tuple[int, int], finish) -> str:
        """`finish()` if the input is as it was read; else (a writer still writing) run it again when quiet."""
        if _sig(source) == read_sig:
            return finish()
        name = self.history.jobs[job_id]["file"]
        self._reruns[job_id] += 1
        if self._reruns[job_id] > MAX_RERUNS:
            return self._fail(
                job_id,
                source,
                {
                    "message": f"the file kept changing after it was claimed ({MAX_RERUNS} re-runs); write it under "
                    f"a temporary name (.part, or a dot name) and rename it into the inbox when complete",
                    "kind": "changing",
                },
            )
        self._record("changed", job_id)
        log.warning(
            "%s changed after it was claimed (its writer paused longer than the quiet period, "
            "--quiet-period); running it again once it is quiet",
            name,
        )
        if not self._wait_quiet(source):
            return self._interrupted(job_id, name)
        return self._run(job_id, source)

    def _wait_quiet(self, source: Path) -> bool:
        """Until `source` has not changed for the quiet period; False when stopped first."""
        last, since = _sig(source), time.monotonic()
        while time.monotonic() - since < self.quiet:
            if self.stop.wait(min(0.05, self.quiet)):
                return False
            now = _sig(source)
            if now != last:
                last, since = now, time.monotonic()
        return True

    def _output_dir(self, job_id: str, job: dict, name: str) -> Path:
        if job.get("dir"):  # resumed: the folder chosen on the first attempt
            out_dir = self.outbox / job["dir"]
            out_dir.mkdir(parents=True, exist_ok=True)
            clean_temps(out_dir)
            return out_dir
        while True:
            out_dir = choose_output_dir(self.outbox, Path(name).stem)
            self._record("output", job_id, dir=out_dir.name)
            crash_point("output-chosen")
            try:
                out_dir.mkdir()
                return out_dir
            except FileExistsError:  # another program made it between the check and now
                continue

    # --- endings --------------------------------------------------------------------------------------

    def _done(
        self, job_id: str, source: Path, out_dir: Path, outcome: RunOutcome, sha: str, key: str, seconds: float
    ) -> str:
        name = self.history.jobs[job_id]["file"]
        dest = free_name(self.inbox.done, name)
        self._record(
            "done",
            job_id,
            dest=self._rel(dest),
            dir=out_dir.name,
            sha256=sha,
            key=key,
            prompts=len(outcome.prompts),
            images=outcome.images,
        )
        crash_point("terminal-record")
        self.inbox.move(source, dest)
        crash_point("moved")
        self._finished(job_id)
        self.counts["done"] += 1
        reused = f", {outcome.reused} already there" if outcome.reused else ""
        log.info(
            "done %s: %s, %s%s -> %s (%.2f s)",
            name,
            _count(len(outcome.prompts), "prompt"),
            _count(outcome.images, "image"),
            reused,
            out_dir,
            seconds,
        )
        return "done"

    def _duplicate(self, job_id: str, source: Path, earlier: dict) -> str:
        name = self.history.jobs[job_id]["file"]
        dest = free_name(self.inbox.done, name)
        self._record(
            "duplicate", job_id, dest=self._rel(dest), of=earlier["job"], dir=earlier.get("dir"), key=earlier.get("key")
        )
        crash_point("terminal-record")
        self.inbox.move(source, dest)
        crash_point("moved")
        self._finished(job_id)
        self.counts["duplicate"] += 1
        log.info(
            "duplicate %s: same content and model as %s (job %s, outputs in %s); skipped -> %s "
            "(--duplicates process to run it again)",
            name,
            earlier.get("dest", "?").split("/")[-1],
            earlier["job"],
            self.outbox / str(earlier.get("dir")),
            self._rel(dest),
        )
        return "duplicate"

    def _fail(
        self,
        job_id: str,
        source: Path,
        error: dict[str, Any],
        out_dir: Path | None = None,
        outcome: RunOutcome | None = None,
    ) -> str:
        job = self.history.jobs[job_id]
        name = job["file"]
        dest = free_name(self.inbox.failed, name, companions=_error_companion)
        report = {
            "file": name,
            "job": job_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "attempts": self._attempts(job_id),
            **error,
        }
        if out_dir is not None:
            report["output"] = str(out_dir)
        if outcome is not None:
            report["images_written"] = outcome.images
            report["prompts_ok"] = len(outcome.prompts)
        summary = {k: v for k, v in report.items() if k != "problems"}
        self._record("failed", job_id, dest=self._rel(dest), error=summary)
        crash_point("terminal-record")
        self.inbox.check(self.inbox.failed)  # the error file must not be written through a symlink either
        write_json(error_file(dest), report)
        crash_point("error-file")
        self.inbox.move(source, dest)
        crash_point("moved")
        self._finished(job_id)
        self.counts["failed"] += 1
        log.warning("failed %s: %s -> %s", name, error["message"], self._rel(dest))
        return "failed"

    def _complete(self, job_id: str, source: Path) -> str:
        """A crash hit between the terminal record and the move: finish the move (and the error file)."""
        job = self.history.jobs[job_id]
        dest = self.inbox.root / job["dest"]
        if job["terminal"] == "failed" and not error_file(dest).exists():
            self.inbox.check(dest.parent)
            write_json(error_file(dest), {"file": job["file"], "job": job_id, **job.get("error", {})})
        moved = self.inbox.move(source, dest)
        self._finished(job_id)
        self.counts[job["terminal"]] += 1
        log.info("finished moving %s -> %s (%s before a restart)", job["file"], self._rel(moved), job["terminal"])
        return job["terminal"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _problems_error(parsed: ParsedJob, outcome: RunOutcome) -> dict[str, Any]:
    problems = sorted(outcome.problems, key=lambda p: (p.index is None, p.index))
    first = problems[0]
    return {
        "message": f"{len(problems)} of {parsed.count} prompts failed; {first}"
        + (f" (and {len(problems) - 1} more, see problems)" if len(problems) > 1 else "")
        + (f"; the other {len(outcome.prompts)} made their images" if outcome.prompts else ""),
        "kind": "bad_prompts",
        "line": first.line,
        "field": first.field,
        "problems": [p.to_dict() for p in problems],
    }


def _sig(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) without following a symlink; None when it is gone."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _raise(exc: BaseException):
    raise exc


def _reason(exc: BaseException) -> str:
    """One line: "No space left on device: /out/job/000_1.png" (an OSError), else the message."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return " ".join(str(exc).split())


def _claim_reason(exc: BaseException, processing: Path) -> str:
    """Why a file cannot be renamed into processing/, and what to do about it."""
    if not isinstance(exc, OSError):
        return _reason(exc)
    if exc.errno == errno.ENAMETOOLONG:
        try:
            limit = os.pathconf(processing, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):
            limit = 255
        return (
            f"{exc.strerror} (processing/ adds a {JOB_ID_CHARS}-character job id to the name; "
            f"use a name of at most {limit - JOB_ID_CHARS} bytes)"
        )
    if exc.errno in (errno.EPERM, errno.EACCES):
        return (
            f"{exc.strerror} (the watcher may not move it into processing/; in a shared inbox with the "
            f"sticky bit only the file's owner can; let the watcher's user own it)"
        )
    return exc.strerror or str(exc)
