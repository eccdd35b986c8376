"""core/registry.py: one rule for models and upsamplers (a registered name, else a checkpoint folder, else an
error naming what is registered), one loader call and one cache key."""

from __future__ import annotations

import pytest

from ganvas.core import registry
from ganvas.core.errors import GanvasError, ModelNotFound
from ganvas.core.plugin_manager import Registration


class FakePlugins:
    def __init__(self, models=None, upsamplers=None):
        self._models = {n: Registration(n, v, "test-plugin") for n, v in (models or {}).items()}
        self._upsamplers = {n: Registration(n, v, "test-plugin") for n, v in (upsamplers or {}).items()}

    def models(self, warnings=None):
        return self._models

    def upsamplers(self, warnings=None):
        return self._upsamplers


def test_models_and_upsamplers_follow_the_same_rule(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    plugins = FakePlugins(models={"shapes": "/m/shapes", "emoji64": "/m/emoji"}, upsamplers={"x4": "/u/x4"})

    assert registry.resolve_model("shapes", plugins) == ("shapes", "/m/shapes", "plugin test-plugin")
    assert registry.resolve_upsampler("x4", plugins) == ("x4", "/u/x4", "plugin test-plugin")
    for resolve in (registry.resolve_model, registry.resolve_upsampler):
        name, source, origin = resolve(str(folder), plugins)
        assert (name, source, origin) == ("my-model", folder, str(folder))

    with pytest.raises(ModelNotFound) as model_error:
        registry.resolve_model("nope", plugins)
    assert str(model_error.value) == (
        "unknown model 'nope': not a registered name (registered: emoji64, shapes) and not a checkpoint folder"
    )
    with pytest.raises(GanvasError) as upsampler_error:
        registry.resolve_upsampler("nope", plugins)
    assert not isinstance(upsampler_error.value, ModelNotFound)  # hosts treat an unknown model specially
    assert str(upsampler_error.value) == (
        "unknown upsampler 'nope': not a registered name (registered: x4) and not a checkpoint folder"
    )
    with pytest.raises(ModelNotFound, match=r"\(registered: none\)"):
        registry.resolve_model("nope", FakePlugins())


def test_a_name_written_as_a_path_is_never_looked_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plugins = FakePlugins(models={"./x": "/m/x"}, upsamplers={"./x": "/u/x"})
    for resolve in (registry.resolve_model, registry.resolve_upsampler):
        with pytest.raises(GanvasError, match="not a checkpoint folder"):
            resolve("./x", plugins)
    (tmp_path / "x").mkdir()
    assert registry.resolve_model("./x", plugins)[0] == "x"


def test_the_default_model_is_used_when_none_is_named(monkeypatch):
    monkeypatch.setenv("GANVAS_MODEL", "shapes")
    assert registry.resolve_model(None, FakePlugins(models={"shapes": "/m/shapes"}))[0] == "shapes"


def test_loaders_and_cache_keys(tmp_path):
    def broken():
        raise RuntimeError("weights missing")

    with pytest.raises(GanvasError, match=r"^upsampler 'x4': the loader from plugin p failed: RuntimeError: weights"):
        registry.produce("upsampler", "x4", broken, "plugin p")
    assert registry.produce("model", "m", lambda: str(tmp_path), "plugin p") == tmp_path
    assert registry.produce("model", "m", str(tmp_path), "a path") == tmp_path
    module = object()
    assert registry.produce("model", "m", lambda: module, "plugin p") is module

    assert registry.cache_key("m", broken, "plugin p", "cpu") == ("loader", "m", "plugin p", "cpu")
    assert registry.cache_key("m", tmp_path, "a path", "cpu")[2:4] == (None, None)  # no weights yet
    (tmp_path / "model.safetensors").write_bytes(b"12345")
    key = registry.cache_key("m", tmp_path, "a path", "cpu")
    assert key[0] == "folder" and key[3] == 5 and key[4:] == ("m", "cpu")
