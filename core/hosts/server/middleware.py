"""ASGI middleware: access log (outermost), API-key check, in-flight limit, body-size limit.

Pure ASGI rather than BaseHTTPMiddleware, so a refused request is answered before its body is
parsed, and nothing here buffers responses.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from typing import Any, Callable

from ganvas.core.hosts.server.errors import error_response

Scope = dict
ASGIApp = Callable

log = logging.getLogger("ganvas.server")
access_log = logging.getLogger("ganvas.server.access")


class AccessLog:
    """One JSON line per request: time, client, method, path, status, bytes, duration, request id and
    whatever the route put in scope["state"]["log"] (model, n, queue wait). Never the key or the prompt."""

    def __init__(self, app: ASGIApp, logger: logging.Logger = access_log):
        self.app, self.logger = app, logger

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["log"] = {}
        status, sent = 500, 0

        async def send_logged(message: dict[str, Any]) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            if self.logger.isEnabledFor(logging.INFO):
                client = scope.get("client")
                record = {
                    "ts": round(time.time(), 3),
                    "id": request_id,
                    "client": f"{client[0]}:{client[1]}" if client else None,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "bytes": sent,
                    "ms": round((time.perf_counter() - start) * 1000, 1),
                    **scope["state"]["log"],
                }
                self.logger.info(json.dumps(record, ensure_ascii=False))


class RequireKey:
    """`Authorization: Bearer <key>` on every /v1 route except image files (their unguessable ids are the
    capability, as with OpenAI's signed URLs: clients fetch them without headers)."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope: Scope, receive, send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not path.startswith("/v1/")
            or path.startswith("/v1/images/files/")
            or scope["method"] == "OPTIONS"
        ):
            return await self.app(scope, receive, send)
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
        # compare_digest on bytes: constant time, and no TypeError for non-ASCII keys
        if not hmac.compare_digest(given, self.key):
            message = (
                "missing API key: send 'Authorization: Bearer <key>'" if not given else "incorrect API key provided"
            )
            response = error_response(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class LimitInFlight:
    """At most `limit` requests handled at once; more get 503 + Retry-After in the OpenAI shape.

    It sits inside RequireKey, so a request refused for its key never takes a place: a flood of keyless
    requests cannot push a keyed client out (counting uvicorn's tasks did, while their 401s were still
    being written). One event loop runs every request, so a plain counter needs no lock.
    """

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit, self.active = app, limit, 0
        self.quiet_until = 0.0  # the next overload warning, so a burst logs one line

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            now = time.monotonic()
            if now >= self.quiet_until:
                self.quiet_until = now + 10
                log.warning(
                    "%d requests in flight (limit %d): answering 503 (said once per 10 s)", self.active, self.limit
                )
            response = error_response(
                503,
                f"the server is handling {self.limit} requests already; retry after the Retry-After header",
                type="server_error",
                code="server_overloaded",
                retry_after=1,
                headers={"Connection": "close"},
            )
            return await response(scope, receive, send)
        self.active += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.active -= 1


class LimitBody:
    """Read at most `limit` bytes of a request body, then hand the buffered body to the app; 413 beyond."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_big = error_response(413, f"request body exceeds {self.limit} bytes", code="request_too_large")
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    return await error_response(400, "invalid Content-Length header")(scope, receive, send)
                if int(value) > self.limit:
                    return await too_big(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:  # chunked uploads have no Content-Length to check up front
                return await too_big(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for disconnect like a real receive

        return await self.app(scope, replay, send)
