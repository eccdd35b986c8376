"""The hot folder: `ganvas watch INBOX --out OUTBOX` turns dropped prompt files into images.

Modules, one job each:
  jobs        which files are jobs; parsing .txt/.json into entries, per-line problems, size limits
  stability   quiet-period tracking (size + mtime unchanged) before a file is read
  layout      inbox folders, claim by rename, free names, the one-watcher lock
  journal     append-only JSONL record of every job, folded per job for recovery
  outputs     temp + rename writes, complete-PNG check, output folder names
  runner      one parsed job through the pipeline -> images + manifest.json
  processor   a job's life (claim, duplicates, done/failed) and crash recovery
  observer    watchdog native events, polling fallback
  loop        startup scan, events, periodic rescan, --once
  status      counts for --status
  cli         the click command
Torch is imported only when a model loads, so `--status` and `--help` stay instant.
"""

from ganvas.core.hosts.watch.jobs import JobError, Limits, ParsedJob, is_job_name, parse_job
from ganvas.core.hosts.watch.loop import WatchConfig, Watcher

__all__ = ["WatchConfig", "Watcher", "JobError", "Limits", "ParsedJob", "is_job_name", "parse_job"]
