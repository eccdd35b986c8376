"""`python -m ganvas.core.watch INBOX --out OUTBOX` (same as `ganvas watch`)."""
from .cli import watch_command

if __name__ == "__main__":
    watch_command(prog_name="ganvas watch")
