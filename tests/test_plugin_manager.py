"""Hooks (one test_hook_<name> each, checked by test_docs.py), failure isolation, entry points, switches,
and the built-in plugins (PNG metadata, provenance, request policy)."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_tiny_generator, pixels, save_tiny_checkpoint

from ganvas.core import policy as request_policy
from ganvas.core.errors import RequestRefused
from ganvas.core.hookspecs import HOOK_NAMES, hookimpl
from ganvas.core.io.png import XMP_KEY, read_png_text, save_png
from ganvas.core.io.record import read_reproduction_record
from ganvas.core.pipeline import Pipeline
from ganvas.core.plugin_manager import GanvasPlugins
from ganvas.core.requests import GenerationRequest

PROMPT = "a large blue square"


def registered(plugins: GanvasPlugins, plugin, name: str = "inline"):
    assert plugins.register(plugin, name)
    return plugin


# --- one test per hook ---------------------------------------------------------------------------------------


def test_hook_ganvas_register_models(plugins, tiny_checkpoint):
    class Models:
        @hookimpl
        def ganvas_register_models(self, register):
            register("inline-folder", tiny_checkpoint, description="a folder")
            register("inline-code", lambda: make_tiny_generator(seed=5))
            register("tiny-override", tiny_checkpoint)

    registered(plugins, Models())
    models = plugins.models()
    assert models["inline-folder"].plugin == "inline" and models["inline-folder"].description == "a folder"
    assert Pipeline.load("inline-folder", plugins=plugins)(PROMPT, seed=1).images[0].size == (32, 32)
    code = Pipeline.load("inline-code", plugins=plugins)
    assert code.info.path is None and code(PROMPT, seed=1).model.name == "inline-code"


def test_hook_ganvas_register_text_encoders(plugins, tmp_path):
    class ToyEncoder:
        def encode(self, texts):
            # Deterministic 384-d vectors from the text bytes: enough to condition a model.
            out = torch.zeros(len(texts), 384)
            for i, t in enumerate(texts):
                out[i, : len(t.encode())] = torch.tensor(list(t.encode()[:384]), dtype=torch.float) / 255
            return out

    class Encoders:
        @hookimpl
        def ganvas_register_text_encoders(self, register):
            register("toy", ToyEncoder)

    folder = save_tiny_checkpoint(tmp_path / "toy-model", text_encoder="toy")
    with pytest.raises(Exception, match="needs text encoder 'toy'"):
        Pipeline.load(str(folder), plugins=plugins)
    registered(plugins, Encoders())
    assert set(plugins.text_encoders()) == {"minilm", "toy"}
    result = Pipeline.load(str(folder), plugins=plugins)("abc", seed=2)
    assert result.model.text_encoder == "toy" and result.warnings == []


def test_hook_ganvas_check_request(pipe, plugins):
    seen = []

    class Refuser:
        @hookimpl
        def ganvas_check_request(self, request):
            seen.append(request.prompt)
            if "dragon" in request.prompt:
                raise RequestRefused("no dragons today", param="prompt")

    registered(plugins, Refuser(), "no-dragons")
    with pytest.raises(RequestRefused) as info:
        pipe("a red dragon", seed=1, style="noto")
    assert info.value.plugin == "no-dragons" and info.value.param == "prompt"
    assert str(info.value) == "request refused by no-dragons: no dragons today"
    assert seen == ["a red dragon; noto style"]  # checks see the prepared request
    assert pipe("a red circle", seed=1).images


def test_hook_ganvas_prepare_request(pipe, plugins):
    class Prefix:
        @hookimpl
        def ganvas_prepare_request(self, request):
            return request.replace(prompt="emoji of " + request.prompt)

    class Upper:
        @hookimpl(tryfirst=True)
        def ganvas_prepare_request(self, request):
            request.prompt = request.prompt.upper()  # in place, returning None

    registered(plugins, Prefix(), "prefix")
    registered(plugins, Upper(), "upper")
    result = pipe("a cat ", seed=1, style="noto")
    # chained: upper (tryfirst), then prefix; then the pipeline puts the style in with the model's template
    assert result.request.prompt == "emoji of A CAT; noto style"
    assert result.input_request.prompt == "a cat "


def test_hook_ganvas_postprocess(pipe, plugins):
    order = []

    class Gray:
        @hookimpl
        def ganvas_postprocess(self, image, request, index):
            order.append(("gray", index))
            return image.convert("L") if request.extra.get("gray") else None

    class Stamp:
        @hookimpl(trylast=True)
        def ganvas_postprocess(self, image, index):  # may take fewer arguments than the spec
            order.append(("stamp", index))
            image = image.copy()
            image.putpixel((0, 0), (255, 0, 0))
            return image

    registered(plugins, Gray(), "gray")
    registered(plugins, Stamp(), "stamp")
    result = pipe(PROMPT, n=2, seed=1, extra={"gray": True})
    assert order == [("gray", 0), ("stamp", 0), ("gray", 1), ("stamp", 1)]
    arr = pixels(result.images[1])
    assert result.images[1].mode == "RGB" and tuple(arr[0, 0]) == (255, 0, 0)
    assert np.array_equal(arr[1:, :, 0], arr[1:, :, 1])  # grey everywhere else
    assert result.images[1].info["seed"] == "2"  # metadata is attached after post-processing


def test_hook_ganvas_image_metadata(pipe, plugins, tmp_path):
    class Fields:
        @hookimpl
        def ganvas_image_metadata(self, request, result, index):
            return {"my_field": f"image {index}", "Software": "overridden by a plugin"}

    registered(plugins, Fields())
    result = pipe(PROMPT, n=2, seed=1)
    assert result.metadata[1]["my_field"] == "image 1"
    assert result.metadata[0]["Software"] == "overridden by a plugin"  # third-party wins over built-in
    path = tmp_path / "x.png"
    save_png(result.images[1], path)
    assert read_png_text(path)["my_field"] == "image 1"


def test_hook_ganvas_after_generate(pipe, plugins):
    history = []

    class Sink:
        @hookimpl
        def ganvas_after_generate(self, result):
            history.append((result.request.prompt, result.seeds, "total" in result.timings or "pending"))

    registered(plugins, Sink())
    pipe(PROMPT, n=2, seed=4)
    assert history == [(PROMPT, [4, 5], "pending")]  # runs before the total is stamped, after metadata


def test_hook_ganvas_register_commands(plugins):
    class Commands:
        @hookimpl
        def ganvas_register_commands(self, cli):
            @cli.command()
            @click.argument("word")
            def shout(word):
                click.echo(word.upper())

    registered(plugins, Commands())
    group = click.Group("test")
    plugins.register_commands(group)
    result = CliRunner().invoke(group, ["shout", "hi"])
    assert result.exit_code == 0 and result.output == "HI\n"


def test_hook_ganvas_register_datasets(plugins, tmp_path):
    class Datasets:
        @hookimpl
        def ganvas_register_datasets(self, register):
            register(
                "solid",
                lambda path, resolution: ("solid images from", path, resolution),
                description="one colour per image",
            )

    registered(plugins, Datasets())
    datasets = plugins.datasets()
    assert {"shapes", "imagefolder", "sidecar", "solid"} <= set(datasets)
    assert datasets["solid"].value(tmp_path, 32) == ("solid images from", tmp_path, 32)
    assert datasets["shapes"].plugin == "default_backend"


# --- isolation --------------------------------------------------------------------------------------------------


def _raising_plugin():
    namespace = {}
    for hook in HOOK_NAMES:
        args = {
            "ganvas_register_commands": "cli",
            "ganvas_after_generate": "result",
            "ganvas_postprocess": "image, request, index",
            "ganvas_image_metadata": "request, result, index",
            "ganvas_check_request": "request",
            "ganvas_prepare_request": "request",
        }.get(hook, "register")
        exec(f"def {hook}({args}):\n    raise RuntimeError('boom in {hook}')", namespace)
        namespace[hook] = hookimpl(namespace[hook])
    return type("RaisingPlugin", (), {k: staticmethod(v) for k, v in namespace.items() if k in HOOK_NAMES})()


def test_a_raising_hook_is_named_and_skipped(pipe, plugins, caplog):
    registered(plugins, _raising_plugin(), "kaboom")
    with caplog.at_level(logging.WARNING, logger="ganvas.plugins"):
        result = pipe(PROMPT, n=2, seed=1)
        group = click.Group("g")
        plugins.register_commands(group)
        assert "shapes" in plugins.datasets()
    assert len(result.images) == 2 and "ganvas" in result.metadata[0]  # built-ins still ran
    for hook in (
        "ganvas_prepare_request",
        "ganvas_check_request",
        "ganvas_postprocess",
        "ganvas_image_metadata",
        "ganvas_after_generate",
    ):
        assert f"plugin kaboom failed in {hook}: RuntimeError: boom in {hook}" in result.warnings
    assert (
        result.warnings.count("plugin kaboom failed in ganvas_postprocess: RuntimeError: boom in ganvas_postprocess")
        == 1
    )
    assert "plugin kaboom failed in ganvas_register_commands" in caplog.text
    assert Pipeline.load(pipe.info.path, plugins=plugins)  # models/encoders hooks raising do not block loading


def test_bad_return_values_are_reported(pipe, plugins):
    class Wrong:
        @hookimpl
        def ganvas_postprocess(self, image):
            return "not an image"

        @hookimpl
        def ganvas_image_metadata(self):
            return {"bad\nkey": "x"}

    registered(plugins, Wrong(), "wrong")
    result = pipe(PROMPT, seed=1)
    assert any("wrong failed in ganvas_postprocess: TypeError" in w for w in result.warnings)
    assert any("wrong failed in ganvas_image_metadata: ValueError" in w for w in result.warnings)


def test_misspelt_hooks_and_bad_signatures_are_reported(plugins):
    class Misspelt:
        @hookimpl
        def ganvas_postproces(self, image):
            return None

    class BadArgs:
        @hookimpl
        def ganvas_postprocess(self, picture):
            return None

    assert plugins.register(Misspelt(), "misspelt")
    assert any("ganvas_postproces" in note and "misspelt" in note for note in plugins.notes)
    assert not plugins.register(BadArgs(), "bad-args")
    assert plugins.failed[-1].name == "bad-args" and plugins.failed[-1].stage == "register"


def test_trace_switch_logs_hook_calls(tiny_checkpoint, caplog):
    manager = GanvasPlugins(entry_points=False, env={"GANVAS_TRACE_PLUGINS": "1"})
    with caplog.at_level(logging.INFO, logger="ganvas.plugins"):
        Pipeline.load(str(tiny_checkpoint), plugins=manager)(PROMPT, seed=1)
    assert "ganvas_check_request: calling plugin request_policy" in caplog.text
    assert "ganvas_image_metadata: calling plugin png_metadata" in caplog.text


# --- entry points: plugins installed for real -------------------------------------------------------------------


def test_installed_plugins_through_entry_points(installed_plugins, tiny_checkpoint, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(installed_plugins))
    history = tmp_path / "history.jsonl"
    monkeypatch.setenv("GANVAS_EXAMPLE_HISTORY", str(history))
    manager = GanvasPlugins(env={})
    info = manager.describe()
    by_name = {p["name"]: p for p in info["plugins"]}
    assert by_name["example"]["package"] == "ganvas-example-plugin" and by_name["example"]["version"] == "0.1.0"
    assert "ganvas_postprocess" in by_name["example"]["hooks"]
    assert [f["name"] for f in info["failed"]] == ["broken-import"]
    assert "ganvas_dependency_that_is_not_installed" in info["failed"][0]["error"]

    pipe = Pipeline.load("example-tiny", plugins=manager)  # a model added by a plugin
    result = pipe("a cat", n=2, seed=3, extra={"grayscale": True})
    assert len(result.images) == 2
    arr = pixels(result.images[0])
    assert np.array_equal(arr[..., 0], arr[..., 1])  # post-processed by the plugin
    assert result.metadata[0]["example_plugin"].startswith("ganvas-example-plugin saw image 0")
    assert "plugin broken-hooks failed in ganvas_image_metadata: Broken: image_metadata exploded" in result.warnings
    assert json.loads(history.read_text())["seeds"] == [3, 4]
    with pytest.raises(RequestRefused, match="example plugin refuses"):
        pipe("a forbidden cat", seed=1)
    group = click.Group("g")
    manager.register_commands(group)
    assert CliRunner().invoke(group, ["example-hello", "you"]).output == "hello you from ganvas-example-plugin\n"


def test_plugin_switches(installed_plugins, monkeypatch, tiny_checkpoint):
    monkeypatch.syspath_prepend(str(installed_plugins))
    only = GanvasPlugins(env={"GANVAS_PLUGINS": "example"})
    assert {p["name"] for p in only.describe()["plugins"]} == {"example"} and only.failed == []
    none = GanvasPlugins(env={"GANVAS_PLUGINS": ""})
    assert none.describe()["plugins"] == []
    blocked = GanvasPlugins(env={"GANVAS_DISABLE_PLUGINS": "broken-import, broken-hooks,provenance"})
    names = {p["name"] for p in blocked.describe(include_builtins=True)["plugins"]}
    assert "provenance" not in names and "example" in names and "png_metadata" in names
    assert blocked.failed == []
    result = Pipeline.load(str(tiny_checkpoint), plugins=blocked)(PROMPT, seed=1)
    assert XMP_KEY not in result.metadata[0] and "ganvas" in result.metadata[0]
    with pytest.raises(ModuleNotFoundError):
        GanvasPlugins(env={"GANVAS_STRICT_PLUGINS": "1"})


# --- built-in: PNG metadata -------------------------------------------------------------------------------------


def test_png_metadata_fields_and_a1111_parameters(pipe, tmp_path):
    result = pipe("a cat, smiling", seed=7, truncation=0.8, style="noto")
    path = result.save(tmp_path)[0]
    assert path.name == "a-cat-smiling-noto-style-seed7.png"
    text = read_png_text(path)
    assert text["Description"] == "a cat, smiling; noto style" and "prompt" not in text  # see png_metadata.py
    assert text["seed"] == "7" and text["model"] == "tiny" and text["truncation"] == "0.8"
    assert text["model_hash"] == pipe.info.hash and text["ganvas_version"] == "0.2.0"
    prompt_line, params = text["parameters"].split("\n")
    assert prompt_line == "a cat, smiling; noto style"
    assert params == (
        f"Steps: 1, Sampler: GAN, Seed: 7, Size: 32x32, Model hash: {pipe.info.hash}, Model: tiny, "
        f"Truncation: 0.8, Style: noto, Version: ganvas 0.2.0"
    )
    record = read_reproduction_record(text)
    assert record["request"]["seed"] == 7 and record["request"]["n"] == 1 and record["request"]["style"] == "noto"
    again = pipe.generate(GenerationRequest.from_dict(record["request"]))
    assert np.array_equal(pixels(again.images[0]), pixels(result.images[0]))


def test_png_metadata_keeps_unicode_prompts(pipe, tmp_path):
    path = pipe("ein grüner Kreis 🍏", seed=1).save(tmp_path)[0]
    assert read_png_text(path)["Description"] == "ein grüner Kreis 🍏"


def test_read_reproduction_record_errors():
    with pytest.raises(ValueError, match="no ganvas metadata"):
        read_reproduction_record({}, "x.png")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_reproduction_record({"ganvas": "{"}, "x.png")


# --- built-in: provenance ---------------------------------------------------------------------------------------


def test_provenance_marks_images_as_ai_generated(pipe, tmp_path):
    path = pipe(PROMPT, seed=1).save(tmp_path)[0]
    xmp = read_png_text(path)[XMP_KEY]
    root = ET.fromstring(xmp[xmp.index("<x:xmpmeta") : xmp.index("</x:xmpmeta>") + len("</x:xmpmeta>")])
    description = root.find(".//{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description")
    source_type = description.get("{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType")
    assert source_type == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    with open(path, "rb") as fh:  # an iTXt chunk with the XMP keyword, where XMP readers look
        assert b"iTXtXML:com.adobe.xmp\x00" in fh.read()


# --- built-in: request policy -----------------------------------------------------------------------------------


def test_request_policy_blocklist_file(pipe, tmp_path, monkeypatch):
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("# words and phrases, whole words only\nbanana\nred  dragon\n/gore+/\n", encoding="utf-8")
    monkeypatch.setenv("GANVAS_BLOCKLIST", str(blocklist))
    for prompt, term in (("A Banana split", "Banana"), ("a red dragon", "red dragon"), ("goreee", "goreee")):
        with pytest.raises(RequestRefused) as info:
            pipe(prompt, seed=1)
        assert f"blocked term {term!r}" in info.value.reason and info.value.plugin == "request_policy"
    assert pipe("bananas are fine (not a whole-word match)", seed=1).images
    blocklist.write_bytes(b"\xff\xfe broken")  # unreadable: fail closed, say why
    with pytest.raises(RequestRefused, match="blocklist is broken"):
        pipe("anything", seed=1)


def test_request_policy_limits(pipe, monkeypatch):
    request_policy.configure(max_prompt_chars=20, max_n=3)
    with pytest.raises(RequestRefused, match="limit is 20") as info:
        pipe("x" * 21, seed=1)
    assert info.value.param == "prompt"
    with pytest.raises(RequestRefused, match="n=4 images requested; the limit is 3"):
        pipe("ok", n=4, seed=1)
    with pytest.raises(RequestRefused, match="n=5 images"):  # interpolation frames count too
        pipe.interpolate(["a", "b"], steps=4, seed=1)
    request_policy.configure()
    monkeypatch.setenv("GANVAS_MAX_N", "lots")
    with pytest.raises(RequestRefused, match="GANVAS_MAX_N='lots'"):
        pipe("ok", seed=1)
    monkeypatch.setenv("GANVAS_MAX_N", "2")
    with pytest.raises(RequestRefused, match="limit is 2"):
        pipe("ok", n=3, seed=1)
    with pytest.raises(ValueError, match="bad regular expression"):
        request_policy.parse_blocklist(["/(unclosed/"], "list")
