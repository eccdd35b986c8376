"""The ComfyUI node pack: its parts without ComfyUI, then each node against the real comfy_api.

The second half runs when comfy_api can be imported (GANVAS_COMFYUI_DIR pointing at a ComfyUI checkout,
run with a Python that has ComfyUI's requirements), and is skipped with the reason otherwise:

    GANVAS_COMFYUI_DIR=~/ComfyUI ~/ComfyUI/.venv/bin/python -m pytest tests/test_comfy_nodes.py
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from comfy_helpers import CONTROL, PACK, WIDGETS, import_comfy_api, load_workflow, ui_to_api
from conftest import pixels, save_tiny_checkpoint
from ganvas.comfy_nodes import NODE_IDS, comfy_entrypoint, conditioning, generation, model_folders
from ganvas.comfy_nodes.conditioning import PromptConditioning, mix, mix_weight
from ganvas.core.requests import DEFAULT_MODEL, MAX_SEED, GanvasError
from ganvas.plugins import comfy_command, request_policy

PROMPT = "a small red circle on the left"
OTHER = "a large blue square in the centre"
COMFY, COMFY_SKIP = import_comfy_api()
needs_comfy = pytest.mark.skipif(COMFY is None, reason=str(COMFY_SKIP))


def _touch_checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


# --- the pack's import ------------------------------------------------------------------------------------

def test_pack_imports_without_comfyui_and_without_torch():
    code = ("import sys, inspect, ganvas.comfy_nodes as pack\n"
            "assert inspect.iscoroutinefunction(pack.comfy_entrypoint)\n"
            "heavy = sorted(m for m in ('torch', 'comfy_api', 'folder_paths', 'ganvas.core.pipeline') if m in sys.modules)\n"
            "print(','.join(pack.NODE_IDS), heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{','.join(NODE_IDS)} []"


@pytest.mark.skipif(COMFY is not None, reason="ComfyUI is importable here; the entry point would succeed")
def test_entry_point_outside_comfyui_fails_with_a_logged_reason(caplog):
    with caplog.at_level(logging.ERROR, logger="ganvas.comfy"), pytest.raises(ImportError):
        asyncio.run(comfy_entrypoint())
    assert "could not be loaded; ComfyUI continues without them" in caplog.text


def test_requirements_never_list_torch():
    import tomllib

    requirements = [line.split("#")[0].strip() for line in (PACK / "requirements.txt").read_text().splitlines()]
    project = tomllib.loads((PACK / "pyproject.toml").read_text())["project"]
    for deps in ([r for r in requirements if r], project["dependencies"]):
        names = {d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for d in deps}
        assert names == {"ganvas"}, deps
    comfy = tomllib.loads((PACK / "pyproject.toml").read_text())["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]


# --- model folders ----------------------------------------------------------------------------------------

def test_checkpoint_folders_are_found_nested_and_by_first_base(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _touch_checkpoint(a / "emoji64")
    _touch_checkpoint(a / "runs" / "run3")
    _touch_checkpoint(a / "emoji64" / "inner")       # inside a checkpoint: not a model of its own
    _touch_checkpoint(a / ".hidden" / "x")
    (a / "notes").mkdir()
    (a / "notes" / "config.json").write_text("{}")   # no weights: not a checkpoint
    _touch_checkpoint(b / "emoji64")
    _touch_checkpoint(b / "other")
    assert model_folders.find_checkpoints([a, b, tmp_path / "missing"]) == ["emoji64", "other", "runs/run3"]
    assert model_folders.resolve_checkpoint("emoji64", [a, b]) == a / "emoji64"
    assert model_folders.resolve_checkpoint("runs/run3", [b, a]) == a / "runs" / "run3"
    for bad in ("../a/emoji64", str(a / "emoji64"), "", "."):
        assert model_folders.resolve_checkpoint(bad, [a, b]) is None
    with pytest.raises(ValueError, match="not a model name"):
        model_folders.model_source("../etc", [a])


def test_choices_list_folders_then_registered_names_they_do_not_shadow(tmp_path):
    _touch_checkpoint(tmp_path / "shapes")
    _touch_checkpoint(tmp_path / "mine")
    choices = model_folders.model_choices([tmp_path], registered=["emoji64", "shapes"])
    assert choices == ["mine", "shapes", "emoji64"]
    assert model_folders.model_source("shapes", [tmp_path]) == str(tmp_path / "shapes")
    assert model_folders.model_source("emoji64", [tmp_path]) == "emoji64"
    assert model_folders.default_choice(choices) == DEFAULT_MODEL == "emoji64"  # ganvas's default model
    assert model_folders.default_choice(["b", "a"]) == "b"
    assert model_folders.default_choice([]) is None


def test_registered_models_come_from_the_ganvas_plugins(plugins, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("GANVAS_MODELS_PATH", str(tiny_checkpoint.parent))
    assert "tiny" in model_folders.registered_models()
    assert "tiny" in model_folders.model_choices([])


def test_fingerprint_changes_when_the_checkpoint_is_rewritten(tmp_path):
    folder = _touch_checkpoint(tmp_path / "m")
    before = model_folders.fingerprint("m", [tmp_path])
    (folder / "model.safetensors").write_bytes(b"retrained")
    assert model_folders.fingerprint("m", [tmp_path]) != before
    assert model_folders.fingerprint("shapes", [tmp_path]) == "name:shapes"


# --- conditioning -----------------------------------------------------------------------------------------

def test_mix_weights_are_fractions_the_pipeline_can_draw():
    assert mix_weight(0.5) == Fraction(1, 2)
    assert all(mix_weight(k / 50) == Fraction(k, 50) for k in range(51))
    assert mix_weight(1 / 3) == Fraction(1, 3)
    assert abs(float(mix_weight(0.37)) - 0.37) < 0.01 and mix_weight(0.37).denominator <= conditioning.MIX_STEPS
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="mix weight"):
            mix_weight(bad)


def test_mix_rules():
    a, b = PromptConditioning(("a",), "minilm"), PromptConditioning(("b",), "minilm")
    assert mix(a, b, 0) is a and mix(a, b, 1) is b
    ab = mix(a, b, 0.25)
    assert ab.prompts == ("a", "b") and ab.frame == (1, 4) and ab.is_mix
    with pytest.raises(ValueError, match="conditioning_a is already a mix"):
        mix(ab, b, 0.5)
    with pytest.raises(ValueError, match="'minilm'.*'clip'"):
        mix(a, PromptConditioning(("c",), "clip"), 0.5)
    with pytest.raises(TypeError, match="conditioning_b is str"):
        mix(a, "b", 0.5)
    with pytest.raises(ValueError, match="one or two prompts"):
        PromptConditioning(("a", "b", "c"), "minilm")


# --- generation through the pipeline ----------------------------------------------------------------------

def test_images_are_the_pipelines_bytes_and_survive_comfys_png_conversion(pipe):
    images, seeds = generation.generate(pipe, PROMPT, seed=7, batch_size=3, truncation=0.8, style="")
    expected = pipe(PROMPT, n=3, seed=7, truncation=0.8)
    assert seeds == expected.seeds == [7, 8, 9]
    batch = generation.to_image_batch(images)
    assert batch.dtype == torch.float32 and batch.shape == (3, 32, 32, 3)
    assert 0 <= batch.min() and batch.max() <= 1
    for i, image in enumerate(expected.images):
        saved = np.clip(255.0 * batch[i].numpy(), 0, 255).astype(np.uint8)  # ComfyUI SaveImage's conversion
        assert np.array_equal(saved, pixels(image)), f"image {i}"
    assert generation.seeds_text(seeds) == "7,8,9"


def test_every_byte_level_survives_the_float_round_trip():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    from PIL import Image

    image = generation.to_image_batch([Image.fromarray(levels)])[0]
    assert np.array_equal(np.clip(255.0 * image.numpy(), 0, 255).astype(np.uint8), levels)


def test_style_and_single_prompt_conditioning_match_a_typed_prompt(pipe):
    styled, _ = generation.generate(pipe, PROMPT, seed=3, style="flat")
    assert np.array_equal(pixels(styled[0]), pixels(pipe(PROMPT, seed=3, style="flat").images[0]))
    cond = generation.encode(pipe, OTHER)
    assert cond.text_encoder == "minilm" and cond.vector.shape == (384,)
    via_cond, _ = generation.generate(pipe, "ignored", seed=3, conditioning=cond)
    assert np.array_equal(pixels(via_cond[0]), pixels(pipe(OTHER, seed=3).images[0]))


def test_a_mix_is_the_pipelines_interpolation_frame(pipe):
    a, b = generation.encode(pipe, PROMPT), generation.encode(pipe, OTHER)
    mixed = mix(a, b, 0.25, None)
    calls = []
    images, seeds = generation.generate(pipe, "", seed=11, batch_size=2, conditioning=mixed,
                                        on_image=lambda done, total: calls.append((done, total)))
    assert seeds == [11, 12] and calls == [(1, 2), (2, 2)]
    for i, seed in enumerate(seeds):
        frame = pipe.interpolate([PROMPT, OTHER], 4, seeds=[seed], frames=[1]).images[0]
        assert np.array_equal(pixels(images[i]), pixels(frame))
    vector = generation.mixed_vector(a, b, mixed.weight)
    assert torch.allclose(vector.norm(), torch.tensor(1.0), atol=1e-4)


def test_interpolate_matches_the_pipeline_and_its_ends_match_generate(pipe):
    frames = generation.interpolate(pipe, PROMPT, OTHER, 5, 9, frames=5, truncation=0.9)
    expected = pipe.interpolate([PROMPT, OTHER], 4, seeds=[5, 9], truncation=0.9).images
    assert [pixels(f).tobytes() for f in frames] == [pixels(f).tobytes() for f in expected]
    assert np.array_equal(pixels(frames[0]), pixels(pipe(PROMPT, seed=5, truncation=0.9).images[0]))
    assert np.array_equal(pixels(frames[-1]), pixels(pipe(OTHER, seed=9, truncation=0.9).images[0]))
    noise_walk = generation.interpolate(pipe, PROMPT, "  ", 5, 6, frames=3)
    assert len(noise_walk) == 3
    with pytest.raises(GanvasError, match="two or more prompts or seeds"):
        generation.interpolate(pipe, PROMPT, "", 5, 5, frames=3)
    with pytest.raises(GanvasError, match="frames must be an integer >= 2"):
        generation.interpolate(pipe, PROMPT, OTHER, 5, 6, frames=1)


def test_errors_name_the_problem(pipe):
    with pytest.raises(ValueError, match="encoded with text encoder 'clip'.*uses 'minilm'"):
        generation.generate(pipe, PROMPT, seed=1, conditioning=PromptConditioning(("x",), "clip"))
    with pytest.raises(GanvasError, match="text is empty"):
        generation.encode(pipe, "   ")
    with pytest.raises(GanvasError, match="seed"):
        generation.generate(pipe, PROMPT, seed=MAX_SEED, batch_size=2)
    request_policy.configure(max_n=2)
    with pytest.raises(GanvasError, match="limit is 2"):
        generation.generate(pipe, PROMPT, seed=1, batch_size=3)


def test_a_callback_that_raises_stops_the_batch(pipe):
    """How interruption works: ComfyUI's check raises inside the per-image callback."""
    class Stop(Exception):
        pass

    seen = []

    def on_image(done, total):
        seen.append(done)
        raise Stop

    with pytest.raises(Stop):
        generation.generate(pipe, PROMPT, seed=1, batch_size=5, on_image=on_image)
    assert seen == [1]


def test_missing_ganvas_is_reported_with_the_pip_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ganvas.core.pipeline", None)  # what an absent package looks like
    with pytest.raises(RuntimeError, match=r"ganvas package in ComfyUI's Python .*-m pip install"):
        generation.load_pipeline("shapes")


# --- workflows --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ganvas_generate", "ganvas_mix_interpolate"])
def test_ui_and_api_workflows_agree(name):
    api = load_workflow(f"{name}_api.json")
    ui = load_workflow(f"{name}.json")
    stripped = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    assert ui_to_api(ui) == stripped
    assert {v["class_type"] for v in api.values()} <= set(NODE_IDS) | {"SaveImage"}
    for node_id, node in api.items():
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert value[0] in api, f"node {node_id} links to missing node {value[0]}"
    assert ui["last_link_id"] == len(ui["links"]) and ui["last_node_id"] == max(n["id"] for n in ui["nodes"])


# --- the install command ----------------------------------------------------------------------------------

@pytest.fixture
def comfy_dir(tmp_path) -> Path:
    root = tmp_path / "ComfyUI"
    (root / "comfy").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "main.py").write_text("")
    return root


def _cli():
    group = click.Group("ganvas")
    comfy_command.ganvas_register_commands(group)
    return group


def test_install_links_the_pack_and_makes_the_model_folder(comfy_dir):
    result = CliRunner().invoke(_cli(), ["comfy", "install", str(comfy_dir), "--python", sys.executable])
    assert result.exit_code == 0, result.output
    target = comfy_dir / "custom_nodes" / "ganvas"
    assert target.is_symlink() and target.resolve() == PACK.resolve()
    assert (comfy_dir / "models" / "ganvas").is_dir()
    assert f"ganvas is importable from {sys.executable}" in result.output
    again = CliRunner().invoke(_cli(), ["comfy", "install", str(comfy_dir)])
    assert again.exit_code == 0 and "already links to" in again.output
    assert "<that python> -m pip install" in again.output  # no venv found in this fake ComfyUI


def test_install_copy_replaces_only_what_it_made(comfy_dir):
    runner = CliRunner()
    runner.invoke(_cli(), ["comfy", "install", str(comfy_dir)])
    copied = runner.invoke(_cli(), ["comfy", "install", str(comfy_dir), "--copy"])
    target = comfy_dir / "custom_nodes" / "ganvas"
    assert copied.exit_code == 0 and "replaced the link to" in copied.output
    assert not target.is_symlink() and (target / "__init__.py").read_text() == (PACK / "__init__.py").read_text()
    assert (target / "workflows" / "ganvas_generate_api.json").is_file()
    assert not list(target.rglob("__pycache__"))
    recopied = runner.invoke(_cli(), ["comfy", "install", str(comfy_dir), "--copy"])
    assert recopied.exit_code == 0 and "replaced the earlier copy" in recopied.output

    foreign = comfy_dir / "custom_nodes" / "ganvas"
    comfy_command._remove(foreign)
    foreign.mkdir()
    (foreign / "theirs.py").write_text("keep me")
    refused = runner.invoke(_cli(), ["comfy", "install", str(comfy_dir)])
    assert refused.exit_code == 1 and "was not made by `ganvas comfy install`" in refused.output
    assert (foreign / "theirs.py").read_text() == "keep me" and not foreign.is_symlink()


def test_install_refuses_a_folder_that_is_not_comfyui(tmp_path):
    result = CliRunner().invoke(_cli(), ["comfy", "install", str(tmp_path)])
    assert result.exit_code == 1 and "does not look like ComfyUI" in result.output
    assert not (tmp_path / "custom_nodes").exists()


def test_install_finds_comfyuis_venv_python(comfy_dir):
    venv_python = comfy_dir / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    venv_python.chmod(0o755)
    assert comfy_command.find_comfy_python(comfy_dir) == venv_python
    assert comfy_command.has_ganvas(venv_python) is True
    assert comfy_command.has_ganvas(comfy_dir / "nope") is None
    bare = comfy_dir / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')  # -S: no site-packages, so no ganvas
    bare.chmod(0o755)
    assert comfy_command.has_ganvas(bare) is False
    result = CliRunner().invoke(_cli(), ["comfy", "install", str(comfy_dir), "--python", str(bare)])
    assert result.exit_code == 0 and f"ganvas is not installed in {bare}; run: {bare} -m pip install" in result.output


def test_the_plugin_adds_the_command_through_the_plugin_manager(plugins):
    if not plugins.pm.has_plugin("comfy_command"):  # until it is listed among the built-ins
        plugins.register(comfy_command, "comfy_command")
    group = click.Group("ganvas")
    warnings = []
    plugins.register_commands(group, warnings)
    assert not warnings and "install" in group.commands["comfy"].commands


# --- against the real comfy_api ---------------------------------------------------------------------------

@pytest.fixture
def comfy_env(tmp_path, tiny_checkpoint):
    """comfy_api + folder_paths, with a `ganvas` model folder holding the tiny checkpoint as "tiny"."""
    api, folder_paths = COMFY
    saved = copy.deepcopy(folder_paths.folder_names_and_paths.get("ganvas"))
    base = tmp_path / "ganvas-models"
    base.mkdir()
    (base / "tiny").symlink_to(tiny_checkpoint, target_is_directory=True)
    folder_paths.add_model_folder_path("ganvas", str(base))
    import comfy.model_management
    import comfy.utils

    hook = comfy.utils.PROGRESS_BAR_HOOK
    yield api, folder_paths, base
    comfy.utils.PROGRESS_BAR_HOOK = hook
    comfy.model_management.interrupt_current_processing(False)
    if saved is None:
        folder_paths.folder_names_and_paths.pop("ganvas", None)
    else:
        folder_paths.folder_names_and_paths["ganvas"] = saved


@needs_comfy
def test_entry_point_returns_the_extension_and_registers_models_ganvas(comfy_env):
    api, folder_paths, _ = comfy_env
    from ganvas.comfy_nodes import nodes

    extension = asyncio.run(comfy_entrypoint())
    assert isinstance(extension, api.ComfyExtension)
    assert asyncio.run(extension.get_node_list()) == nodes.NODES
    assert os.path.join(folder_paths.models_dir, "ganvas") in folder_paths.get_folder_paths("ganvas")


@needs_comfy
def test_schemas(comfy_env, plugins):
    from ganvas.comfy_nodes import nodes

    schemas = [node.GET_SCHEMA() for node in nodes.NODES]
    assert tuple(s.node_id for s in schemas) == NODE_IDS
    for node, schema in zip(nodes.NODES, schemas):
        assert schema.category == "ganvas" and schema.display_name.startswith("Ganvas ")
        json.dumps(node.GET_NODE_INFO_V1())  # what /object_info sends must serialise
    loader = nodes.GanvasModelLoader.INPUT_TYPES()["required"]
    assert "tiny" in loader["model_name"][1]["options"]
    generate = nodes.GanvasGenerate.GET_NODE_INFO_V1()
    assert generate["output"] == ["IMAGE", "STRING"] and generate["output_name"] == ["images", "seeds"]
    seed = generate["input"]["required"]["seed"][1]
    assert seed["control_after_generate"] is True and seed["max"] == MAX_SEED
    assert generate["input"]["required"]["prompt"][1]["multiline"] is True
    assert generate["input"]["optional"]["conditioning"][0] == "GANVAS_CONDITIONING"
    assert generate["input"]["required"]["batch_size"][1]["max"] == request_policy.DEFAULT_MAX_N
    assert nodes.GanvasModelLoader.GET_NODE_INFO_V1()["output"] == ["GANVAS_MODEL"]


@needs_comfy
def test_loader_validation_names_a_missing_model(comfy_env):
    from ganvas.comfy_nodes import nodes

    assert nodes.GanvasModelLoader.validate_inputs("tiny", "cpu") is True
    message = nodes.GanvasModelLoader.validate_inputs("nope", "cpu")
    assert "ganvas model 'nope' not found" in message and str(comfy_env[2]) in message and "tiny" in message
    assert "device must be one of cpu, comfyui" in nodes.GanvasModelLoader.validate_inputs("tiny", "gpu9")


@needs_comfy
def test_ui_workflow_widget_order_is_the_schemas(comfy_env):
    from ganvas.comfy_nodes import nodes

    for node in nodes.NODES:
        expected = []
        info = node.GET_NODE_INFO_V1()
        for group in ("required", "optional"):
            for name, (io_type, options) in info["input"].get(group, {}).items():
                if io_type in ("INT", "FLOAT", "STRING", "COMBO", "BOOLEAN") or isinstance(io_type, list):
                    expected.append(name)
                    if options.get("control_after_generate"):
                        expected.append(CONTROL)
        assert WIDGETS[info["name"]] == expected, info["name"]


@needs_comfy
def test_loader_generate_and_progress_through_the_nodes(comfy_env):
    from ganvas.comfy_nodes import nodes
    import comfy.utils

    pipe = nodes.GanvasModelLoader.execute("tiny", "cpu")[0]
    assert Path(pipe.info.path) == (comfy_env[2] / "tiny").resolve()
    ticks = []
    comfy.utils.PROGRESS_BAR_HOOK = lambda value, total, preview, node_id=None: ticks.append((value, total))
    out = nodes.GanvasGenerate.execute(pipe, PROMPT, 7, 2, 1.0, "")
    images, seeds = out.args
    assert images.shape == (2, 32, 32, 3) and images.dtype == torch.float32 and seeds == "7,8"
    assert ticks == [(1, 2), (2, 2)]
    expected = pipe(PROMPT, n=2, seed=7).images
    for i in range(2):
        assert np.array_equal((images[i].numpy() * 255).round().astype(np.uint8), pixels(expected[i]))


@needs_comfy
def test_interruption_stops_generation(comfy_env):
    from ganvas.comfy_nodes import nodes
    import comfy.model_management

    pipe = nodes.GanvasModelLoader.execute("tiny", "cpu")[0]
    comfy.model_management.interrupt_current_processing(True)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        nodes.GanvasGenerate.execute(pipe, PROMPT, 1, 4, 1.0, "")
    assert not comfy.model_management.processing_interrupted()  # ComfyUI's check clears the flag


@needs_comfy
def test_encode_mix_generate_and_interpolate_nodes(comfy_env):
    from ganvas.comfy_nodes import nodes

    pipe = nodes.GanvasModelLoader.execute("tiny", "cpu")[0]
    a = nodes.GanvasEncodePrompt.execute(pipe, PROMPT)[0]
    b = nodes.GanvasEncodePrompt.execute(pipe, OTHER)[0]
    mixed = nodes.GanvasMixPrompts.execute(a, b, 0.5)[0]
    assert mixed.frame == (1, 2) and mixed.vector is not None
    images = nodes.GanvasGenerate.execute(pipe, "", 3, 1, 1.0, "", mixed)[0]
    frame = pipe.interpolate([PROMPT, OTHER], 2, seeds=[3], frames=[1]).images[0]
    assert np.array_equal((images[0].numpy() * 255).round().astype(np.uint8), pixels(frame))
    frames = nodes.GanvasInterpolate.execute(pipe, PROMPT, OTHER, 3, 4, 9, 1.0, "")[0]
    assert frames.shape == (9, 32, 32, 3)


@needs_comfy
def test_loader_fingerprint_follows_the_checkpoint_file(comfy_env, tmp_path):
    from ganvas.comfy_nodes import nodes

    base = comfy_env[2]
    save_tiny_checkpoint(base / "fresh")
    before = nodes.GanvasModelLoader.fingerprint_inputs("fresh", "cpu")
    save_tiny_checkpoint(base / "fresh", seed=1)
    assert nodes.GanvasModelLoader.fingerprint_inputs("fresh", "cpu") != before
