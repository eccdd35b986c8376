"""`ganvas serve`: the pipeline behind an OpenAI-compatible HTTP API (this package, core/hosts/server/).

Added to the CLI by the built-in plugin plugins/commands.py; also `python -m ganvas.core.hosts.server.command`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click


def serve_command() -> click.Command:
    """The `ganvas serve` click command (server config imported here, FastAPI/torch only when it runs)."""
    from ganvas.core.hosts.server.config import (
        BODY_TIMEOUT_S,
        DEFAULT_PORT,
        HEADER_TIMEOUT_S,
        KEEP_ALIVE_S,
        MAX_CONNECTIONS,
        default_store_dir,
    )
    from ganvas.core.requests import DEFAULT_MODEL

    @click.command("serve")
    @click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        help="address to bind; anything but loopback requires --api-key",
    )
    @click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="TCP port (0 = any free port)")
    @click.option(
        "--api-key",
        envvar="GANVAS_API_KEY",
        default=None,
        show_envvar=True,
        help="require 'Authorization: Bearer KEY' on /v1 routes",
    )
    @click.option(
        "--model",
        "-m",
        default=None,
        help=f"default model: a registered name (or a checkpoint folder); default GANVAS_MODEL, else {DEFAULT_MODEL}",
    )
    @click.option(
        "--workers",
        type=click.IntRange(1, 64),
        default=2,
        show_default=True,
        help="generation worker threads (the fixed pool)",
    )
    @click.option(
        "--threads", type=click.IntRange(1, 256), default=None, help="torch CPU threads; default GANVAS_THREADS or 1"
    )
    @click.option(
        "--max-queue",
        type=click.IntRange(0, 10_000),
        default=16,
        show_default=True,
        help="requests that may wait for a worker; more are answered 429 + Retry-After",
    )
    @click.option(
        "--cors-origin",
        "cors_origins",
        multiple=True,
        help="allow browser calls from this origin (repeatable; '*' for any); CORS is off by default",
    )
    @click.option(
        "--store",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"folder for `url` images (kept 60 minutes) [default: {default_store_dir()}]",
    )
    @click.option(
        "--public-url",
        default=None,
        help="base URL for `url` results (https://host behind a proxy); default: the bound address",
    )
    @click.option(
        "--access-log", default="-", show_default=True, help="JSON-lines access log: '-' (stderr), a file, or 'off'"
    )
    @click.option(
        "--shutdown-timeout",
        type=click.FloatRange(0, 3600),
        default=30.0,
        show_default=True,
        help="seconds in-flight requests get to finish on Ctrl+C / SIGTERM",
    )
    @click.option(
        "--header-timeout",
        type=click.FloatRange(0, 3600, min_open=True),
        default=HEADER_TIMEOUT_S,
        show_default=True,
        help="seconds a client has to send a request's headers (idle sockets included)",
    )
    @click.option(
        "--body-timeout",
        type=click.FloatRange(0, 3600, min_open=True),
        default=BODY_TIMEOUT_S,
        show_default=True,
        help="seconds a client has to send a request's body; later: 408",
    )
    @click.option(
        "--keep-alive",
        type=click.FloatRange(0, 3600, min_open=True),
        default=KEEP_ALIVE_S,
        show_default=True,
        help="seconds an idle connection stays open between requests",
    )
    @click.option(
        "--max-connections",
        type=click.IntRange(1, 100_000),
        default=MAX_CONNECTIONS,
        show_default=True,
        help="open connections; beyond it the oldest idle one is closed",
    )
    @click.option(
        "--max-in-flight",
        type=click.IntRange(1, 100_000),
        default=None,
        help="requests handled at once, more get 503 + Retry-After [default: max(256, 8 x (workers + max-queue))]",
    )
    def serve(
        host,
        port,
        api_key,
        model,
        workers,
        threads,
        max_queue,
        cors_origins,
        store,
        public_url,
        access_log,
        shutdown_timeout,
        header_timeout,
        body_timeout,
        keep_alive,
        max_connections,
        max_in_flight,
    ):
        """Serve images over HTTP, compatible with the OpenAI Images API.

        \b
        Examples:
          ganvas serve                                 # http://127.0.0.1:8000/v1
          ganvas serve --host 0.0.0.0 --api-key s3cret --workers 2
        \b
        Client (official SDK):
          OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="local").images.generate(
              prompt="fox", n=4, response_format="b64_json", extra_body={"seed": 7, "style": "noto"})
        """
        from ganvas.core.hosts.server.config import ServerConfig, ServerConfigError

        config = ServerConfig(
            host=host,
            port=port,
            api_key=api_key,
            model=model,
            workers=workers,
            threads=threads,
            max_queue=max_queue,
            cors_origins=list(cors_origins),
            store_dir=store or default_store_dir(),
            public_url=public_url,
            access_log=None if access_log == "off" else access_log,
            shutdown_timeout_s=shutdown_timeout,
            header_timeout_s=header_timeout,
            body_timeout_s=body_timeout,
            keep_alive_s=keep_alive,
            max_connections=max_connections,
            max_in_flight=max_in_flight,
        )
        try:
            config.check()  # before importing FastAPI/torch: an unsafe bind is refused at once
            missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
            if missing:
                raise click.ClickException(
                    f"ganvas serve needs {' and '.join(missing)}: "
                    f"pip install fastapi uvicorn (or the ganvas[serve] extra)"
                )
            from ganvas.core.hosts.server.runner import serve as run

            run(config)
        except ServerConfigError as exc:
            raise click.ClickException(str(exc)) from None

    return serve


if __name__ == "__main__":  # `python -m ganvas.core.hosts.server.command` = `ganvas serve`, without the plugin list
    serve_command()(prog_name="ganvas serve")
