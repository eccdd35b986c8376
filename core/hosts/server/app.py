"""The ASGI app: OpenAI Images routes, ganvas extras, health, and the error mapping.

FastAPI because the OpenAPI document (used by clients and by the schemathesis fuzz test) is then
generated from the same pydantic models that validate requests, so the two cannot drift apart.
(No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime, and the
request models are built per app from the configured limits.)
"""

import asyncio
import contextlib
import logging
import threading
from functools import partial
from typing import Any, Callable, Optional

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse, JSONResponse

from ganvas import __version__
from ganvas.core.errors import InvalidRequest
from ganvas.core.hosts.server.config import MAX_FRAMES, MAX_PIXELS, ServerConfig, ServerConfigError
from ganvas.core.hosts.server.errors import APIError, error_response, error_responses
from ganvas.core.hosts.server.jobs import run_generation, run_interpolation
from ganvas.core.hosts.server.middleware import AccessLog, LimitBody, LimitInFlight, RequireKey
from ganvas.core.hosts.server.schemas import (
    Health,
    ImagesResponse,
    InterpolationResponse,
    ModelCard,
    ModelList,
    make_generation_model,
    make_interpolation_model,
)
from ganvas.core.hosts.server.state import ServerState
from ganvas.core.hosts.server.validation import parse_size, validation_error
from ganvas.core.plugin_manager import GanvasPlugins, get_plugin_manager
from ganvas.core.requests import MAX_SEED, GenerationRequest

log = logging.getLogger("ganvas.server")

DEFAULT_STEPS = 8
FILE_PATTERN = r"^[A-Za-z0-9_-]{22}\.png$"  # store.ID_PATTERN + ".png"


def _document_bearer_auth(app: FastAPI) -> None:
    """Declare the Bearer key in the OpenAPI document for the routes RequireKey guards (clients, fuzzers)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, operations in doc["paths"].items():
                if path.startswith("/v1/") and not path.startswith("/v1/images/files/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi


def create_app(
    config: ServerConfig,
    plugins: Optional[GanvasPlugins] = None,
    *,
    on_ready: Optional[Callable[["ServerState"], None]] = None,
    on_fatal: Optional[Callable[[str], None]] = None,
) -> FastAPI:
    """Build the app. The default model warms in a background thread once the server starts: requests
    get 503 + Retry-After until it is ready, then `on_ready(state)` runs; a failure calls `on_fatal`."""
    config.check()
    plugins = plugins or get_plugin_manager()
    from ganvas.core.policy import current_policy

    try:
        max_prompt = config.max_prompt_chars or current_policy().max_prompt_chars
    except ValueError as exc:  # e.g. GANVAS_MAX_PROMPT_CHARS=abc: say so instead of serving without limits
        raise ServerConfigError(f"the request policy is misconfigured: {exc}") from None
    GenerationBody = make_generation_model(max_prompt)
    InterpolationBody = make_interpolation_model(max_prompt)
    state = ServerState(config, plugins)

    def warm() -> None:
        try:
            state.hub.warm()
        except Exception as exc:  # reported as one line; the runner stops the server
            log.error("cannot serve: %s", state.hub.error or exc)
            if on_fatal is not None:
                on_fatal(state.hub.error or str(exc))
            return
        if on_ready is not None:
            on_ready(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=warm, name="ganvas-warm", daemon=True).start()
        yield
        if state.hub.state != "failed":
            state.hub.state = "stopping"
        # uvicorn has already waited for in-flight requests; this lets any admitted job still running end.
        await asyncio.to_thread(state.pool.shutdown, True, config.shutdown_timeout_s)

    # redirect_slashes off: its Location is built from the client's Host header (an open redirect)
    app = FastAPI(
        title="ganvas",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        description="Text-to-image GAN behind the OpenAI Images API (POST /v1/images/generations), "
        "plus interpolation. Errors use the OpenAI shape {error: {message, type, param, code}}.",
    )
    app.state.ganvas = state

    # --- errors ----------------------------------------------------------------------------------------
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message, code = f"no route {request.method} {request.url.path}", "not_found"
        elif exc.status_code == 405:
            message, code = f"method {request.method} is not allowed on {request.url.path}", "method_not_allowed"
        else:
            message, code = str(exc.detail), None
        return error_response(exc.status_code, message, code=code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(
            500, f"internal error ({type(exc).__name__}); the server log has the details", type="server_error"
        )

    # --- routes ----------------------------------------------------------------------------------------
    busy = error_responses(400, 401, 404, 413, 429, 503)

    @app.post(
        "/v1/images/generations",
        response_model=None,
        tags=["images"],
        responses={200: {"model": ImagesResponse, "description": "generated images"}, **busy},
    )
    async def create_image(body: GenerationBody, request: Request):
        """OpenAI `images.generate`; `seed`, `truncation`, `style` are ganvas extensions (SDK: extra_body)."""
        state.require_ready()
        name = state.hub.resolve(body.model)
        n = body.n or 1
        if body.seed is not None and body.seed + n - 1 > MAX_SEED:
            raise APIError(400, f"seed + n - 1 must not exceed {MAX_SEED}", param="seed")
        gen = GenerationRequest(
            body.prompt,
            n,
            body.seed,
            1.0 if body.truncation is None else body.truncation,
            name,
            body.style,
            parse_size(body.size),
            "http",
            {},
        )
        try:
            gen.validate()
        except InvalidRequest as exc:
            raise APIError(400, str(exc), param=exc.param) from None
        fmt = body.response_format or "url"
        request.state.log.update(
            model=name, n=n, format=fmt, prompt_chars=len(body.prompt), **({"user": body.user} if body.user else {})
        )
        result = await state.run(
            request, partial(run_generation, state.hub, state.store, gen, fmt, state.base_url(request))
        )
        return JSONResponse(result)

    @app.post(
        "/v1/images/interpolations",
        response_model=None,
        tags=["images"],
        responses={200: {"model": InterpolationResponse, "description": "frames of the morph"}, **busy},
    )
    async def create_interpolation(body: InterpolationBody, request: Request):
        """A morph between key frames: `prompts` and/or `seeds`; (keys - 1) * steps + 1 frames."""
        state.require_ready()
        name = state.hub.resolve(body.model)
        steps = body.steps or DEFAULT_STEPS
        keys = max(len(body.prompts), len(body.seeds or [0]))
        if keys < 2:
            raise APIError(400, "an interpolation needs two or more prompts, or two or more seeds", param="prompts")
        for field, values in (("prompts", body.prompts), ("seeds", body.seeds)):
            if values is not None and len(values) not in (1, keys):
                raise APIError(400, f"{len(values)} {field} for {keys} key frames: give 1 or {keys}", param=field)
        if body.seeds is not None and body.seed is not None:
            raise APIError(400, "give seed or seeds, not both", param="seed")
        frames = (keys - 1) * steps + 1
        if frames > MAX_FRAMES:
            raise APIError(
                400, f"{frames} frames requested ((keys - 1) * steps + 1); the limit is {MAX_FRAMES}", param="steps"
            )
        side = parse_size(body.size)
        if side is not None and frames * side * side > MAX_PIXELS:
            raise APIError(
                400,
                f"{frames} frames of {side}x{side} exceed the {MAX_PIXELS // 2**20} megapixels a "
                f"request may make; use fewer steps or a smaller size",
                param="size",
            )
        gen = GenerationRequest(
            body.prompts[0],
            1,
            None,
            1.0 if body.truncation is None else body.truncation,
            name,
            body.style,
            side,
            "http",
            {},
        )
        try:
            gen.validate()
            for prompt in body.prompts[1:]:
                gen.replace(prompt=prompt).validate()
        except InvalidRequest as exc:
            raise APIError(400, str(exc), param="prompts" if exc.param == "prompt" else exc.param) from None
        fmt = body.response_format or "url"
        request.state.log.update(model=name, frames=frames, format=fmt, **({"user": body.user} if body.user else {}))
        result = await state.run(
            request,
            partial(
                run_interpolation,
                state.hub,
                state.store,
                list(body.prompts),
                body.seeds,
                body.seed,
                steps,
                gen,
                fmt,
                state.base_url(request),
            ),
        )
        return JSONResponse(result)

    @app.get(
        "/v1/images/files/{filename}",
        tags=["images"],
        response_class=FileResponse,
        responses={200: {"content": {"image/png": {}}, "description": "the PNG"}, **error_responses(404)},
    )
    async def image_file(filename: str = Path(pattern=FILE_PATTERN)):
        """Images of `url` responses, for `url_ttl` seconds (60 minutes) after they were made."""
        found = state.store.lookup(filename[:-4]) if filename.endswith(".png") else None
        if found is None:
            raise APIError(
                404,
                f"no such image, or it has expired (url results live for {config.url_ttl_s // 60} minutes)",
                code="not_found",
            )
        path, left = found
        return FileResponse(
            path, media_type="image/png", headers={"Cache-Control": f"private, max-age={int(left)}, immutable"}
        )

    def model_card(name: str) -> dict[str, Any]:
        entry = state.hub.registered.get(name)
        pipe = state.hub._pipelines.get(name)
        return ModelCard(
            id=name,
            created=state.hub.started,
            owned_by=f"ganvas:{entry.plugin}" if entry else "ganvas",
            resolution=pipe.resolution if pipe is not None else None,
            styles=list(pipe.info.styles) if pipe is not None and pipe.info.styles else None,
            sizes=state.hub.sizes(name) if pipe is not None else None,
        ).model_dump(exclude_none=True)

    @app.get(
        "/v1/models",
        response_model=ModelList,
        response_model_exclude_none=True,
        tags=["models"],
        responses=error_responses(401),
    )
    async def list_models():
        """The models this server offers (OpenAI list shape)."""
        return {"object": "list", "data": [model_card(n) for n in state.hub.names()]}

    @app.get(
        "/v1/models/{model}",
        response_model=ModelCard,
        response_model_exclude_none=True,
        tags=["models"],
        responses=error_responses(401, 404),
    )
    async def get_model(model: str = Path(max_length=200)):
        if model not in state.hub.names():
            raise APIError(404, f"model {model!r} does not exist", param="model", code="model_not_found")
        return model_card(model)

    @app.get(
        "/health",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": Health, "description": "loading, failed or stopping"}},
    )
    async def health():
        """200 once the default model is warm; 503 while loading, after a failed load, or when stopping."""
        status = state.hub.state
        body = {
            "status": status,
            "model": state.hub.default_name,
            "queue": {k: v for k, v in state.pool.stats().items() if k in ("pending", "running", "capacity")},
        }
        return JSONResponse(
            body, status_code=200 if status == "ok" else 503, headers=None if status == "ok" else {"Retry-After": "2"}
        )

    if config.api_key:
        _document_bearer_auth(app)

    # --- middleware (the last added runs first) ---------------------------------------------------------
    app.add_middleware(LimitBody, limit=config.max_body_bytes)
    app.add_middleware(LimitInFlight, limit=config.in_flight_limit())  # inside RequireKey: keyless ones never count
    if config.api_key:
        app.add_middleware(RequireKey, api_key=config.api_key)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["Retry-After", "x-request-id"],
            max_age=600,
        )
    app.add_middleware(AccessLog)
    return app
