"""Request checks beyond the schema (sizes), and FastAPI's validation errors in the OpenAI shape."""
from typing import Optional

from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse

from ..requests import MIN_SIZE
from .config import MAX_SIDE
from .errors import APIError, error_response


def parse_size(size: Optional[str]) -> Optional[int]:
    if size is None or size == "auto":
        return None
    width, _, height = size.partition("x")
    if width != height:
        raise APIError(400, f"size {size!r} is not square; this model makes square images (e.g. 256x256, or auto "
                            f"for its native resolution)", param="size")
    side = int(width)
    if not MIN_SIZE <= side <= MAX_SIDE:
        raise APIError(400, f"size {size!r} is outside {MIN_SIZE}x{MIN_SIZE}..{MAX_SIDE}x{MAX_SIDE}", param="size")
    return side


def validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": "value_error"}
    if (first.get("loc") or ("body",))[0] == "path":  # a malformed image id or model name names nothing: 404
        return error_response(404, "no such resource (malformed name in the path)", code="not_found")
    loc = [p for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    param = str(loc[0]) if loc else None
    kind = first.get("type", "")
    if kind == "json_invalid":
        message = f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})"
    elif param is None and kind == "missing":
        message = "a JSON request body is required"
    elif param is None:
        message = "the request body must be a JSON object (Content-Type: application/json)"
    elif kind == "extra_forbidden":
        message = f"unknown field {param!r}"
    elif kind == "missing":
        message = f"{param} is required"
    else:
        where = "".join(f"[{p}]" for p in loc[1:])
        message = f"{param}{where}: {first.get('msg', 'invalid value')}"
    more = len(errors) - 1
    if more > 0:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return error_response(400, message, param=param)
