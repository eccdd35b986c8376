"""The inbox's folders, claim by rename, never-overwriting moves, and the one-watcher-per-inbox lock.

    INBOX/               drop *.txt / *.json here
    INBOX/processing/    claimed jobs, renamed to <job id>__<original name>
    INBOX/done/          inputs that finished
    INBOX/failed/        inputs that failed, each with <name>.error.json beside it
    INBOX/.ganvas/       journal.jsonl and watch.lock (hidden, so never taken for a job)

Claiming is one rename into processing/ under a name that carries the job id: only one claimant can
succeed, and after a crash the file itself says which journal records are its own. done/ and failed/
names are chosen free (x.txt, x-1.txt, ...) by the one watcher that holds the lock.

The four folders must be real folders: a symlinked done/ (or processing/, failed/, .ganvas/) would move
inputs, or write the journal, outside the inbox, so the watcher refuses to start, claim or move.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Callable

from ganvas.core.errors import GanvasError
from ganvas.core.hosts.watch.jobs import is_job_name

JOB_ID = re.compile(r"^(\d{8}T\d{6}-[0-9a-f]{6})__(.+)$")
JOB_ID_CHARS = len("20260101T000000-abcdef__")  # what a claim adds to a name


def new_job_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def free_name(
    folder: Path, name: str, split_ext: bool = True, companions: Callable[[str], list[str]] = lambda candidate: []
) -> Path:
    """folder/name, else name-1, name-2 ... (before the extension), so that nothing is overwritten.

    `companions(candidate)` names files that will be written beside it (an error file); they must be
    free too.
    """
    stem, dot, ext = name.rpartition(".") if split_ext and "." in name.lstrip(".") else (name, "", "")
    k = 0
    while True:
        candidate = name if k == 0 else f"{stem}-{k}{dot}{ext}"
        if not any(os.path.lexists(folder / n) for n in (candidate, *companions(candidate))):
            return folder / candidate
        k += 1


class AlreadyWatching(GanvasError):
    pass


class UnsafeFolder(GanvasError):
    """One of the inbox's own folders is a symbolic link (or not a folder)."""


class Inbox:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.processing = self.root / "processing"
        self.done = self.root / "done"
        self.failed = self.root / "failed"
        self.state = self.root / ".ganvas"
        self.journal_path = self.state / "journal.jsonl"
        self.lock_path = self.state / "watch.lock"

    def ensure(self) -> None:
        self.check()
        for folder in (self.processing, self.done, self.failed, self.state):
            folder.mkdir(parents=True, exist_ok=True)

    def check(self, *folders: Path) -> None:
        """Raise UnsafeFolder when one of the inbox's folders (default: all four) is a symlink."""
        for folder in folders or (self.processing, self.done, self.failed, self.state):
            if folder.is_symlink():
                raise UnsafeFolder(
                    f"{folder} is a symbolic link (to {os.readlink(folder)}); the inbox's own "
                    f"folders must be real folders, so that nothing leaves the inbox; replace it "
                    f"with a folder"
                )

    def candidates(self) -> list[Path]:
        """Job files directly in the inbox (sub-folders, hidden and temporary files excluded)."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        return sorted(Path(e.path) for e in entries if is_job_name(e.name) and e.is_file(follow_symlinks=False))

    def in_processing(self) -> list[Path]:
        """Files in processing/, symlinks included (recovery refuses them; their targets are never read)."""
        try:
            return sorted(
                p for p in self.processing.iterdir() if not p.name.startswith(".") and (p.is_symlink() or p.is_file())
            )
        except FileNotFoundError:
            return []

    def claim(self, path: Path, job_id: str) -> Path | None:
        """Rename into processing/; None when the file vanished (someone else took it)."""
        self.check(self.processing)
        target = self.processing / f"{job_id}__{path.name}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None
        return target

    @staticmethod
    def split_claimed(path: Path) -> tuple[str | None, str]:
        """(job id, original name) of a file in processing/; (None, name) for one put there by hand."""
        match = JOB_ID.match(path.name)
        return (match.group(1), match.group(2)) if match else (None, path.name)

    def move(self, src: Path, dest: Path) -> Path:
        """Move to `dest`, or to a free name beside it if something took that name meanwhile."""
        self.check(dest.parent)
        if os.path.lexists(dest):
            dest = free_name(dest.parent, dest.name)
        os.rename(src, dest)
        return dest


class WatchLock:
    """An exclusive lock on INBOX/.ganvas/watch.lock: two watchers on one inbox would recover (steal)
    each other's running jobs. The lock file holds the owner's pid for `--status`."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = None

    def acquire(self, tries: int = 5) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        for _ in range(tries):  # `--status` holds the lock for an instant while it looks
            if _try_lock(fh):
                break
            time.sleep(0.1)
        else:
            fh.seek(0)
            owner = fh.read().strip()
            fh.close()
            raise AlreadyWatching(f"another watcher (pid {owner or '?'}) is already watching {self.path.parent.parent}")
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the lock
            self._fh = None

    def owner(self) -> str | None:
        """The pid of a live watcher holding the lock, else None (checked without taking it for long)."""
        if not self.path.exists():
            return None
        with open(self.path, "a+") as fh:
            if _try_lock(fh):
                return None  # nobody held it; closing releases ours
            fh.seek(0)
            return fh.read().strip() or "?"


def _try_lock(fh) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
