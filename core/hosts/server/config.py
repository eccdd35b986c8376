"""Server settings and the safety rule checked before anything heavy is imported."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

MAX_N = 10  # the OpenAI Images limit for dall-e-2
MAX_SIDE = 1024  # largest requested side: dall-e-2's biggest square; bigger is a memory/CPU hazard
MAX_BODY_BYTES = 128 * 1024  # 16 prompts of 1000 characters fit even fully \u-escaped (6 bytes each)
MAX_FRAMES = 64  # interpolation frames per request
MAX_PIXELS = MAX_N * MAX_SIDE * MAX_SIDE  # per request: what n=10 at 1024x1024 makes; bounds memory and time
MAX_KEYS = 16  # interpolation key frames (prompts or seeds) per request
URL_TTL_S = 60 * 60  # OpenAI image URLs are valid for 60 minutes
HEADER_TIMEOUT_S = 10.0  # a request's headers, from connecting (or the previous response) to the blank line
BODY_TIMEOUT_S = 30.0  # a request's body (at most 128 KiB) once its headers are in
KEEP_ALIVE_S = 5.0  # an idle connection between requests (uvicorn's default)
MAX_CONNECTIONS = 512  # open sockets; well under the usual 1024 file descriptors
DEFAULT_PORT = 8000


class ServerConfigError(ValueError):
    """A setting that makes the server unsafe or unable to start; the message says how to fix it."""


def default_store_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ganvas" / "server-images"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to those (e.g. "localhost")."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


@dataclass
class ServerConfig:
    """Everything `ganvas serve` takes. `check()` refuses unsafe or impossible combinations."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    model: str | None = None  # default model: registered name (or, for the operator, a folder)
    workers: int = 2  # generation worker threads (the fixed pool)
    threads: int | None = None  # torch CPU threads; None = GANVAS_THREADS or 1
    max_queue: int = 16  # requests waiting beyond the running ones; more get 429
    cors_origins: list[str] = field(default_factory=list)
    store_dir: Path = field(default_factory=default_store_dir)
    url_ttl_s: int = URL_TTL_S
    max_body_bytes: int = MAX_BODY_BYTES
    max_prompt_chars: int | None = None  # None = the request policy's limit (GANVAS_MAX_PROMPT_CHARS)
    public_url: str | None = None  # base for `url` results; default: the address the client reached
    access_log: str | None = "-"  # "-" = stderr, a path, or None for off
    shutdown_timeout_s: float = 30.0  # in-flight requests get this long to finish on SIGTERM/SIGINT
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    keep_alive_s: float = KEEP_ALIVE_S
    max_connections: int = MAX_CONNECTIONS  # beyond it the oldest connection that only waits is closed
    max_in_flight: int | None = None  # requests being handled at once; more get 503. None: see in_flight_limit()

    def check(self) -> "ServerConfig":
        if self.api_key is not None and not self.api_key.strip():
            raise ServerConfigError("the API key is empty; give a non-empty --api-key / GANVAS_API_KEY or none")
        if self.api_key is not None and self.api_key != self.api_key.strip():
            # HTTP strips header whitespace, so such a key could never match: say so now, not with 401s later
            raise ServerConfigError(
                "the API key starts or ends with whitespace (a stray space or newline?); "
                "remove it from --api-key / GANVAS_API_KEY"
            )
        if not is_loopback(self.host) and not self.api_key:
            raise ServerConfigError(
                f"refusing to bind {self.host!r} without an API key: anyone who can reach that address could use "
                f"this machine. Set --api-key or GANVAS_API_KEY, or bind 127.0.0.1 (the default)"
            )
        if not 0 <= self.port <= 65535:
            raise ServerConfigError(f"port {self.port} is outside 0..65535")
        if self.workers < 1:
            raise ServerConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ServerConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.max_queue < 0:
            raise ServerConfigError(f"--max-queue must be 0 or more, got {self.max_queue}")
        for name, value in (
            ("--header-timeout", self.header_timeout_s),
            ("--body-timeout", self.body_timeout_s),
            ("--keep-alive", self.keep_alive_s),
        ):
            if not value > 0:
                raise ServerConfigError(f"{name} must be more than 0 seconds, got {value}")
        if self.max_connections < 1:
            raise ServerConfigError(f"--max-connections must be at least 1, got {self.max_connections}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ServerConfigError(f"--max-in-flight must be at least 1, got {self.max_in_flight}")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ServerConfigError(f"--public-url must start with http:// or https://, got {self.public_url!r}")
        return self

    def in_flight_limit(self) -> int:
        """Requests handled at once: room for every queued job plus quick ones (health, models, files)."""
        return self.max_in_flight or max(256, 8 * (self.workers + self.max_queue))

    def display_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host
