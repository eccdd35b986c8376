"""Run the app under uvicorn: bind first (clear error if taken), warm the model, print the URL, shut
down gracefully on SIGINT/SIGTERM (in-flight requests finish, then the workers stop)."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from typing import TextIO

from ganvas.core.hosts.server.config import ServerConfig, ServerConfigError

log = logging.getLogger("ganvas.server")


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServerConfigError(f"cannot use address {host!r}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = " (is another server running? choose another --port)" if exc.errno == 98 else ""
        raise ServerConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.listen(2048)  # clients that connect while the event loop starts wait in the backlog, not refused
    return sock


def uvicorn_config(app, config: ServerConfig):
    """The uvicorn settings of `ganvas serve` and of BackgroundServer: one place, so tests see the real ones."""
    import uvicorn

    from ganvas.core.hosts.server.protocol import protocol_for

    # limit_concurrency stays off: uvicorn's counts idle sockets and answers plain text; the protocol limits instead
    return uvicorn.Config(
        app,
        http=protocol_for(config),
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_keep_alive=config.keep_alive_s,
        timeout_graceful_shutdown=max(1, int(config.shutdown_timeout_s)),
    )


def _access_logging(target: str | None) -> None:
    logger = logging.getLogger("ganvas.server.access")
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    if target is None:
        logger.setLevel(logging.WARNING)
        return
    handler = logging.StreamHandler(sys.stderr) if target == "-" else logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def serve(config: ServerConfig, plugins=None, *, out: TextIO | None = None) -> int:
    """Serve until SIGINT/SIGTERM. Returns 0 after a clean stop; raises ServerConfigError if it cannot start."""
    import uvicorn

    from ganvas.core.hosts.server.app import create_app
    from ganvas.core.threads import configure_threads

    out = out or sys.stderr
    config.check()
    threads = configure_threads(config.threads)
    sock = bind(config.host, config.port)
    port = sock.getsockname()[1]
    url = f"http://{config.display_host()}:{port}"
    _access_logging(config.access_log)
    failure: list[str] = []

    def say(line: str) -> None:
        print(f"ganvas serve: {line}", file=out, flush=True)

    def on_ready(state) -> None:
        pipe = state.hub.default_pipeline()
        say(
            f"ready at {url}/v1 (OpenAI base_url) - model {pipe.name!r} ({pipe.resolution} px), "
            f"{config.workers} workers x {threads} thread(s), queue {config.max_queue}, "
            f"API key {'required' if config.api_key else 'off'}; OpenAPI at {url}/openapi.json; Ctrl+C stops"
        )

    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(config, plugins, on_ready=on_ready, on_fatal=on_fatal)
    server = uvicorn.Server(uvicorn_config(app, config))
    say(f"listening on {url}, loading model {config.model or 'default'}...")

    # uvicorn re-raises the signal it caught after its graceful shutdown; with these handlers installed
    # that re-raise is a no-op and the process exits 0 instead of dying of SIGTERM.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if failure:
        raise ServerConfigError(f"cannot serve: {failure[0]}")
    say("stopped")
    return 0
