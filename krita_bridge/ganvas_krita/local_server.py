"""Start and stop a local `ganvas serve` from the docker, with the command from the settings.

One server per Krita process (`SHARED`), whichever window's docker started it; it is stopped when
Krita closes. Its output goes to a log file whose last lines the docker shows if it exits early.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from .client import ClientError, is_loopback_url, normalize_url, url_port


def command_args(template: str, url: str) -> list[str]:
    """The configured command with {port} and {host} filled in from the server URL."""
    if not (template or "").strip():
        raise ClientError(
            "invalid", "no server command configured (e.g. ganvas serve --port {port})", param="server_command"
        )
    base = normalize_url(url)
    try:
        text = template.format(port=url_port(base), host=urlsplit(base).hostname)
    except (KeyError, IndexError, ValueError) as exc:
        raise ClientError(
            "invalid",
            f"the server command has an unknown placeholder ({exc}); use {{port}} and {{host}} only",
            param="server_command",
        ) from None
    try:
        args = shlex.split(text)
    except ValueError as exc:
        raise ClientError("invalid", f"cannot parse the server command: {exc}", param="server_command") from None
    if not args:
        raise ClientError("invalid", "the server command is empty", param="server_command")
    return args


def not_found_message(program: str) -> str:
    """What to do when Krita cannot find the server program (usually: ganvas lives in a virtualenv that
    is not on Krita's PATH, and the plugin was enabled in Krita without `ganvas krita install`)."""
    return (
        f"Start local server cannot find the program \u201c{program}\u201d. Krita does not see the environment "
        "ganvas is installed in. Fix: run \u201cganvas krita install\u201d from that environment (it records "
        "the full path; restart Krita), or put the full path under Server > Command, e.g. "
        "/path/to/venv/bin/ganvas serve --port {port}."
    )


class LocalServer:
    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.args: list[str] = []
        self.url: str | None = None
        self.log_path: Path | None = None
        self._log = None
        self._stopping: list[subprocess.Popen] = []

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, template: str, url: str, env: dict | None = None) -> list[str]:
        if self.running:
            raise ClientError("invalid", f"a local server is already running (pid {self.process.pid})")
        if not is_loopback_url(url):
            raise ClientError(
                "invalid",
                f"{normalize_url(url)} is not this computer; a local server needs a URL like http://127.0.0.1:8000",
                param="url",
            )
        args = command_args(template, url)
        if env is None:
            # The server is another Python: Krita's own PYTHONPATH/PYTHONHOME (set by some Krita builds) would break it.
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        fd, name = tempfile.mkstemp(prefix="ganvas-krita-serve-", suffix=".log")
        self._close_log()
        self._log = os.fdopen(fd, "wb")
        self.log_path = Path(name)
        try:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            self._close_log()
            raise ClientError("setup", not_found_message(args[0]), param="server_command") from None
        except OSError as exc:
            self._close_log()
            raise ClientError(
                "setup",
                f"Start local server could not run {args[0]!r}: {exc.strerror or exc}. "
                "Check the command under Server > Command.",
                param="server_command",
            ) from None
        self.args, self.url = args, normalize_url(url)
        return args

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 3) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        kept = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(kept[-lines:])

    def stop(self, timeout: float = 3.0) -> int | None:
        """SIGTERM (the server finishes in-flight requests), then kill after `timeout` seconds. Blocks:
        for Krita's exit. The docker's button uses terminate() + finish_stopping() instead."""
        self.terminate()
        return self.finish_stopping(timeout)

    def terminate(self) -> None:
        """Ask the server to stop, without waiting."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
            self._stopping.append(process)
        self._close_log()

    def finish_stopping(self, timeout: float = 0.0) -> int | None:
        """Reap stopped servers; kill any still running after `timeout` seconds. Returns the last exit code."""
        code = None
        for process in list(self._stopping):
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(3)
            self._stopping.remove(process)
            code = process.returncode
        return code

    def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.running

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


SHARED = LocalServer()
