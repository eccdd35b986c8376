"""The torch CPU thread count every render uses, whatever the host set (one place for thread setup)."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import torch

from ganvas.core.errors import GanvasError


def _env_threads() -> int:
    raw = os.environ.get("GANVAS_THREADS", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise GanvasError(f"GANVAS_THREADS={raw!r} is not a positive integer")
    return int(raw)


def default_threads() -> int:
    """The threads a pipeline renders with: configure_threads' value, else GANVAS_THREADS, else 1."""
    return _configured_threads if _configured_threads is not None else _env_threads()


def configure_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads (`threads`, else GANVAS_THREADS, else 1) and make it the count every
    pipeline of this process renders with (the command line's --threads).

    One thread is the default because on a shared machine PyTorch's parallel regions stall whenever
    another process runs (batch-1 generation up to 80x slower with 2 threads under load, FINDINGS.md).
    """
    global _configured_threads
    _configured_threads = threads = _env_threads() if threads is None else threads
    torch.set_num_threads(threads)
    return threads


_configured_threads: int | None = None
# torch.set_num_threads is process-wide (MKL's setting is global, OpenMP's is per calling thread): renders
# take this lock around their thread setting and forward, so two concurrent renders (server workers,
# two hosts' pipelines in one process) never change the count under each other. Renders of one model
# already run one at a time (its own lock); with this one, renders of different models do as well.
_threads_lock = threading.RLock()


@contextmanager
def render_threads(threads: int | None = None):
    """Run the body with torch at `threads` CPU threads (None: default_threads()) under the render lock,
    then give the caller's setting back, even on an error.

    Hosts keep torch at their own count (ComfyUI: 2), which moved a seed's pixels by a level and, under
    CPU contention, made batch-4 generation up to 30x slower; the generator must not depend on it.
    Torch work in *other* threads of the process may see the render's setting while it runs.
    """
    wanted = default_threads() if threads is None else threads
    with _threads_lock:
        previous = torch.get_num_threads()
        if previous != wanted:
            torch.set_num_threads(wanted)
        try:
            yield wanted
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)
