"""Server settings and the safety rule checked before anything heavy is imported."""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

MAX_N = 10                    # the OpenAI Images limit for dall-e-2
MAX_SIDE = 1024               # largest requested side: dall-e-2's biggest square; bigger is a memory/CPU hazard
MAX_BODY_BYTES = 128 * 1024   # 16 prompts of 1000 characters fit even fully \u-escaped (6 bytes each)
MAX_FRAMES = 64               # interpolation frames per request
MAX_PIXELS = MAX_N * MAX_SIDE * MAX_SIDE  # per request: what n=10 at 1024x1024 makes; bounds memory and time
MAX_KEYS = 16                 # interpolation key frames (prompts or seeds) per request
URL_TTL_S = 60 * 60           # OpenAI image URLs are valid for 60 minutes
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
    model: str | None = None              # default model: registered name (or, for the operator, a folder)
    workers: int = 2                      # generation worker threads (the fixed pool)
    threads: int | None = None            # torch CPU threads; None = GANVAS_THREADS or 1
    max_queue: int = 16                   # requests waiting beyond the running ones; more get 429
    cors_origins: list[str] = field(default_factory=list)
    store_dir: Path = field(default_factory=default_store_dir)
    url_ttl_s: int = URL_TTL_S
    max_body_bytes: int = MAX_BODY_BYTES
    max_prompt_chars: int | None = None   # None = the request policy's limit (GANVAS_MAX_PROMPT_CHARS)
    public_url: str | None = None         # base for `url` results behind a proxy; default: the request's host
    access_log: str | None = "-"          # "-" = stderr, a path, or None for off
    shutdown_timeout_s: float = 30.0      # in-flight requests get this long to finish on SIGTERM/SIGINT

    def check(self) -> "ServerConfig":
        if self.api_key is not None and not self.api_key.strip():
            raise ServerConfigError("the API key is empty; give a non-empty --api-key / GANVAS_API_KEY or none")
        if not is_loopback(self.host) and not self.api_key:
            raise ServerConfigError(
                f"refusing to bind {self.host!r} without an API key: anyone who can reach that address could use "
                f"this machine. Set --api-key or GANVAS_API_KEY, or bind 127.0.0.1 (the default)")
        if not 0 <= self.port <= 65535:
            raise ServerConfigError(f"port {self.port} is outside 0..65535")
        if self.workers < 1:
            raise ServerConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ServerConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.max_queue < 0:
            raise ServerConfigError(f"--max-queue must be 0 or more, got {self.max_queue}")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ServerConfigError(f"--public-url must start with http:// or https://, got {self.public_url!r}")
        return self

    def display_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host
