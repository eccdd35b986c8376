"""`ganvas watch INBOX --status`: what is queued, running, done and failed, and whether a watcher runs."""

from __future__ import annotations

from pathlib import Path

from ganvas.core.hosts.watch.journal import Journal
from ganvas.core.hosts.watch.layout import Inbox, WatchLock


def _inputs(folder: Path) -> int:
    try:
        return sum(
            1
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".error.json")
        )
    except FileNotFoundError:
        return 0


def watch_status(inbox_path: str | Path) -> dict:
    inbox = Inbox(inbox_path)
    duplicates = sum(
        1 if r["event"] == "duplicate" else int(r.get("duplicates") or 0)  # compaction's count
        for r in Journal(inbox.journal_path).records()
        if r["event"] in ("duplicate", "compacted")
    )
    return {
        "inbox": str(inbox.root),
        "watcher": WatchLock(inbox.lock_path).owner(),
        "queued": len(inbox.candidates()),
        "processing": len(inbox.in_processing()),
        "done": _inputs(inbox.done),
        "failed": _inputs(inbox.failed),
        "duplicates": duplicates,
    }


def format_status(status: dict) -> str:
    owner = status["watcher"]
    lines = [
        f"inbox       {status['inbox']}",
        f"watcher     {'running (pid ' + owner + ')' if owner else 'not running'}",
        f"queued      {status['queued']}",
        f"processing  {status['processing']}",
        f"done        {status['done']}"
        + (f"  ({status['duplicates']} skipped as duplicates)" if status["duplicates"] else ""),
        f"failed      {status['failed']}",
    ]
    return "\n".join(lines)
