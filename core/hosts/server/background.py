"""Run the server in a background thread of this process (tests, embedding hosts, the Krita bridge's
tests): a real uvicorn on a real loopback socket, stopped gracefully on exit.

    with BackgroundServer(ServerConfig(port=0, store_dir=tmp), plugins) as srv:
        OpenAI(base_url=srv.url + "/v1", api_key="x").images.generate(prompt="a red circle")
"""

from __future__ import annotations

import asyncio
import threading
import time

from ganvas.core.hosts.server.config import ServerConfig, ServerConfigError
from ganvas.core.hosts.server.runner import bind, uvicorn_config


class BackgroundServer:
    def __init__(self, config: ServerConfig, plugins=None, *, ready_timeout: float = 120.0, wait_ready: bool = True):
        self.config, self.plugins = config, plugins
        self.ready_timeout, self.wait_ready = ready_timeout, wait_ready
        self._ready = threading.Event()
        self._failure: list[str] = []
        self._thread: threading.Thread | None = None
        self.server = None
        self.state = None
        self.url = ""

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "BackgroundServer":
        import uvicorn

        from ganvas.core.hosts.server.app import create_app

        sock = bind(self.config.host, self.config.port)
        self.url = f"http://{self.config.display_host()}:{sock.getsockname()[1]}"

        def fatal(message: str) -> None:
            self._failure.append(message)
            self._ready.set()

        app = create_app(self.config, self.plugins, on_ready=lambda state: self._ready.set(), on_fatal=fatal)
        self.state = app.state.ganvas
        self.server = uvicorn.Server(uvicorn_config(app, self.config))
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[sock])), name="ganvas-server", daemon=True
        )
        self._thread.start()
        if self.wait_ready:
            self.wait_until_ready()
        return self

    def wait_until_ready(self) -> None:
        if not self._ready.wait(self.ready_timeout):
            self.stop()
            raise TimeoutError(f"server at {self.url} not ready after {self.ready_timeout} s")
        if self._failure:
            self.stop()
            raise ServerConfigError(f"cannot serve: {self._failure[0]}")

    def stop(self, timeout: float = 60.0) -> None:
        if self.server is not None and self._thread is not None:
            self.server.should_exit = True
            deadline = time.monotonic() + timeout
            self._thread.join(max(0.0, deadline - time.monotonic()))
            self._thread = None
