"""The plugin manager: loading (built-ins + entry points), failure isolation and typed wrappers.

Hosts never touch `pm.hook`: they call the wrappers of `GanvasPlugins` (models(), check_request(),
postprocess(), ...), which call each hook implementation on its own, so one broken plugin is named
and skipped instead of failing the request or hiding the plugins after it.

Environment switches (read when a manager is built):
  GANVAS_PLUGINS=a,b          load only these entry points ("" = none); unset = all installed
  GANVAS_DISABLE_PLUGINS=a,b  block plugins by name: entry-point names or built-ins ("provenance", ...)
  GANVAS_TRACE_PLUGINS=1      log every hook call (logger "ganvas.plugins", to stderr)
  GANVAS_STRICT_PLUGINS=1     re-raise plugin load errors instead of skipping (for plugin authors)
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Mapping

import pluggy

from ganvas.core import hookspecs
from ganvas.core.errors import RequestRefused, one_line
from ganvas.core.hookspecs import HOOK_NAMES, PROJECT
from ganvas.core.requests import GenerationRequest

logger = logging.getLogger("ganvas.plugins")

ENTRY_POINT_GROUP = "ganvas"
# Built-in plugins, by module name under ganvas.plugins; registered like third-party ones.
BUILTIN_PLUGINS = ("default_backend", "minilm_encoder", "png_metadata", "provenance", "request_policy", "commands")
BUILTIN_PREFIX = "ganvas.plugins."


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _names(value: str | None) -> list[str]:
    names = [v.strip() for v in (value or "").split(",") if v.strip()]
    return [n[len(BUILTIN_PREFIX) :] if n.startswith(BUILTIN_PREFIX) else n for n in names]


@dataclass
class PluginFailure:
    """A plugin that could not be loaded (stage "import"/"register") or a hook call that raised."""

    name: str
    error: str
    stage: str = "import"
    package: str | None = None
    version: str | None = None

    @property
    def message(self) -> str:
        if self.stage in ("import", "register"):
            origin = f" (from {self.package} {self.version})" if self.package else ""
            return f"plugin {self.name}{origin} failed to load: {self.error}"
        return f"plugin {self.name} failed in {self.stage}: {self.error}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "package": self.package,
            "version": self.version,
            "stage": self.stage,
            "error": self.error,
        }


@dataclass
class Registration:
    """One thing a plugin registered through a register(...) callback."""

    name: str
    value: Any
    plugin: str
    description: str = ""


class GanvasPlugins:
    """A pluggy manager with ganvas's hooks, plus isolation and typed wrappers around each hook."""

    def __init__(self, *, builtins: bool = True, entry_points: bool = True, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.failed: list[PluginFailure] = []
        self.notes: list[str] = []
        self.distributions: dict[str, tuple[str, str]] = {}  # plugin name -> (package, version)
        self.builtin_names: set[str] = set()
        self._reported: set[str] = set()
        self.strict = _truthy(env.get("GANVAS_STRICT_PLUGINS"))
        self.trace = _truthy(env.get("GANVAS_TRACE_PLUGINS"))
        self.blocked = _names(env.get("GANVAS_DISABLE_PLUGINS"))
        for name in self.blocked:
            self.pm.set_blocked(name)
        if self.trace:
            self._enable_trace()
        if builtins:
            for short in BUILTIN_PLUGINS:
                if not self.pm.is_blocked(short):
                    module = importlib.import_module(BUILTIN_PREFIX + short)
                    self.pm.register(module, name=short)
                    self.builtin_names.add(short)
        if entry_points:
            only = _names(env["GANVAS_PLUGINS"]) if "GANVAS_PLUGINS" in env else None
            self.load_entry_points(only)

    # --- loading ---------------------------------------------------------------------------------------

    def load_entry_points(self, only: list[str] | None = None) -> None:
        """Load the `ganvas` entry points one at a time; a failing one is recorded and skipped."""
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if only is not None and ep.name not in only:
                continue
            if self.pm.is_blocked(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            package, version = (dist.metadata["Name"], dist.version) if dist is not None else (None, None)
            if self.pm.has_plugin(ep.name):
                self._load_failed(
                    PluginFailure(
                        ep.name,
                        "the name is already taken (by a built-in or another package); rename the entry point",
                        "register",
                        package,
                        version,
                    )
                )
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # SystemExit/KeyboardInterrupt in a module body included
                if isinstance(exc, KeyboardInterrupt) or self.strict:
                    raise
                self._load_failed(PluginFailure(ep.name, one_line(exc, with_type=True), "import", package, version))
                continue
            self.register(plugin, ep.name, package=package, version=version)

    def register(self, plugin: Any, name: str, *, package: str | None = None, version: str | None = None) -> bool:
        """Register a plugin object (module, class instance). Returns False when it was refused."""
        try:
            self.pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            if self.strict:
                raise
            self._load_failed(PluginFailure(name, one_line(exc, with_type=True), "register", package, version))
            return False
        if package:
            self.distributions[name] = (package, version or "")
        self._check_plugin(plugin, name)
        return True

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.distributions.pop(name, None)

    def _check_plugin(self, plugin: Any, name: str) -> None:
        # check_pending() would raise for the whole manager; a per-plugin note names the culprit instead.
        for attr in dir(plugin):
            if attr.startswith("ganvas_") and attr not in HOOK_NAMES and callable(getattr(plugin, attr, None)):
                self._note(
                    f"plugin {name} defines {attr}, which is not a ganvas hook (misspelt?); "
                    f"it is never called. Hooks: {', '.join(HOOK_NAMES)}"
                )
        for caller in self.pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper):
                    self._note(f"plugin {name}: hook wrapper on {caller.name} is not supported and is ignored")

    def _load_failed(self, failure: PluginFailure) -> None:
        self.failed.append(failure)
        logger.warning("%s", failure.message)

    def _note(self, message: str) -> None:
        self.notes.append(message)
        logger.warning("%s", message)

    def _enable_trace(self) -> None:
        if not logger.hasHandlers():  # the CLI (or the host's logging config) may already print ours
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("ganvas trace: %(message)s"))
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)

        def before(hook_name, impls, kwargs):  # direct pm.hook calls (the wrappers below trace themselves)
            logger.info("%s -> %s", hook_name, [i.plugin_name for i in impls])

        def after(outcome, hook_name, impls, kwargs):
            logger.info("%s done", hook_name)

        self.pm.add_hookcall_monitoring(before, after)

    # --- calling ---------------------------------------------------------------------------------------

    def implementations(self, hook_name: str) -> list:
        """Hook implementations in call order (pluggy's: last registered first, trylast at the end)."""
        caller = getattr(self.pm.hook, hook_name)
        return [i for i in reversed(caller.get_hookimpls()) if not (i.wrapper or i.hookwrapper)]

    def _invoke(self, impl, hook_name: str, kwargs: dict[str, Any]) -> Any:
        if self.trace:
            logger.info("%s: calling plugin %s", hook_name, impl.plugin_name)
        return impl.function(*[kwargs[name] for name in impl.argnames])

    def _report(self, plugin_name: str, hook_name: str, exc: BaseException, warnings: list[str] | None) -> None:
        message = PluginFailure(plugin_name, one_line(exc, with_type=True), hook_name).message
        # Log a repeated failure once (a broken metadata hook fails for every image), keep details at debug.
        level = logging.DEBUG if message in self._reported else logging.WARNING
        self._reported.add(message)
        logger.log(level, "%s", message)
        logger.debug("traceback of the failing hook", exc_info=exc)
        if warnings is not None and message not in warnings:
            warnings.append(message)

    def call(self, hook_name: str, *, warnings: list[str] | None = None, **kwargs) -> list[tuple[str, Any]]:
        """Call every implementation; returns [(plugin name, return value)] for those that did not raise."""
        results = []
        for impl in self.implementations(hook_name):
            try:
                results.append((impl.plugin_name, self._invoke(impl, hook_name, kwargs)))
            except Exception as exc:
                self._report(impl.plugin_name, hook_name, exc, warnings)
        return results

    def _registry(self, hook_name: str, value_name: str, warnings: list[str] | None = None) -> dict[str, Registration]:
        """Run a register(...) hook; the first registration of a name wins."""
        found: dict[str, Registration] = {}
        for impl in self.implementations(hook_name):

            def register(name, *args, description: str = "", _plugin=impl.plugin_name, **kwargs):
                if len(args) + len(kwargs) != 1 or (kwargs and value_name not in kwargs):
                    raise TypeError(f"usage: register(name, {value_name}, description='')")
                if not isinstance(name, str) or not name.strip():
                    raise ValueError(f"register() needs a non-empty name, got {name!r}")
                if name in found:
                    logger.debug("%s: %r from %s shadowed by %s", hook_name, name, _plugin, found[name].plugin)
                    return
                value = args[0] if args else kwargs[value_name]
                found[name] = Registration(name, value, _plugin, description)

            try:
                self._invoke(impl, hook_name, {"register": register})
            except Exception as exc:
                self._report(impl.plugin_name, hook_name, exc, warnings)
        return found

    # --- typed wrappers, one per hook ------------------------------------------------------------------

    def models(self, warnings: list[str] | None = None) -> dict[str, Registration]:
        return self._registry("ganvas_register_models", "source", warnings)

    def text_encoders(self, warnings: list[str] | None = None) -> dict[str, Registration]:
        return self._registry("ganvas_register_text_encoders", "factory", warnings)

    def datasets(self, warnings: list[str] | None = None) -> dict[str, Registration]:
        return self._registry("ganvas_register_datasets", "loader", warnings)

    def upsamplers(self, warnings: list[str] | None = None) -> dict[str, Registration]:
        return self._registry("ganvas_register_upsamplers", "source", warnings)

    def check_request(self, request: GenerationRequest, warnings: list[str] | None = None) -> None:
        """Raise RequestRefused (naming the plugin) if any plugin refuses. A check that crashes is reported
        and skipped, unless `checks_fail_closed` is set (the HTTP server sets it): then it refuses too,
        with `crashed = True`, since a policy that cannot decide must not let the request through."""
        for impl in self.implementations("ganvas_check_request"):
            try:
                self._invoke(impl, "ganvas_check_request", {"request": request})
            except RequestRefused as refusal:
                refusal.plugin = refusal.plugin or impl.plugin_name
                raise
            except Exception as exc:
                self._report(impl.plugin_name, "ganvas_check_request", exc, warnings)
                if getattr(self, "checks_fail_closed", False):
                    crash = one_line(exc, with_type=True)
                    refusal = RequestRefused(
                        f"its check crashed ({crash}), so the request is refused", plugin=impl.plugin_name
                    )
                    refusal.crashed = True
                    raise refusal from exc

    def prepare_request(self, request: GenerationRequest, warnings: list[str] | None = None) -> GenerationRequest:
        for impl in self.implementations("ganvas_prepare_request"):
            try:
                replaced = self._invoke(impl, "ganvas_prepare_request", {"request": request})
            except Exception as exc:
                self._report(impl.plugin_name, "ganvas_prepare_request", exc, warnings)
                continue
            if isinstance(replaced, GenerationRequest):
                request = replaced
            elif replaced is not None:
                self._report(
                    impl.plugin_name,
                    "ganvas_prepare_request",
                    TypeError(f"returned {type(replaced).__name__}, expected a GenerationRequest or None"),
                    warnings,
                )
        return request

    def postprocess(self, image, request: GenerationRequest, index: int, warnings: list[str] | None = None):
        from PIL import Image

        for impl in self.implementations("ganvas_postprocess"):
            try:
                out = self._invoke(impl, "ganvas_postprocess", {"image": image, "request": request, "index": index})
            except Exception as exc:
                self._report(impl.plugin_name, "ganvas_postprocess", exc, warnings)
                continue
            if isinstance(out, Image.Image):
                # Keep the model's colour mode: a transparent model's alpha must survive post-processing.
                mode = "RGBA" if image.mode == "RGBA" else "RGB"
                image = out if out.mode == mode else out.convert(mode)
            elif out is not None:
                self._report(
                    impl.plugin_name,
                    "ganvas_postprocess",
                    TypeError(f"returned {type(out).__name__}, expected a PIL image or None"),
                    warnings,
                )
        return image

    def image_metadata(
        self, request: GenerationRequest, result, index: int, warnings: list[str] | None = None
    ) -> dict[str, str]:
        merged: dict[str, str] = {}
        # Call order is third-party first, built-ins last; apply in reverse so third-party values win.
        outcomes = self.call("ganvas_image_metadata", warnings=warnings, request=request, result=result, index=index)
        for plugin, fields in reversed(outcomes):
            if fields is None:
                continue
            if not isinstance(fields, Mapping):
                self._report(
                    plugin,
                    "ganvas_image_metadata",
                    TypeError(f"returned {type(fields).__name__}, expected a dict"),
                    warnings,
                )
                continue
            bad = [k for k in fields if not _valid_png_keyword(k)]
            if bad:
                self._report(
                    plugin,
                    "ganvas_image_metadata",
                    ValueError(f"invalid PNG text keys {bad} (1-79 Latin-1 characters)"),
                    warnings,
                )
                continue
            merged.update({k: v if isinstance(v, str) else str(v) for k, v in fields.items()})
        return merged

    def after_generate(self, result, warnings: list[str] | None = None) -> None:
        self.call("ganvas_after_generate", warnings=warnings, result=result)

    def register_commands(self, cli, warnings: list[str] | None = None) -> None:
        self.call("ganvas_register_commands", warnings=warnings, cli=cli)

    # --- introspection ---------------------------------------------------------------------------------

    def describe(self, include_builtins: bool = False) -> dict[str, Any]:
        """What `ganvas plugins` prints: loaded plugins with the hooks each implements, and failures."""
        from ganvas import __version__

        plugins = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda np: np[0]):
            if plugin is None:
                continue
            builtin = name in self.builtin_names
            if builtin and not include_builtins:
                continue
            package, version = ("ganvas", __version__) if builtin else self.distributions.get(name, (None, None))
            hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
            plugins.append({"name": name, "package": package, "version": version, "builtin": builtin, "hooks": hooks})
        return {
            "ganvas_version": __version__,
            "plugins": plugins,
            "failed": [f.to_dict() for f in self.failed],
            "blocked": self.blocked,
            "notes": self.notes,
        }


def _valid_png_keyword(key: Any) -> bool:
    """PNG spec 11.3.4: 1-79 printable Latin-1 characters, no leading, trailing or double spaces."""
    if not isinstance(key, str) or not 1 <= len(key) <= 79 or key != key.strip() or "  " in key:
        return False
    return all(32 <= ord(ch) <= 126 or 161 <= ord(ch) <= 255 for ch in key)


# --- the process-wide manager ------------------------------------------------------------------------------

_manager: GanvasPlugins | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> GanvasPlugins:
    """The shared manager, built (plugins loaded) once, on first use."""
    global _manager
    if _manager is None:
        with _manager_lock:
            if _manager is None:
                _manager = GanvasPlugins()
    return _manager


def set_plugin_manager(manager: GanvasPlugins | None) -> GanvasPlugins | None:
    """Swap the shared manager (tests, embedding hosts); returns the previous one. None = rebuild lazily."""
    global _manager
    with _manager_lock:
        previous, _manager = _manager, manager
    return previous


def reset_plugin_manager() -> None:
    set_plugin_manager(None)


def hook_names() -> tuple[str, ...]:
    return HOOK_NAMES


__all__ = [
    "GanvasPlugins",
    "PluginFailure",
    "Registration",
    "get_plugin_manager",
    "set_plugin_manager",
    "reset_plugin_manager",
    "hook_names",
    "ENTRY_POINT_GROUP",
    "BUILTIN_PLUGINS",
]
