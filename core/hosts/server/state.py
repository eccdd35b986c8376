"""What the routes share: config, models, worker pool, image store; and how a job is queued and awaited."""

import asyncio
import logging
import time
from typing import Any, Callable

from fastapi import Request

from ganvas.core.errors import GanvasError, InvalidRequest, RequestRefused
from ganvas.core.hosts.server.config import ServerConfig
from ganvas.core.hosts.server.errors import APIError
from ganvas.core.hosts.server.hub import ModelHub
from ganvas.core.hosts.server.store import ImageStore
from ganvas.core.hosts.server.workers import PoolClosed, QueueFull, WorkerPool
from ganvas.core.plugin_manager import GanvasPlugins

log = logging.getLogger("ganvas.server")


class ServerState:
    """What the routes share: config, models, the worker pool and the image store."""

    def __init__(self, config: ServerConfig, plugins: GanvasPlugins):
        self.config = config
        plugins.checks_fail_closed = True  # a policy plugin that crashes refuses the request (core/plugins.py)
        self.hub = ModelHub(plugins, config.model)
        self.store = ImageStore(config.store_dir, config.url_ttl_s)
        self.pool = WorkerPool(config.workers, config.max_queue)

    def require_ready(self) -> None:
        state = self.hub.state
        if state == "ok":
            return
        if state == "loading":
            raise APIError(
                503,
                "the model is still loading; retry shortly",
                type="server_error",
                code="model_loading",
                retry_after=2,
            )
        if state == "stopping":
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down", retry_after=5)
        raise APIError(503, f"the model failed to load: {self.hub.error}", type="server_error", code="model_failed")

    async def run(self, request: Request, job: Callable[[], Any]) -> Any:
        """Queue a job for the worker pool and await it; 429 when the queue is full."""
        submitted = time.perf_counter()
        started: list[float] = []

        def timed():
            started.append(time.perf_counter())
            return job()

        try:
            future = self.pool.submit(timed)
        except QueueFull as full:
            request.state.log["queue"] = "full"
            raise APIError(
                429,
                f"the server is busy ({full.pending} requests pending, at most "
                f"{self.pool.capacity}); retry after the Retry-After header",
                type="rate_limit_error",
                code="queue_full",
                retry_after=full.retry_after,
            ) from None
        except PoolClosed:
            raise APIError(
                503, "the server is shutting down", type="server_error", code="shutting_down", retry_after=5
            ) from None
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # the client left: skip the job if it has not started
            raise
        except InvalidRequest as exc:
            raise APIError(400, str(exc), param=exc.param) from None
        except RequestRefused as exc:
            if getattr(exc, "crashed", False):  # the policy plugin's fault, not the request's: 500, logged
                log.error("%s", exc)
                raise APIError(500, str(exc), type="server_error", code="policy_check_failed") from None
            raise APIError(400, str(exc), param=exc.param, code="request_refused") from None
        except GanvasError as exc:  # the server's own trouble (a broken plugin or model), said in one line
            log.error("generation failed: %s", exc)
            raise APIError(500, str(exc), type="server_error") from None
        finally:
            if started:
                request.state.log["wait_ms"] = round((started[0] - submitted) * 1000, 1)

    def base_url(self, request: Request) -> str:
        """Where `url` results point: --public-url, else the address this connection reached. Never the
        request's Host header, which the client chooses (a forged one would send users elsewhere)."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        host, port = request.scope.get("server") or (self.config.host, self.config.port)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}" if port else f"http://{host}"
