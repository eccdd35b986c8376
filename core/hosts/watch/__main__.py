"""`python -m ganvas.core.hosts.watch INBOX --out OUTBOX` (same as `ganvas watch`)."""

from ganvas.core.hosts.watch.cli import watch_command

if __name__ == "__main__":
    watch_command(prog_name="ganvas watch")
