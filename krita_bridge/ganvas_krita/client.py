"""HTTP client for `ganvas serve` (OpenAI Images API + ganvas extras), standard library only.

Krita's embedded Python has no numpy, torch or requests, so this speaks HTTP with `http.client`.
Calls are blocking: the docker runs them on worker threads (tasks.py), and a `Call` handle lets the
UI cancel one in flight by closing its socket, which wakes the blocked read at once.

Every failure is a `ClientError` whose `kind` says what the docker should tell the painter:
offline, timeout, cancelled, invalid (a field the server rejected; `param` names it), refused
(a policy refusal), auth, not_found, busy (queue full or model loading; `retry_after`), server,
bad_response.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_SEED = 2**53 - 1  # the server's limit (ganvas.core.requests.MAX_SEED); JSON-safe everywhere
MAX_N = 10  # OpenAI Images limit, enforced by the server too
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFAULT_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 3.0


class ClientError(Exception):
    """A failed call, said in one line. `kind` is one of the names in the module docstring."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status
        self.param, self.code, self.retry_after = param, code, retry_after

    def __str__(self) -> str:
        return self.message


@dataclass
class GeneratedImage:
    """One result: the PNG bytes exactly as the server sent them, and what reproduces it."""

    png: bytes
    seed: int | None
    prompt: str
    model: str | None = None
    style: str | None = None
    truncation: float | None = None
    revised_prompt: str | None = None
    index: int = 0


@dataclass
class GenerateParams:
    prompt: str
    n: int = 1
    seed: int | None = None
    truncation: float | None = None
    style: str | None = None
    model: str | None = None
    size: int | None = None  # None = the model's native resolution ("auto")

    def check(self) -> "GenerateParams":
        """The checks worth doing before a round trip; the server checks everything again."""
        if not self.prompt.strip():
            raise ClientError("invalid", "the prompt is empty", param="prompt")
        if not 1 <= self.n <= MAX_N:
            raise ClientError("invalid", f"count must be 1..{MAX_N}, got {self.n}", param="n")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED - (self.n - 1):
            raise ClientError(
                "invalid", f"seed must be in 0..{MAX_SEED - (self.n - 1)} for {self.n} images", param="seed"
            )
        if self.truncation is not None and not 0 < self.truncation <= 1:
            raise ClientError("invalid", f"truncation must be in (0, 1], got {self.truncation}", param="truncation")
        return self

    def body(self) -> dict:
        body: dict = {"prompt": self.prompt, "n": self.n, "response_format": "b64_json"}
        if self.seed is not None:
            body["seed"] = self.seed
        if self.truncation is not None:
            body["truncation"] = float(self.truncation)
        if self.style:
            body["style"] = self.style
        if self.model:
            body["model"] = self.model
        body["size"] = f"{self.size}x{self.size}" if self.size else "auto"
        return body


class Call:
    """Handle of one request in flight; `cancel()` from any thread aborts it with kind "cancelled"."""

    def __init__(self):
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self.cancelled = False

    def attach(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
            if self.cancelled:
                raise ClientError("cancelled", "cancelled")

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in the worker thread
            except OSError:
                pass


def normalize_url(url: str) -> str:
    """'127.0.0.1:8000', 'http://host:8000/v1/' -> 'http://host:8000'. Raises ClientError for others."""
    text = (url or "").strip()
    if not text:
        raise ClientError("invalid", "the server URL is empty (e.g. http://127.0.0.1:8000)", param="url")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ClientError("invalid", f"the server URL must start with http:// or https://, got {url!r}", param="url")
    if not parts.hostname:
        raise ClientError("invalid", f"the server URL has no host: {url!r}", param="url")
    try:
        parts.port
    except ValueError:
        raise ClientError("invalid", f"the server URL has a bad port: {url!r}", param="url") from None
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return f"{parts.scheme}://{parts.netloc}{path}"


def is_loopback_url(url: str) -> bool:
    host = urlsplit(normalize_url(url)).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def url_port(url: str) -> int:
    parts = urlsplit(normalize_url(url))
    return parts.port or (443 if parts.scheme == "https" else 80)


def _retry_after(headers) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value:
            try:
                return float(value) * scale
            except ValueError:
                pass
    return None


def error_from_response(status: int, payload: bytes, headers=None) -> ClientError:
    """Turn an HTTP error answer (OpenAI shape or not) into one ClientError."""
    message = param = code = None
    try:
        err = json.loads(payload.decode("utf-8")).get("error")
        if isinstance(err, dict):
            message, param, code = err.get("message"), err.get("param"), err.get("code")
        elif isinstance(err, str):
            message = err
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    if not message:
        snippet = " ".join(payload[:200].decode("utf-8", "replace").split())
        message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    if status == 400 and code == "request_refused":
        kind = "refused"
    elif status in (400, 413, 422):
        kind = "invalid"
    elif status in (401, 403):
        kind = "auth"
    elif status == 404:
        kind = "not_found"
    elif status in (429, 503):
        kind = "busy"
    else:
        kind = "server"
    return ClientError(kind, str(message), status=status, param=param, code=code, retry_after=_retry_after(headers))


class GanvasClient:
    """Blocking client of one server. Thread-safe: each call opens its own connection."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S):
        self.base = normalize_url(url)
        self.api_key = api_key or None
        self.timeout = timeout
        parts = urlsplit(self.base)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path

    # --- transport ---------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        timeout: float | None = None,
        call: Call | None = None,
        accept_status: tuple[int, ...] = (),
    ) -> tuple[int, dict]:
        """One JSON round trip. Returns (status, parsed body); raises ClientError for failures."""
        timeout = self.timeout if timeout is None else timeout
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=timeout)
        headers = {"Accept": "application/json", "User-Agent": "ganvas-krita"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        where = f"{self.base}{path}"
        try:
            if call is not None:
                call.attach(conn)
            conn.connect()
            if call is not None and call.cancelled:
                raise ClientError("cancelled", "cancelled")
            conn.request(method, self._prefix + path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            status = response.status
            resp_headers = response.headers
        except ClientError:
            raise
        except (socket.timeout, TimeoutError):
            if call is not None and call.cancelled:
                raise ClientError("cancelled", "cancelled") from None
            raise ClientError("timeout", f"no answer from {self.base} within {timeout:g} s") from None
        except (ConnectionRefusedError, socket.gaierror) as exc:
            if call is not None and call.cancelled:
                raise ClientError("cancelled", "cancelled") from None
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else f"unknown host ({exc})"
            raise ClientError("offline", f"cannot reach {self.base}: {reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            if call is not None and call.cancelled:
                raise ClientError("cancelled", "cancelled") from None
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ClientError("offline", f"lost the connection to {where}: {reason}") from None
        finally:
            conn.close()
        if call is not None and call.cancelled:
            raise ClientError("cancelled", "cancelled")
        if status >= 400 and status not in accept_status:
            raise error_from_response(status, payload, resp_headers)
        try:
            parsed = json.loads(payload.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ClientError(
                "bad_response",
                f"{where} answered HTTP {status} with something that is not JSON; is this a ganvas server?",
                status=status,
            ) from None
        if not isinstance(parsed, dict):
            raise ClientError("bad_response", f"{where} answered with JSON that is not an object", status=status)
        return status, parsed

    # --- endpoints ---------------------------------------------------------------------------------------
    def health(self, call: Call | None = None, timeout: float = HEALTH_TIMEOUT_S) -> dict:
        """{"status": "ok"|"loading"|"stopping"|"failed", "model": ...}; 503 is an answer, not an error."""
        _, body = self.request("GET", "/health", timeout=timeout, call=call, accept_status=(503,))
        if not isinstance(body.get("status"), str):
            raise ClientError("bad_response", f"{self.base}/health has no status; is this a ganvas server?")
        return body

    def models(self, call: Call | None = None, timeout: float = HEALTH_TIMEOUT_S) -> list[dict]:
        """[{"id": name, "resolution": px or None, "styles": [...], "sizes": [...]}, ...] in the server's order
        (resolution and styles are known once the server has loaded that model; "sizes", the output sizes a
        model offers besides its native one, only where the server lists them)."""
        _, body = self.request("GET", "/v1/models", timeout=timeout, call=call)
        data = body.get("data")
        if not isinstance(data, list):
            raise ClientError("bad_response", f"{self.base}/v1/models has no data list")

        def listed(value, kind):
            if not isinstance(value, list):
                return []
            return [v for v in value if isinstance(v, kind) and not isinstance(v, bool)]

        return [
            {
                "id": str(m["id"]),
                "resolution": m.get("resolution"),
                "styles": listed(m.get("styles"), str),
                "sizes": listed(m.get("sizes"), int),
            }
            for m in data
            if isinstance(m, dict) and m.get("id")
        ]

    def generate(
        self, params: GenerateParams, call: Call | None = None, timeout: float | None = None
    ) -> tuple[list[GeneratedImage], float]:
        """Generate `params.n` images; returns them and the round-trip time in seconds."""
        params.check()
        started = time.perf_counter()
        _, body = self.request("POST", "/v1/images/generations", params.body(), timeout=timeout, call=call)
        elapsed = time.perf_counter() - started
        return parse_images(body, params, self.base), elapsed


def parse_images(body: dict, params: GenerateParams, where: str = "the server") -> list[GeneratedImage]:
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise ClientError("bad_response", f"{where} answered without images (no data list)")
    images = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("b64_json"), str):
            raise ClientError("bad_response", f"{where}: image {index} has no b64_json")
        try:
            png = base64.b64decode(item["b64_json"], validate=True)
        except (binascii.Error, ValueError):
            raise ClientError("bad_response", f"{where}: image {index} is not valid base64") from None
        if not png.startswith(PNG_SIGNATURE):
            raise ClientError("bad_response", f"{where}: image {index} is not a PNG")
        seed = item.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            # A plain OpenAI-compatible server does not echo seeds; ganvas's rule is seed + i.
            seed = params.seed + index if params.seed is not None else None
        images.append(
            GeneratedImage(
                png=png,
                seed=seed,
                prompt=params.prompt,
                model=params.model,
                style=params.style,
                truncation=params.truncation,
                revised_prompt=item.get("revised_prompt"),
                index=index,
            )
        )
    return images


@dataclass
class ServerInfo:
    """What the docker shows about a connection."""

    status: str
    model: str | None = None
    models: list[dict] = field(default_factory=list)


def probe(client: GanvasClient, call: Call | None = None) -> ServerInfo:
    """Health, then (when healthy) the model list: what "connect" does."""
    health = client.health(call=call)
    info = ServerInfo(status=health["status"], model=health.get("model"))
    if info.status == "ok":
        info.models = client.models(call=call)
    return info
