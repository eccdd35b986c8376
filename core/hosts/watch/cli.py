"""The `ganvas watch` command (added to the CLI by plugins/commands.py; also `python -m ganvas.core.hosts.watch`)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from ganvas.core.hosts.watch.jobs import DEFAULT_MAX_BYTES, DEFAULT_MAX_PROMPTS
from ganvas.core.hosts.watch.loop import DEFAULT_QUIET, DEFAULT_RESCAN

log = logging.getLogger("ganvas.watch")


def setup_logging() -> None:
    """One timestamped line per event on stderr; INFO by default (a daemon's log), -v is not needed."""
    if not any(getattr(h, "_ganvas_watch", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s ganvas watch: %(message)s", "%Y-%m-%d %H:%M:%S"))
        handler._ganvas_watch = True
        log.addHandler(handler)
        log.propagate = False
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)


def _install_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum, frame):
        if stop.is_set():  # a second Ctrl-C: leave now; the running job resumes on the next start
            raise KeyboardInterrupt
        log.info("stopping (signal %d); the running job stops after its current prompt", signum)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


@click.command("watch")
@click.argument("inbox", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "outbox", type=click.Path(file_okay=False), help="output folder (created if missing)")
@click.option(
    "--model", help="registered model name or checkpoint folder  [default: $GANVAS_MODEL or the shipped default]"
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.05),
    metavar="SECONDS",
    help="poll the folder every SECONDS instead of native events (network drives, Docker mounts)",
)
@click.option("--once", is_flag=True, help="process the files already there, then exit (cron, CI)")
@click.option(
    "--quiet-period",
    "quiet",
    type=click.FloatRange(min=0),
    default=DEFAULT_QUIET,
    show_default=True,
    metavar="S",
    help="a file is read once its size and mtime have not changed for S seconds",
)
@click.option(
    "--rescan",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_RESCAN,
    show_default=True,
    metavar="S",
    help="full rescan of the inbox every S seconds (safety net for missed events)",
)
@click.option(
    "--duplicates",
    type=click.Choice(["skip", "process"]),
    default="skip",
    show_default=True,
    help="a file with the same content (and model) as a done job: skip it, or run it again",
)
@click.option(
    "--max-prompts",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PROMPTS,
    show_default=True,
    help="prompts per file; a longer file fails with an error",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BYTES,
    show_default=True,
    help="file size limit; a larger file fails with an error",
)
@click.option(
    "--allow-model-paths",
    is_flag=True,
    help="let a job's \"model\" name a checkpoint folder; by default jobs may name registered models only",
)
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads  [default: $GANVAS_THREADS or 1]")
@click.option("--status", is_flag=True, help="print counts (queued, processing, done, failed) and exit")
def watch_command(
    inbox,
    outbox,
    model,
    poll,
    once,
    quiet,
    rescan,
    duplicates,
    max_prompts,
    max_bytes,
    allow_model_paths,
    threads,
    status,
):
    """Turn prompt files dropped into INBOX into images in --out.

    \b
    Jobs:   *.txt   one prompt per line (blank lines and # comments skipped)
            *.json  {"prompt": ..., "n", "seed", "model", "truncation", "style", "size", "name"}
                    or a list of such objects
    Output: OUT/<job>/<index>_<seed>.png (full metadata) + manifest.json, written last
    Inputs: moved to INBOX/done/, or INBOX/failed/ with <name>.error.json (line and field)

    Files are read after a quiet period, claimed by renaming into INBOX/processing/, and a job cut
    short by a crash is resumed on the next start without repeating finished images. A job stopped by
    an I/O error (outbox full or read-only) is retried while the watcher runs. With --once, the exit
    status is 1 when a job failed, did not finish, or a file could not be claimed.

    \b
    Examples:
      ganvas watch prompts-in --out pictures
      ganvas watch /mnt/share/in --out /mnt/share/out --poll 5
      ganvas watch prompts-in --out pictures --once
      ganvas watch prompts-in --status
    """
    from ganvas.core.hosts.watch.status import format_status, watch_status

    if status:
        click.echo(format_status(watch_status(inbox)))
        return
    if not outbox:
        raise click.UsageError("--out OUTBOX is required (or --status)")
    setup_logging()
    from ganvas.core.errors import GanvasError
    from ganvas.core.hosts.watch.loop import WatchConfig, Watcher

    try:
        from ganvas.core.threads import configure_threads

        configure_threads(threads)
        stop = threading.Event()
        config = WatchConfig(
            Path(inbox),
            Path(outbox),
            model,
            poll,
            once,
            quiet,
            None,
            rescan,
            duplicates,
            max_bytes,
            max_prompts,
            allow_model_paths=allow_model_paths,
        )
        watcher = Watcher(config, stop)
        _install_signals(stop)
        counts = watcher.run()
    except GanvasError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
    if once:
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing to do"
        log.info("backlog processed: %s", summary)
        problems = (
            [f"{counts['failed']} job(s) failed; see {os.path.join(inbox, 'failed')}"] if counts.get("failed") else []
        )
        problems += [
            f"not finished: {name} ({reason}); it stays in processing/ and resumes on the next start"
            for name, reason in watcher.unfinished
        ]
        problems += [f"not claimed: {name} ({reason}); it stays in the inbox" for name, reason in watcher.unclaimed]
        if problems:
            raise click.ClickException("; ".join(problems))
