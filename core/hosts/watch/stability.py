"""Quiet-period stability tracking: a file is ready once its size and mtime stopped changing.

Events alone cannot say that a writer is finished (a network copy or a slow script writes in bursts,
and `closed` events exist only on inotify), so every event or scan re-stats the file and restarts its
clock when anything changed; it is ready after `quiet` seconds without change, confirmed by one more
stat. A zero-byte file (a browser's placeholder, or a writer that has not started) waits
`empty_quiet` instead, so a file that is truly empty is still reported in the end, not left forever.
(paperless-ngx FileStabilityTracker; calibre's 0-byte rule.)
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def signature(path: Path) -> tuple[int, int, int] | None:
    """(size, mtime_ns, inode) of a regular file (not a symlink); None when it is gone or not a file."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass
class _Tracked:
    sig: tuple[int, int, int]
    changed_at: float
    order: int


class StabilityTracker:
    def __init__(self, quiet: float, empty_quiet: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.quiet = quiet
        self.empty_quiet = 10 * quiet if empty_quiet is None else empty_quiet
        self.clock = clock
        self._files: dict[Path, _Tracked] = {}
        self._order = 0

    def touch(self, path: Path) -> None:
        """An event or a scan saw `path`: start tracking it, or restart its clock if it changed."""
        sig = signature(path)
        if sig is None:
            self._files.pop(path, None)
            return
        tracked = self._files.get(path)
        if tracked is None:
            self._order += 1
            self._files[path] = _Tracked(sig, self.clock(), self._order)
        elif tracked.sig != sig:
            tracked.sig, tracked.changed_at = sig, self.clock()

    def ready(self) -> list[Path]:
        """Files quiet for long enough, re-stat confirmed, in arrival order."""
        now = self.clock()
        out = []
        for path, tracked in sorted(self._files.items(), key=lambda kv: kv[1].order):
            wait = self.empty_quiet if tracked.sig[0] == 0 else self.quiet
            if now - tracked.changed_at < wait:
                continue
            sig = signature(path)
            if sig is None:
                del self._files[path]
            elif sig != tracked.sig:
                tracked.sig, tracked.changed_at = sig, now
            else:
                out.append(path)
        return out

    def next_due(self) -> float | None:
        """Seconds until the earliest tracked file may be ready (None when nothing is tracked)."""
        if not self._files:
            return None
        now = self.clock()
        return max(
            0.0,
            min(t.changed_at + (self.empty_quiet if t.sig[0] == 0 else self.quiet) - now for t in self._files.values()),
        )

    def discard(self, path: Path) -> None:
        self._files.pop(path, None)

    def paths(self) -> list[Path]:
        return list(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: object) -> bool:
        return path in self._files
