"""The ComfyUI node pack: its parts without ComfyUI, then each node against the real comfy_api.

The second half runs when comfy_api can be imported (GANVAS_COMFYUI_DIR pointing at a ComfyUI checkout,
run with a Python that has ComfyUI's requirements), and is skipped with the reason otherwise:

    GANVAS_COMFYUI_DIR=~/ComfyUI ~/ComfyUI/.venv/bin/python -m pytest tests/comfy_nodes/test_comfy_nodes.py
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
from comfy_helpers import CONTROL, PACK, WIDGETS, import_comfy_api, load_workflow, save_rgba_checkpoint, ui_to_api
from conftest import REPO, pixels, save_tiny_checkpoint
from PIL import Image

from ganvas.comfy_nodes import (
    NODE_IDS,
    comfy_entrypoint,
    conditioning,
    generation,
    installer,
    memory,
    model_folders,
    saving,
)
from ganvas.comfy_nodes.conditioning import PromptConditioning, mix, mix_weight
from ganvas.core import pipeline as pipeline_module
from ganvas.core import policy as request_policy
from ganvas.core.errors import GanvasError
from ganvas.core.requests import DEFAULT_MODEL, MAX_SEED

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
    code = (
        "import sys, inspect, ganvas.comfy_nodes as pack\n"
        "assert inspect.iscoroutinefunction(pack.comfy_entrypoint)\n"
        "heavy = sorted(m for m in ('torch', 'comfy_api', 'folder_paths', 'ganvas.core.pipeline') if m in sys.modules)\n"
        "print(','.join(pack.NODE_IDS), heavy)\n"
    )
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
    _touch_checkpoint(a / "emoji64" / "inner")  # inside a checkpoint: not a model of its own
    _touch_checkpoint(a / ".hidden" / "x")
    (a / "notes").mkdir()
    (a / "notes" / "config.json").write_text("{}")  # no weights: not a checkpoint
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
    assert model_folders.fingerprint("nope", [tmp_path], registered={}) == "name:nope"
    # a registered name with a folder is fingerprinted by its files too (a retrained shipped model reloads)
    shapes = model_folders.fingerprint("shapes", [tmp_path])
    assert shapes.startswith("shapes|") and shapes != model_folders.fingerprint("shapes", [tmp_path], registered={})
    # ComfyUI writes it into the prompt its history and PNGs keep: no server path in it
    assert str(tmp_path) not in before and str(REPO) not in shapes


def test_style_combo_offers_the_default_models_styles_first_then_the_others(tmp_path):
    base = tmp_path / "models"
    save_tiny_checkpoint(base / "mine", styles=["pixel", "noto", "none"])
    save_tiny_checkpoint(base / "plain")  # records no styles
    registered = {"emoji64": REPO / "models" / "emoji64", "coded": lambda: None}
    options, default = model_folders.style_options([base], registered)
    shipped = list(model_folders.checkpoint_styles(REPO / "models" / "emoji64"))
    assert shipped[0] == "noto" and "twemoji" in shipped
    assert options == ["none", *shipped, "pixel"] and default == "noto"
    mine_only, default = model_folders.style_options([base], {})
    # without emoji64 the loader's default is its first choice, "mine": its first style is the default
    assert mine_only == ["none", "pixel", "noto"] and default == "pixel"
    assert model_folders.style_options([tmp_path / "empty"], {}) == (["none"], "none")


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
    images, seeds = generation.generate(
        pipe, "", seed=11, batch_size=2, conditioning=mixed, on_image=lambda done, total: calls.append((done, total))
    )
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
    with pytest.raises(GanvasError, match="batch_size is 3; the limit is 2 images per run") as refused:
        generation.generate(pipe, PROMPT, seed=1, batch_size=3)
    assert refused.value.param == "batch_size"
    with pytest.raises(GanvasError, match="frames is 3; the limit is 2"):
        generation.interpolate(pipe, PROMPT, OTHER, 1, 2, frames=3)
    for missing in (None, "a model"):
        with pytest.raises(TypeError, match="not a ganvas model: connect the model output of a Ganvas Model Loader"):
            generation.generate(missing, PROMPT, seed=1)


def test_prompt_limits_count_what_was_typed_and_name_the_field(pipe):
    request_policy.configure(max_prompt_chars=20, blocklist=["forbidden"])
    assert generation.prompt_problem("a" * 20) is None
    assert generation.prompt_problem("  " + "a" * 20 + "  ") is None  # stripped, as the pipeline strips it
    assert generation.prompt_problem("a" * 35) == ("prompt is 35 characters; the limit is 20 (GANVAS_MAX_PROMPT_CHARS)")
    template = pipe.info.prompt_template  # "{prompt}; {style} style", as emoji64's
    with_style = generation.prompt_problem("a" * 15, "prompt", "noto", template)
    assert with_style.startswith("prompt is 15 characters, 27 with the style suffix '; noto style'; the limit is 20")
    assert generation.prompt_problem("a" * 15, "prompt", "none", template) is None
    prefixed = generation.prompt_problem("a" * 15, "prompt", "noto", "{style} drawing of {prompt}")
    assert prefixed.startswith(
        "prompt is 15 characters, 31 with style 'noto' (the model's prompt template "
        "'{style} drawing of {prompt}'); the limit is 20 (GANVAS_MAX_PROMPT_CHARS): "
        "shorten it to 4 or pick style none"
    )
    assert "forbidden" in generation.prompt_problem("a forbidden fox", "text") and generation.prompt_problem(
        "a forbidden fox", "text"
    ).startswith("text: ")
    assert generation.prompt_problem(None) is None  # a linked input: unknown before the run
    with pytest.raises(GanvasError, match="prompt is 15 characters, 27 with the style suffix") as refused:
        generation.generate(pipe, "a" * 15, seed=1, style="noto")
    assert refused.value.param == "prompt"
    with pytest.raises(GanvasError, match="prompt_to is 30 characters; the limit is 20") as refused:
        generation.interpolate(pipe, PROMPT[:10], "b" * 30, 1, 2, frames=3)
    assert refused.value.param == "prompt_to"
    with pytest.raises(GanvasError, match="text is 30 characters"):
        generation.encode(pipe, "c" * 30)


def test_a_style_the_model_was_not_trained_with_is_refused_naming_its_styles(plugins, tmp_path):
    from ganvas.core.pipeline import Pipeline

    styled = Pipeline.load(str(save_tiny_checkpoint(tmp_path / "styled", styles=["noto", "pixel"])), plugins=plugins)
    with pytest.raises(
        GanvasError,
        match=r"style 'twemoji' is not a style model 'styled' was trained with; "
        r"its styles: noto, pixel \(or none\)",
    ) as refused:
        generation.generate(styled, PROMPT, seed=1, style="twemoji")
    assert refused.value.param == "style"
    images, _ = generation.generate(styled, PROMPT, seed=1, style="pixel")
    assert np.array_equal(pixels(images[0]), pixels(styled(PROMPT, seed=1, style="pixel").images[0]))
    for none in ("", "none", "None", None):  # "" is what older workflows hold
        plain, _ = generation.generate(styled, PROMPT, seed=1, style=none)
        assert np.array_equal(pixels(plain[0]), pixels(styled(PROMPT, seed=1).images[0]))


def test_a_model_without_a_prompt_template_takes_no_style(plugins, tmp_path):
    from ganvas.core.pipeline import Pipeline

    plain = Pipeline.load(str(save_tiny_checkpoint(tmp_path / "plain", prompt_template=None)), plugins=plugins)
    for call in (
        lambda: generation.generate(plain, PROMPT, seed=1, style="noto"),
        lambda: generation.interpolate(plain, PROMPT, OTHER, 1, 2, frames=3, style="noto"),
    ):
        with pytest.raises(
            GanvasError,
            match=r"style 'noto': model 'plain' takes no style word \(its config.json "
            r"has no \"prompt_template\"\); pick none",
        ) as refused:
            call()
        assert refused.value.param == "style"
    for none in ("", "none", None):
        images, _ = generation.generate(plain, PROMPT, seed=1, style=none)
        assert np.array_equal(pixels(images[0]), pixels(plain(PROMPT, seed=1).images[0]))


def test_the_text_encoder_runs_at_the_pipelines_thread_count_too(pipe, monkeypatch):
    """ComfyUI keeps torch at 2 threads; the sentence vector then differs by ~1e-7 from the command line's
    (1 thread), which moved emoji64 pixels by a level (test_comfy_e2e, 'fox' noto seed 1)."""
    seen = []
    encode = pipe.encode
    monkeypatch.setattr(pipe, "encode", lambda prompts: (seen.append(torch.get_num_threads()), encode(prompts))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generation.generate(pipe, "a prompt not encoded before", seed=1)
        generation.interpolate(pipe, "another new prompt", "and one more", 1, 2, frames=2)
        generation.encode(pipe, "a third new prompt")
        assert torch.get_num_threads() == 2  # the host's setting comes back
    finally:
        torch.set_num_threads(before)
    assert seen == [pipeline_module.default_threads()] * 3


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
    with pytest.raises(
        RuntimeError,
        match=r"the ganvas Python package is not installed in ComfyUI's Python "
        r"\(.*\): run `.* -m pip install .*` and restart ComfyUI",
    ):
        generation.load_pipeline("shapes")
    assert generation.pip_target() == str(REPO)  # the pack is linked from this source tree


def test_ganvas_problem_says_how_to_install_ganvas(monkeypatch):
    assert generation.ganvas_problem() is None
    monkeypatch.setattr(generation, "_ganvas_ok", False)
    monkeypatch.setitem(sys.modules, "ganvas.core.requests", None)
    problem = generation.ganvas_problem()
    assert problem == (
        f"the ganvas Python package is not installed in ComfyUI's Python ({sys.executable}): run "
        f"`{sys.executable} -m pip install {REPO}` and restart ComfyUI (ComfyUI's torch is kept; "
        f"ganvas needs torch>=2.4)"
    )
    broken = ImportError("cannot import name 'x' from 'torch'", name="torch")
    assert "does not import: ImportError: cannot import name" in generation.missing_ganvas_message(broken)


# --- transparency: IMAGE + MASK ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rgba_checkpoint(tmp_path_factory) -> Path:
    return save_rgba_checkpoint(tmp_path_factory.mktemp("rgba") / "tiny_rgba", styles=["flat"])


def test_a_transparent_model_gives_straight_rgb_and_comfys_mask(plugins, rgba_checkpoint):
    from ganvas.core.pipeline import Pipeline

    rgba = Pipeline.load(str(rgba_checkpoint), plugins=plugins)
    assert rgba.info.channels == 4
    rendered = generation.render(rgba, PROMPT, seed=5, batch_size=2)
    assert rendered.channels == 4 and [im.mode for im in rendered.images] == ["RGBA", "RGBA"]
    images, masks = generation.to_image_batch(rendered.images), generation.to_mask_batch(rendered.images)
    assert images.shape == (2, 32, 32, 3) and masks.shape == (2, 32, 32) and masks.dtype == torch.float32
    for i, expected in enumerate(rgba(PROMPT, n=2, seed=5).images):
        straight = np.asarray(expected)
        assert np.array_equal(np.clip(255.0 * images[i].numpy(), 0, 255).astype(np.uint8), straight[..., :3])
        assert np.allclose(masks[i].numpy(), 1 - straight[..., 3] / 255, atol=1e-6)  # ComfyUI: mask = 1 - alpha
        assert len(np.unique(straight[..., 3])) > 1  # the fixture's alpha is not constant
    rgb_masks = generation.to_mask_batch([Image.new("RGB", (4, 3), "red")])
    assert rgb_masks.shape == (1, 3, 4) and not rgb_masks.any()  # RGB models: fully opaque


# --- sizes: Generate's size input and Ganvas Upscale (the pipeline's upsampler) ------------------------------


def _needs_upsampler(plugins):
    if not plugins.upsamplers():
        pytest.skip("no upsampler is registered (models/upsamplers/ is empty): sizes above native cannot be made")


def test_generate_size_is_the_requests_size(plugins, pipe):
    _needs_upsampler(plugins)
    for size in ("native", "native (64)", None, ""):
        native, _ = generation.generate(pipe, PROMPT, seed=7, size=size)
        assert native[0].size == (32, 32)
    images, seeds = generation.generate(pipe, PROMPT, seed=7, batch_size=2, size="128")
    expected = pipe(PROMPT, n=2, seed=7, size=128)
    assert seeds == [7, 8] and [im.size for im in images] == [(128, 128)] * 2
    for got, want in zip(images, expected.images):
        assert np.array_equal(np.asarray(got), np.asarray(want))
    assert "upsampler" in images[0].info  # recorded in the PNG fields Ganvas Save writes
    assert generation.generate(pipe, PROMPT, seed=7, size=96)[0][0].size == (96, 96)  # an API prompt's number
    for bad in ("huge", "7", 4096, "256x256", True):
        with pytest.raises(GanvasError, match="size must be native or a side in pixels") as err:
            generation.generate(pipe, PROMPT, seed=7, size=bad)
        assert err.value.param == "size"


def test_upscale_of_generates_image_and_mask_equals_generate_at_that_size(plugins, rgba_checkpoint):
    """Generate (native) -> Ganvas Upscale (128) gives Generate (size 128)'s bytes, alpha included."""
    from ganvas.core.pipeline import Pipeline

    _needs_upsampler(plugins)
    rgba = Pipeline.load(str(rgba_checkpoint), plugins=plugins)
    native = generation.render(rgba, PROMPT, seed=5, batch_size=2).images
    image, mask = generation.to_image_batch(native), generation.to_mask_batch(native)
    ticks = []
    up = generation.upscale(rgba, image, mask, "128", on_image=lambda done, total: ticks.append((done, total)))
    assert ticks == [(1, 2), (2, 2)]
    direct = rgba(PROMPT, n=2, seed=5, size=128).images
    for got, want in zip(up, direct):
        assert got.mode == want.mode == "RGBA" and got.size == (128, 128)
        assert np.array_equal(np.asarray(got), np.asarray(want))
    once = generation.upscale(rgba, image, mask, "x scale")  # one pass: the upsampler's scale
    scale = rgba.load_upsampler().info.scale
    assert once[0].size == (32 * scale, 32 * scale)
    assert np.array_equal(np.asarray(once[0]), np.asarray(rgba.upscale(native[0])))
    # out as IMAGE + MASK, which Join Image with Alpha + Save Image turn back into the same RGBA bytes
    out_image, out_mask = generation.to_image_batch(up), generation.to_mask_batch(up)
    back = generation.from_image_batch(out_image, out_mask)
    assert all(np.array_equal(np.asarray(b), np.asarray(u)) for b, u in zip(back, up))


def test_upscale_takes_any_image_rgb_without_a_mask_and_refuses_stretching(plugins, pipe):
    _needs_upsampler(plugins)
    photo = torch.rand(1, 20, 30, 3)
    scale = pipe.load_upsampler().info.scale
    out = generation.upscale(pipe, photo)  # default: one pass, aspect ratio kept
    assert out[0].mode == "RGB" and out[0].size == (30 * scale, 20 * scale)
    assert not generation.to_mask_batch(out).any()
    with pytest.raises(GanvasError, match="square image, but the images are 30 x 20") as err:
        generation.upscale(pipe, photo, size="256")
    assert err.value.param == "size"
    half = torch.zeros(16, 16)
    half[:8] = 1.0
    shared = generation.upscale(pipe, torch.rand(2, 16, 16, 3), half, "64")  # one mask for all
    assert [im.mode for im in shared] == ["RGBA", "RGBA"] and shared[0].size == (64, 64)
    assert np.asarray(shared[1])[:8, :, 3].max() < 128 < np.asarray(shared[1])[-8:, :, 3].min()
    # an all-zero mask is opaque (an RGB model's, or Load Image's 64x64 placeholder): RGB, whatever its size
    opaque = generation.upscale(pipe, photo, torch.zeros(1, 64, 64))
    assert opaque[0].mode == "RGB" and np.array_equal(np.asarray(opaque[0]), np.asarray(out[0]))
    with pytest.raises(GanvasError, match="mask is") as err:
        generation.upscale(pipe, torch.rand(2, 16, 16, 3), torch.ones(3, 16, 16))
    assert err.value.param == "mask"
    with pytest.raises(GanvasError, match="images must be an IMAGE batch"):
        generation.upscale(pipe, torch.rand(16, 16, 3))
    with pytest.raises(GanvasError, match="x scale"):
        generation.upscale(pipe, photo, size="native")


def test_every_alpha_level_survives_join_image_with_alpha_and_save_image():
    """ComfyUI's Join Image with Alpha computes 1 - mask, Save Image clip(255 x) truncated: a plain
    1 - a/255 mask would lose a level on 95 of the 256 alpha values."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = Image.fromarray(np.dstack([levels, levels, levels, levels]), "RGBA")
    mask = generation.to_mask_batch([image])[0]
    alpha = (1.0 - mask).numpy()  # Join Image with Alpha
    assert np.array_equal(np.clip(255.0 * alpha, 0, 255).astype(np.uint8), levels)  # Save Image
    assert np.array_equal(np.clip(np.rint(255.0 * alpha), 0, 255).astype(np.uint8), levels)
    assert np.abs(mask.numpy() - (1 - levels / 255)).max() < 1e-6


# --- Ganvas Save: PNGs that `ganvas generate --from-png` replays --------------------------------------------


def _replay(png: Path, out: Path) -> Image.Image:
    from ganvas.core.hosts.cli.main import main

    result = CliRunner().invoke(main, ["generate", "--from-png", str(png), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (made,) = [Path(line) for line in result.output.split() if line.endswith(".png")]
    return Image.open(made)


def _read_png(path: Path) -> tuple[Image.Image, dict]:
    image = Image.open(path)
    image.load()
    return image, dict(image.text)


def test_saved_pngs_carry_ganvas_and_comfy_fields_and_replay_to_the_same_pixels(pipe, tmp_path):
    rendered = generation.render(pipe, PROMPT, seed=7, batch_size=2, truncation=0.8, style="flat")
    metadata = saving.metadata_of(rendered.images)
    batch = generation.to_image_batch(rendered.images)
    comfy = saving.comfy_fields({"1": {"class_type": "GanvasGenerate"}}, {"workflow": {"nodes": []}})
    paths = [tmp_path / f"ganvas_{i:05}_.png" for i in range(2)]
    saved = saving.save_images(batch, metadata, paths, comfy)
    assert [(s.with_ganvas, s.mode) for s in saved] == [(True, "RGB"), (True, "RGB")]
    for i, path in enumerate(paths):
        image, text = _read_png(path)
        assert json.loads(text["prompt"]) == {"1": {"class_type": "GanvasGenerate"}}  # ComfyUI's own chunks
        assert json.loads(text["workflow"]) == {"nodes": []}
        assert text["parameters"].startswith(f"{PROMPT}; flat style\nSteps: 1, Sampler: GAN, Seed: {7 + i},")
        record = json.loads(text["ganvas"])
        assert record["seed"] == 7 + i and record["request"]["host"] == "comfyui"
        assert {k: v for k, v in text.items() if k not in ("prompt", "workflow")} == rendered.images[i].info
        replayed = _replay(path, tmp_path / f"replay{i}")
        assert replayed.mode == "RGB" and np.array_equal(np.asarray(replayed), np.asarray(image))
    none = saving.save_images(batch[:1], metadata, [tmp_path / "bare.png"], comfy, with_metadata=False)
    assert none[0].with_ganvas is False and _read_png(tmp_path / "bare.png")[1] == {}  # --disable-metadata


def test_images_are_matched_to_their_records_by_pixels(pipe, tmp_path):
    rendered = generation.render(pipe, PROMPT, seed=3, batch_size=3)
    metadata = saving.metadata_of(rendered.images)
    batch = generation.to_image_batch(rendered.images)
    edited = batch[1:2].clone()
    edited[0, 0, 0, 0] = 1.0 - edited[0, 0, 0, 0]
    images = torch.cat([batch[2:3], edited, batch[0:1]])  # reordered, one image changed on the way
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    saved = saving.save_images(images, metadata, paths, {})
    assert [s.with_ganvas for s in saved] == [True, False, True]
    assert json.loads(_read_png(paths[0])[1]["ganvas"])["seed"] == 5
    assert "ganvas" not in _read_png(paths[1])[1]  # would replay to other pixels
    assert json.loads(_read_png(paths[2])[1]["ganvas"])["seed"] == 3


def test_a_transparent_models_png_is_rgba_and_replays_exactly(plugins, rgba_checkpoint, tmp_path):
    from ganvas.core.pipeline import Pipeline

    rgba = Pipeline.load(str(rgba_checkpoint), plugins=plugins)
    rendered = generation.render(rgba, PROMPT, seed=11, batch_size=2, style="flat")
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    saved = saving.save_images(
        generation.to_image_batch(rendered.images), saving.metadata_of(rendered.images), paths, {}
    )
    assert [s.mode for s in saved] == ["RGBA", "RGBA"]
    for i, path in enumerate(paths):
        image, _ = _read_png(path)
        assert image.mode == "RGBA" and np.array_equal(np.asarray(image), np.asarray(rendered.images[i]))
        replayed = _replay(path, tmp_path / f"replay{i}")
        assert replayed.mode == "RGBA" and np.array_equal(np.asarray(replayed), np.asarray(image))


def test_interpolation_and_mix_frames_replay_too(pipe, tmp_path):
    rendered = generation.render_interpolation(pipe, PROMPT, OTHER, 2, 3, frames=3)
    a, b = generation.encode(pipe, PROMPT), generation.encode(pipe, OTHER)
    mixed = generation.render(pipe, "", seed=4, conditioning=mix(a, b, 0.5))
    images = rendered.images + mixed.images
    paths = [tmp_path / f"{i}.png" for i in range(len(images))]
    saving.save_images(generation.to_image_batch(images), saving.metadata_of(images), paths, {})
    for i, path in enumerate(paths):
        assert np.array_equal(np.asarray(_replay(path, tmp_path / f"r{i}")), np.asarray(images[i])), f"image {i}"


# --- memory: ComfyUI's unloading releases ganvas's models ---------------------------------------------------


def _cached_for(folder: Path) -> list:
    return [key for key in pipeline_module._models if str(folder.resolve()) in map(str, key)]


def test_comfys_unload_releases_ganvas_models_and_retraining_replaces_the_old_entry(plugins, tmp_path, monkeypatch):
    import gc
    import types
    import weakref

    monkeypatch.setattr(memory, "_tracked", {})
    monkeypatch.setattr(memory, "_versions", {})
    folder = save_tiny_checkpoint(tmp_path / "fresh")
    calls = []
    fake = types.SimpleNamespace(unload_all_models=lambda: calls.append("comfy"))
    assert memory.install_unload_hook(fake) is True and memory.install_unload_hook(fake) is False

    pipe, fresh = memory.load(str(folder), "cpu", "v1")
    again, fresh_again = memory.load(str(folder), "cpu", "v1")
    assert fresh and not fresh_again and again.model is pipe.model and len(_cached_for(folder)) == 1
    os.utime(folder / "model.safetensors", ns=(1, 1))  # retrained: new file version
    retrained, fresh = memory.load(str(folder), "cpu", "v2")
    assert fresh and retrained.model is not pipe.model
    assert len(_cached_for(folder)) == 1  # the older version was released

    gone = weakref.ref(retrained.model)
    fake.unload_all_models()  # what ComfyUI's /free calls
    assert calls == ["comfy"] and pipeline_module._models == {}
    del pipe, again, retrained
    gc.collect()
    assert gone() is None  # nothing of the pack keeps it alive


def test_unloading_moves_accelerator_models_to_the_cpu_and_back_on_use(pipe, monkeypatch):
    monkeypatch.setattr(memory, "_tracked", {})
    moves = []
    monkeypatch.setattr(memory, "_move", lambda loaded, device: moves.append(str(device)))
    memory.track(pipe)
    entry = memory._tracked[id(pipe.model)]
    entry.home = torch.device("cuda:0")
    monkeypatch.setattr(pipe.model, "device", torch.device("cuda:0"))
    assert memory.release_all() == ["tiny (cuda:0)"] and moves == ["cpu"] and entry.offloaded
    assert memory.ready(pipe) is pipe and moves == ["cpu", "cuda:0"] and not entry.offloaded
    memory.ready(pipe)
    assert moves == ["cpu", "cuda:0"]


# --- workflows --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ganvas_generate", "ganvas_mix_interpolate", "ganvas_transparent"])
def test_ui_and_api_workflows_agree(name):
    api = load_workflow(f"{name}_api.json")
    ui = load_workflow(f"{name}.json")
    stripped = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    assert ui_to_api(ui) == stripped
    assert {v["class_type"] for v in api.values()} <= set(NODE_IDS) | {"SaveImage", "JoinImageWithAlpha"}
    for node_id, node in api.items():
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert value[0] in api, f"node {node_id} links to missing node {value[0]}"
    assert ui["last_link_id"] == len(ui["links"]) and ui["last_node_id"] == max(n["id"] for n in ui["nodes"])
    loaders = [node["inputs"] for node in api.values() if node["class_type"] == "GanvasModelLoader"]
    assert loaders and all(inputs["model_name"] == DEFAULT_MODEL for inputs in loaders)
    styles = model_folders.checkpoint_styles(REPO / "models" / DEFAULT_MODEL)
    for node in api.values():
        if "style" in node["inputs"]:
            assert node["inputs"]["style"] in ("none", *styles)


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
    group.add_command(installer.make_comfy_group())
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
    installer._remove(foreign)
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
    assert installer.find_comfy_python(comfy_dir) == venv_python
    assert installer.has_ganvas(venv_python) is True
    assert installer.has_ganvas(comfy_dir / "nope") is None
    bare = comfy_dir / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')  # -S: no site-packages, so no ganvas
    bare.chmod(0o755)
    assert installer.has_ganvas(bare) is False
    result = CliRunner().invoke(_cli(), ["comfy", "install", str(comfy_dir), "--python", str(bare)])
    assert result.exit_code == 0 and f"ganvas is not installed in {bare}; run: {bare} -m pip install" in result.output


def test_the_plugin_adds_the_command_through_the_plugin_manager(plugins):
    assert plugins.pm.has_plugin("commands")  # the built-in that adds the hosts' commands
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
    unload = comfy.model_management.unload_all_models  # comfy_entrypoint() wraps it
    yield api, folder_paths, base
    comfy.model_management.unload_all_models = unload
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
    assert "tiny" in loader["model_name"][1]["options"] and loader["model_name"][1]["default"] == DEFAULT_MODEL
    generate = nodes.GanvasGenerate.GET_NODE_INFO_V1()
    assert generate["output"] == ["IMAGE", "STRING", "MASK", "GANVAS_METADATA"]
    assert generate["output_name"] == ["images", "seeds", "mask", "metadata"]
    seed = generate["input"]["required"]["seed"][1]
    assert seed["control_after_generate"] is True and seed["max"] == MAX_SEED - 99 == nodes.GENERATE_MAX_SEED
    prompt = generate["input"]["required"]["prompt"][1]
    assert prompt["multiline"] is True and prompt["default"] == "fox"
    style = generate["input"]["required"]["style"]
    assert style[0] == "COMBO" and style[1]["default"] == "noto"
    shipped = list(model_folders.checkpoint_styles(REPO / "models" / DEFAULT_MODEL))
    assert style[1]["options"][: len(shipped) + 1] == ["none", *shipped]  # emoji64's styles, "none" first
    assert generate["input"]["optional"]["conditioning"][0] == "GANVAS_CONDITIONING"
    assert generate["input"]["required"]["batch_size"][1]["max"] == request_policy.DEFAULT_MAX_N
    interpolate = nodes.GanvasInterpolate.GET_NODE_INFO_V1()
    assert interpolate["output"] == ["IMAGE", "MASK", "GANVAS_METADATA"]
    assert interpolate["input"]["required"]["style"][1]["options"] == style[1]["options"]
    assert nodes.GanvasModelLoader.GET_NODE_INFO_V1()["output"] == ["GANVAS_MODEL"]
    save = nodes.GanvasSave.GET_NODE_INFO_V1()
    assert save["output_node"] is True and save["output"] == []
    assert save["input"]["required"]["metadata"][0] == "GANVAS_METADATA"
    assert set(save["input"]["hidden"]) == {"prompt", "extra_pnginfo", "unique_id"}


@needs_comfy
def test_each_validate_inputs_declares_one_input_so_comfy_reports_a_message_once(comfy_env):
    """ComfyUI adds a validate_inputs message once per declared input (execution.validate_inputs)."""
    import inspect

    from comfy_api.internal import first_real_override

    from ganvas.comfy_nodes import nodes

    declared = {}
    for node in nodes.NODES:
        function = first_real_override(node, "validate_inputs")
        if function is not None:
            declared[node.__name__] = [a for a in inspect.getfullargspec(function).args if a != "cls"]
    assert declared == {
        "GanvasModelLoader": ["model_name"],
        "GanvasGenerate": ["prompt"],
        "GanvasEncodePrompt": ["text"],
    }


@needs_comfy
def test_loader_validation_names_a_missing_model_without_server_paths(comfy_env):
    from ganvas.comfy_nodes import nodes

    assert nodes.GanvasModelLoader.validate_inputs("tiny") is True
    message = nodes.GanvasModelLoader.validate_inputs("nope")
    assert message.startswith(
        "ganvas model 'nope' not found: put its checkpoint folder (config.json + "
        "model.safetensors) in ComfyUI's models/ganvas folder"
    )
    assert "tiny" in message and DEFAULT_MODEL in message and str(comfy_env[2]) not in message
    assert "model_name must be the name of a ganvas model, got None" in nodes.GanvasModelLoader.validate_inputs(None)
    with pytest.raises(ValueError, match="device must be one of cpu, comfyui, got 'gpu9'"):
        nodes.GanvasModelLoader.execute("tiny", "gpu9")


@needs_comfy
def test_loader_validation_says_when_ganvas_is_not_installed(comfy_env, monkeypatch):
    from ganvas.comfy_nodes import nodes

    monkeypatch.setattr(generation, "_ganvas_ok", False)
    monkeypatch.setitem(sys.modules, "ganvas.core.requests", None)
    message = nodes.GanvasModelLoader.validate_inputs(DEFAULT_MODEL)
    assert message.startswith(f"the ganvas Python package is not installed in ComfyUI's Python ({sys.executable})")
    assert nodes.GanvasGenerate.validate_inputs("x" * 5000) is True  # the loader says it, once


@needs_comfy
def test_generate_validation_counts_the_prompt_as_typed(comfy_env):
    from ganvas.comfy_nodes import nodes

    assert nodes.GanvasGenerate.validate_inputs("fox") is True
    assert nodes.GanvasGenerate.validate_inputs(None) is True  # linked from another node
    assert nodes.GanvasGenerate.validate_inputs("x" * 2000) == (
        "prompt is 2,000 characters; the limit is 1,000 (GANVAS_MAX_PROMPT_CHARS)"
    )
    assert nodes.GanvasEncodePrompt.validate_inputs("y" * 1001).startswith("text is 1,001 characters")


@needs_comfy
def test_a_null_model_is_a_clear_error(comfy_env):
    from ganvas.comfy_nodes import nodes

    for call in (
        lambda: nodes.GanvasGenerate.execute(None, PROMPT, 1, 1, 1.0, "none"),
        lambda: nodes.GanvasInterpolate.execute(None, PROMPT, OTHER, 1, 2, 3, 1.0, "none"),
        lambda: nodes.GanvasEncodePrompt.execute(None, PROMPT),
    ):
        with pytest.raises(TypeError, match="model is null, not a ganvas model: connect the model output"):
            call()


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
    import comfy.utils

    from ganvas.comfy_nodes import nodes

    pipe = nodes.GanvasModelLoader.execute("tiny", "cpu")[0]
    assert Path(pipe.info.path) == (comfy_env[2] / "tiny").resolve()
    ticks = []
    comfy.utils.PROGRESS_BAR_HOOK = lambda value, total, preview, node_id=None: ticks.append((value, total))
    out = nodes.GanvasGenerate.execute(pipe, PROMPT, 7, 2, 1.0, "none")
    images, seeds, mask, metadata = out.args
    assert images.shape == (2, 32, 32, 3) and images.dtype == torch.float32 and seeds == "7,8"
    assert mask.shape == (2, 32, 32) and not mask.any() and len(metadata) == 2
    assert ticks == [(1, 2), (2, 2)]
    expected = pipe(PROMPT, n=2, seed=7).images
    for i in range(2):
        assert np.array_equal((images[i].numpy() * 255).round().astype(np.uint8), pixels(expected[i]))


@needs_comfy
def test_generate_size_and_the_upscale_node(comfy_env, plugins):
    from ganvas.comfy_nodes import nodes

    _needs_upsampler(plugins)
    generate = nodes.GanvasGenerate.GET_NODE_INFO_V1()
    size = generate["input"]["optional"]["size"]
    assert (
        size[0] == "COMBO" and size[1]["options"] == ["native", "128", "256", "512"] and size[1]["default"] == "native"
    )
    upscale = nodes.GanvasUpscale.GET_NODE_INFO_V1()
    assert upscale["output"] == ["IMAGE", "MASK"] and upscale["input"]["required"]["images"][0] == "IMAGE"
    assert set(upscale["input"]["optional"]) == {"mask", "model"}
    json.dumps(upscale)
    pipe = nodes.GanvasModelLoader.execute("tiny", "cpu")[0]
    big, seeds, mask, metadata = nodes.GanvasGenerate.execute(pipe, PROMPT, 7, 2, 1.0, "none", None, "128").args
    assert big.shape == (2, 128, 128, 3) and mask.shape == (2, 128, 128) and seeds == "7,8"
    small = nodes.GanvasGenerate.execute(pipe, PROMPT, 7, 2, 1.0, "none").args  # no size: native
    assert small[0].shape == (2, 32, 32, 3)
    up_image, up_mask = nodes.GanvasUpscale.execute(small[0], "128", small[2], pipe).args
    assert torch.equal(up_image, big) and torch.equal(up_mask, mask)
    default = nodes.GanvasUpscale.execute(small[0], "x scale").args[0]  # no model: the default model's upsampler
    assert default.shape[1] > 32


@needs_comfy
def test_interruption_stops_generation(comfy_env):
    import comfy.model_management

    from ganvas.comfy_nodes import nodes

    pipe = nodes.GanvasModelLoader.execute("tiny", "cpu")[0]
    comfy.model_management.interrupt_current_processing(True)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        nodes.GanvasGenerate.execute(pipe, PROMPT, 1, 4, 1.0, "none")
    assert not comfy.model_management.processing_interrupted()  # ComfyUI's check clears the flag


@needs_comfy
def test_encode_mix_generate_and_interpolate_nodes(comfy_env):
    from ganvas.comfy_nodes import nodes

    pipe = nodes.GanvasModelLoader.execute("tiny", "cpu")[0]
    a = nodes.GanvasEncodePrompt.execute(pipe, PROMPT)[0]
    b = nodes.GanvasEncodePrompt.execute(pipe, OTHER)[0]
    mixed = nodes.GanvasMixPrompts.execute(a, b, 0.5)[0]
    assert mixed.frame == (1, 2) and mixed.vector is not None
    images = nodes.GanvasGenerate.execute(pipe, "", 3, 1, 1.0, "none", mixed)[0]
    frame = pipe.interpolate([PROMPT, OTHER], 2, seeds=[3], frames=[1]).images[0]
    assert np.array_equal((images[0].numpy() * 255).round().astype(np.uint8), pixels(frame))
    frames, mask, metadata = nodes.GanvasInterpolate.execute(pipe, PROMPT, OTHER, 3, 4, 9, 1.0, "none").args
    assert frames.shape == (9, 32, 32, 3) and mask.shape == (9, 32, 32) and len(metadata) == 9


@needs_comfy
def test_loader_fingerprint_follows_the_checkpoint_file(comfy_env, tmp_path):
    from ganvas.comfy_nodes import nodes

    base = comfy_env[2]
    save_tiny_checkpoint(base / "fresh")
    before = nodes.GanvasModelLoader.fingerprint_inputs("fresh", "cpu")
    save_tiny_checkpoint(base / "fresh", seed=1)
    assert nodes.GanvasModelLoader.fingerprint_inputs("fresh", "cpu") != before


@needs_comfy
def test_save_node_writes_into_comfys_output_folder_with_its_chunks(comfy_env, tmp_path, monkeypatch):
    from ganvas.comfy_nodes import nodes

    _, folder_paths, _ = comfy_env
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path / "output"))
    pipe = nodes.GanvasModelLoader.execute("tiny", "cpu")[0]
    images, _, _, metadata = nodes.GanvasGenerate.execute(pipe, PROMPT, 9, 2, 1.0, "none").args
    graph = {"2": {"class_type": "GanvasGenerate", "inputs": {"prompt": PROMPT}}}
    save = nodes.GanvasSave.PREPARE_CLASS_CLONE(
        {"PROMPT": graph, "EXTRA_PNGINFO": {"workflow": {"v": 1}}, "UNIQUE_ID": "3"}
    )
    out = save.execute(images, metadata, "sub/ganvas")
    results = out.ui.as_dict()["images"]
    assert [r["subfolder"] for r in results] == ["sub", "sub"] and {r["type"] for r in results} == {"output"}
    assert [r["filename"] for r in results] == ["ganvas_00001_.png", "ganvas_00002_.png"]
    for i, result in enumerate(results):
        image, text = _read_png(tmp_path / "output" / "sub" / result["filename"])
        assert json.loads(text["prompt"]) == graph and json.loads(text["workflow"]) == {"v": 1}
        assert json.loads(text["ganvas"])["seed"] == 9 + i
    again = save.execute(images[:1], metadata, "sub/ganvas").ui.as_dict()["images"]
    assert again[0]["filename"] == "ganvas_00003_.png"  # ComfyUI's counter: never overwrites
    with pytest.raises(TypeError, match="metadata is null: connect the metadata output of Ganvas Generate"):
        save.execute(images, None, "x")


@needs_comfy
def test_unload_all_models_of_comfy_releases_ganvas_models(comfy_env, monkeypatch):
    import comfy.model_management

    from ganvas.comfy_nodes import nodes

    asyncio.run(comfy_entrypoint())  # installs the hook
    assert getattr(comfy.model_management.unload_all_models, memory.HOOK_FLAG)
    nodes.GanvasModelLoader.execute("tiny", "cpu")
    assert pipeline_module._models
    comfy.model_management.unload_all_models()
    assert pipeline_module._models == {}


@needs_comfy
def test_join_image_with_alpha_and_save_image_write_the_models_rgba(comfy_env, rgba_checkpoint):
    from comfy_extras.nodes_compositing import JoinImageWithAlpha

    from ganvas.comfy_nodes import nodes
    from ganvas.core.pipeline import Pipeline

    base = comfy_env[2]
    (base / "tiny_rgba").symlink_to(rgba_checkpoint, target_is_directory=True)
    pipe = nodes.GanvasModelLoader.execute("tiny_rgba", "cpu")[0]
    images, _, mask, _ = nodes.GanvasGenerate.execute(pipe, PROMPT, 2, 3, 1.0, "flat").args
    joined = JoinImageWithAlpha.execute(images, mask).args[0]
    expected = Pipeline.load(str(rgba_checkpoint))(PROMPT, n=3, seed=2, style="flat").images
    for i in range(3):
        saved = np.clip(255.0 * joined[i].numpy(), 0, 255).astype(np.uint8)  # Save Image's conversion
        assert saved.shape == (32, 32, 4) and np.array_equal(saved, np.asarray(expected[i])), f"image {i}"
