"""Which models the server offers, and their loaded pipelines.

Request `model` names are looked up in the plugin registry only (a snapshot taken at start), never
turned into paths: a name that looks like a path is not offered at all. The operator's `--model` may
be a checkpoint folder; it is then offered under its folder name.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ganvas.core.errors import GanvasError, ModelNotFound
from ganvas.core.hosts.server.errors import APIError
from ganvas.core.plugin_manager import GanvasPlugins
from ganvas.core.requests import default_model_name

log = logging.getLogger("ganvas.server")

# OpenAI clients often hard-code these names; they mean "the server's default model".
OPENAI_ALIASES = ("dall-e-2", "dall-e-3")


def _path_like(name: str) -> bool:
    """Written as a path on any platform (a superset of registry.looks_like_path: also '\\', ':' and NUL)."""
    return "/" in name or "\\" in name or name.startswith(".") or ":" in name or "\x00" in name


class ModelHub:
    def __init__(self, plugins: GanvasPlugins, default: str | None = None):
        self.plugins = plugins
        self.started = int(time.time())
        warnings: list[str] = []
        registered = plugins.models(warnings)
        self.registered = {name: entry for name, entry in registered.items() if not _path_like(name)}
        for skipped in sorted(set(registered) - set(self.registered)):
            log.warning("model name %r looks like a path; the server does not offer it", skipped)
        self.default_spec = default or default_model_name()
        self.default_name: str | None = None
        self._pipelines: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.state = "loading"  # loading -> ok | failed; stopping on shutdown
        self.error: str | None = None

    # --- lookup ----------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        names = set(self.registered)
        if self.default_name:
            names.add(self.default_name)
        return sorted(names)

    def resolve(self, requested: str | None) -> str:
        """The model name a request gets; APIError 404 for names the registry does not hold."""
        if requested is None or requested in OPENAI_ALIASES:
            if self.default_name is None:
                raise APIError(
                    503, "the default model is still loading", type="server_error", code="model_loading", retry_after=2
                )
            return self.default_name
        if requested == self.default_name or requested in self.registered:
            return requested
        raise APIError(
            404,
            f"model {requested!r} does not exist; GET /v1/models lists the models this server "
            f"offers ({', '.join(self.names()) or 'none'})",
            param="model",
            code="model_not_found",
        )

    # --- loading ---------------------------------------------------------------------------------------
    def pipeline(self, name: str):
        """The loaded pipeline for a resolved name (loaded on first use, then reused)."""
        from ganvas.core.pipeline import Pipeline

        pipe = self._pipelines.get(name)  # fast path: loaded models never wait behind another one loading
        if pipe is not None:
            return pipe
        with self._lock:
            pipe = self._pipelines.get(name)
            if pipe is None:
                try:
                    pipe = Pipeline.load(name, plugins=self.plugins)
                except ModelNotFound as exc:  # a plugin stopped registering it since the start
                    raise APIError(404, str(exc), param="model", code="model_not_found") from None
                except GanvasError as exc:
                    raise APIError(
                        500, f"model {name!r} failed to load: {exc}", type="server_error", code="model_load_failed"
                    ) from None
                self._pipelines[name] = pipe
            return pipe

    def warm(self) -> None:
        """Load the default model and draw one image, so the first request does not pay for loading."""
        from ganvas.core.pipeline import Pipeline, noise

        start = time.perf_counter()
        try:
            spec = self.default_spec
            if not _path_like(spec):
                if spec not in self.registered:
                    raise GanvasError(
                        f"unknown model {spec!r}: registered models are "
                        f"{', '.join(sorted(self.registered)) or 'none'} (--model takes a registered "
                        f"name or a checkpoint folder)"
                    )
                pipe = Pipeline.load(spec, plugins=self.plugins)
            else:
                pipe = Pipeline.load(spec, plugins=self.plugins)  # the operator's checkpoint folder
                if pipe.name in self.registered:
                    log.warning(
                        "--model %s is offered as %r, which also names a registered model; requests "
                        "for %r get the folder given with --model",
                        spec,
                        pipe.name,
                        pipe.name,
                    )
            # Encoder and generator only: a warm-up image must not reach sinks (history) or policies.
            pipe.render(pipe.encode(["warm-up"]), noise(pipe.info.z_dim, [0]))
            with self._lock:
                self._pipelines[pipe.name] = pipe
                self.default_name = pipe.name
            self.state = "ok"
            log.info("model %s warm in %.1f s", pipe.name, time.perf_counter() - start)
        except Exception as exc:
            self.state = "failed"
            self.error = str(exc) if isinstance(exc, GanvasError) else f"{type(exc).__name__}: {exc}"
            raise

    def sizes(self, name: str) -> list[int] | None:
        """The sides a loaded model offers (its model card's `sizes`): the native side, then native x2, x4, ...
        up to its upsampler's scale (an x3 upsampler: native x3). Only the native side when no upsampler is
        registered (or it fails to load, which is logged). None while the model is not loaded."""
        from ganvas.core.hosts.server.config import MAX_SIDE
        from ganvas.core.requests import MAX_SIZE

        pipe = self._pipelines.get(name)
        if pipe is None:
            return None
        native = pipe.resolution
        try:
            loaded = pipe.load_upsampler()
        except Exception as exc:  # a broken upsampler plugin must not break the model list
            log.warning("model %s: upsampler unavailable (%s); offering its native size only", name, exc)
            loaded = None
        if loaded is None:
            return [native]
        scale, limit = loaded.info.scale, min(MAX_SIDE, MAX_SIZE)
        factors = [f for f in (2**k for k in range(1, scale.bit_length())) if f <= scale]
        if scale not in factors:
            factors.append(scale)
        return [native] + [native * f for f in factors if native * f <= limit]

    @property
    def ready(self) -> bool:
        return self.state == "ok"

    def default_pipeline(self):
        return self._pipelines.get(self.default_name) if self.default_name else None
