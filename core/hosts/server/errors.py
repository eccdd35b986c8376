"""Errors in the OpenAI shape {"error": {"message", "type", "param", "code"}} with the matching status.

The official SDK maps the HTTP status to its exception class (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 413 APIStatusError, 429 RateLimitError, 503
InternalServerError) and exposes type/param/code, so every refusal here names its field.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse

INVALID = "invalid_request_error"


class APIError(Exception):
    """Raised anywhere in a request to answer with an OpenAI-shaped error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        return error_response(
            self.status, self.message, type=self.type, param=self.param, code=self.code, retry_after=self.retry_after
        )


def error_body(message: str, type: str = INVALID, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    type: str = INVALID,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    headers = dict(headers or {})
    if retry_after is not None:
        # Whole seconds (RFC 9110); the SDK also reads retry-after-ms, which keeps sub-second estimates.
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        headers["retry-after-ms"] = str(max(1, int(retry_after * 1000)))
    return JSONResponse(error_body(message, type, param, code), status_code=status, headers=headers)


# The statuses a route can answer with, for the OpenAPI document.
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_DESCRIPTIONS = {
    400: "Invalid field (param names it) or a request refused by policy",
    401: "Missing or wrong API key",
    404: "Unknown model, route or expired image",
    413: "Request body too large",
    429: "Queue full; retry after the Retry-After header",
    503: "Model still loading, server shutting down or too many requests in flight; retry after Retry-After",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        s: {"description": _DESCRIPTIONS[s], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for s in statuses
    }
