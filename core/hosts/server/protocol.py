"""uvicorn's HTTP/1.1 protocol (h11) with the deadlines and limits it lacks, so slow clients cannot hold
the server.

uvicorn only closes a connection that idles *after* a response: a fresh socket that says nothing,
headers sent a byte at a time, or a body that never ends stay open for ever, and its concurrency limit
counts those sockets and answers everyone else a plain-text 503. Here:
  - headers must be complete within `header_timeout_s` of connecting (or of the previous response),
  - a body within `body_timeout_s` of its headers; late ones get 408 and are closed,
  - beyond `max_connections` sockets, the oldest one that is only waiting for its client is closed
    (a newcomer is never refused for sockets that are busy with a request),
and every such answer is in the OpenAI error shape. (The in-flight limit is middleware.LimitInFlight,
after the key check.) Always h11 (even where httptools is installed),
so the behaviour does not depend on what else happens to be installed.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ganvas.core.hosts.server.config import ServerConfig
from ganvas.core.hosts.server.errors import error_body

HEADERS, BODY = "headers", "body"  # what a connection is waiting for from its client


def raw_error(status: int, reason: str, message: str, code: str | None) -> bytes:
    """A complete HTTP response, for moments when h11 cannot send one (no request parsed yet)."""
    body = json.dumps(error_body(message, code=code)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    settings: ServerConfig  # set by protocol_for()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None
        self._opened = 0.0

    # --- the connection's deadlines --------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._opened = self.loop.time()
        self._make_room()
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Start a deadline when the client starts owing us headers or a body; a total, not per byte."""
        state = self.conn.their_state
        waiting_for = (
            None
            if self.transport.is_closing()
            else HEADERS
            if state is h11.IDLE
            else BODY
            if state is h11.SEND_BODY
            else None
        )
        if waiting_for == self._waiting_for:
            return
        self._stop_timer()
        self._waiting_for = waiting_for
        if waiting_for is not None:
            seconds = self.settings.header_timeout_s if waiting_for == HEADERS else self.settings.body_timeout_s
            self._timer = self.loop.call_later(seconds, self._expired, waiting_for)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, waiting_for: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        started = (
            self.conn.trailing_data[0]
            if waiting_for == HEADERS
            else self.cycle is not None and not self.cycle.response_started
        )
        if started:  # a request began and stalled: say why; an idle socket is simply closed
            limit = self.settings.header_timeout_s if waiting_for == HEADERS else self.settings.body_timeout_s
            self.transport.write(
                raw_error(
                    408,
                    "Request Timeout",
                    f"the request's {waiting_for} did not arrive within {limit:g} s",
                    "request_timeout",
                )
            )
        self.transport.close()

    # --- limits ----------------------------------------------------------------------------------------
    def _idle(self) -> bool:
        """True while no request of this connection is being handled (it only waits for its client)."""
        return self.cycle is None or self.cycle.response_complete

    def _make_room(self) -> None:
        """Over max_connections: close the oldest other connection that only waits for its client.

        Sockets already closing still sit in `connections` until the loop's next turn, so they are not
        counted: in a burst of connects they would crowd out every newcomer. When every other live
        connection is handling a request, the newcomer stays: those are bounded by the in-flight limit
        (the rest get their 503 at once), so the overshoot is short and small.
        """
        live = [c for c in self.connections if c is not self and not c.transport.is_closing()]
        if len(live) < self.settings.max_connections:
            return
        idle = [c for c in live if isinstance(c, GuardedH11Protocol) and c._idle()]
        if idle:
            min(idle, key=lambda c: c._opened).transport.close()

    def send_400_response(self, msg: str) -> None:
        """Unparseable HTTP: uvicorn's answer, in the OpenAI shape."""
        self.transport.write(raw_error(400, "Bad Request", "the request is not valid HTTP/1.1", None))
        self.transport.close()


def protocol_for(config: ServerConfig) -> type[GuardedH11Protocol]:
    """The protocol class for one server (uvicorn instantiates it per connection)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"settings": config})
