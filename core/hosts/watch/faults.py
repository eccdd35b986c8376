"""Named crash points for the crash-safety tests: GANVAS_WATCH_CRASH_AT=<point>[:<n>] makes the
watcher SIGKILL itself the n-th time (default 1st) it passes <point>, so every window between two
writes of a job's life can be hit exactly, not just by chance. Unset (always, outside tests): a no-op.

Points: claimed-file (renamed, not yet journaled), claimed (journaled), output-chosen (journaled,
folder not made), image (after each image), manifest, terminal-record (done/failed/duplicate
journaled, input not moved), error-file (failed: error file written, input not moved), moved.
"""

from __future__ import annotations

import os
import signal

POINTS = ("claimed-file", "claimed", "output-chosen", "image", "manifest", "terminal-record", "error-file", "moved")

_spec = os.environ.get("GANVAS_WATCH_CRASH_AT", "")
_point, _, _nth = _spec.partition(":")
_remaining = int(_nth) if _nth.isdigit() else 1
if _point and _point not in POINTS:
    raise ValueError(f"GANVAS_WATCH_CRASH_AT={_spec!r}: unknown point; known: {', '.join(POINTS)}")


def crash_point(name: str) -> None:
    global _remaining
    if name == _point:
        _remaining -= 1
        if _remaining == 0:
            os.kill(os.getpid(), signal.SIGKILL)
