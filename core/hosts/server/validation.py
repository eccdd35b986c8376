"""Request checks beyond the schema (sizes), and FastAPI's validation errors in the OpenAI shape."""

import re
from typing import Optional

from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse

from ganvas.core.hosts.server.config import MAX_SIDE
from ganvas.core.hosts.server.errors import APIError, error_response
from ganvas.core.requests import MIN_SIZE

_SIDE = "[0-9]{1,5}"  # ASCII digits only (a regex \d also takes other scripts' digits); more than 5 is absurd
SIZE_PATTERN = f"^(auto|{_SIDE}x{_SIDE})$"  # the OpenAPI document's pattern; parse_size applies the same rule
_SIZE = re.compile(f"({_SIDE})x({_SIDE})")


def size_format_message(size) -> str:
    return f"size {size!r} is not WIDTHxHEIGHT in pixels (e.g. 256x256, at most 5 digits a side) or auto"


def parse_size(size: Optional[str]) -> Optional[int]:
    """The one reader of `size`: "WxH" -> the square side in pixels, None for auto (native resolution).
    Sides are numbers, so "8x08" is 8x8; anything but two ASCII integers and an "x" is refused."""
    if size is None or size == "auto":
        return None
    match = _SIZE.fullmatch(size)
    if match is None:
        raise APIError(400, size_format_message(size), param="size")
    width, height = int(match[1]), int(match[2])
    if width != height:
        raise APIError(
            400,
            f"size {size!r} is not square; this model makes square images (e.g. 256x256, or auto "
            f"for its native resolution)",
            param="size",
        )
    if not MIN_SIZE <= width <= MAX_SIDE:
        raise APIError(400, f"size {size!r} is outside {MIN_SIZE}x{MIN_SIZE}..{MAX_SIDE}x{MAX_SIDE}", param="size")
    return width


def _json_position(doc, pos) -> str:
    """' at line L column C' for a character offset (what json.JSONDecodeError says); '' if unknown."""
    if not isinstance(doc, str) or not isinstance(pos, int):
        return ""
    line, column = doc.count("\n", 0, pos) + 1, pos - doc.rfind("\n", 0, pos)
    return f" at line {line} column {column}"


def validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": "value_error"}
    if (first.get("loc") or ("body",))[0] == "path":  # a malformed image id or model name names nothing: 404
        return error_response(404, "no such resource (malformed name in the path)", code="not_found")
    loc = [p for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    kind = first.get("type", "")
    param = str(loc[0]) if loc and kind != "json_invalid" else None  # json_invalid's loc is an offset, no field
    if kind == "json_invalid":
        where = _json_position(getattr(exc, "body", None), loc[0] if loc else None)
        message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}{where}"
    elif param is None and kind == "missing":
        message = "a JSON request body is required"
    elif param is None:
        message = "the request body must be a JSON object (Content-Type: application/json)"
    elif kind == "extra_forbidden":
        message = f"unknown field {param!r}"
    elif kind == "missing":
        message = f"{param} is required"
    elif kind == "string_pattern_mismatch" and loc == ["size"]:  # the schema's pattern says what parse_size would
        message = size_format_message(first.get("input"))
    else:
        where = "".join(f"[{p}]" for p in loc[1:])
        message = f"{param}{where}: {first.get('msg', 'invalid value')}"
    more = len(errors) - 1
    if more > 0:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return error_response(400, message, param=param)
