"""The generation pipeline: determinism, caching, thread safety, interpolation, request handling."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pixels, save_tiny_checkpoint, set_prompt_template

from ganvas.core.errors import GanvasError, InvalidRequest, ModelNotFound
from ganvas.core.io.images import to_pil
from ganvas.core.pipeline import Pipeline, generate, load_model, noise, resolve_model
from ganvas.core.requests import GenerationRequest

PROMPT = "a small red circle on the left"


def test_noise_is_the_trainers_recipe():
    expected = torch.randn(16, generator=torch.Generator().manual_seed(42))
    assert torch.equal(noise(16, [41, 42])[1], expected)


def test_same_seed_same_pixels_alone_or_in_a_batch_of_64(pipe):
    batch = pipe(PROMPT, n=64, seed=1000)
    assert batch.seeds == list(range(1000, 1064))
    for i in (0, 17, 63):
        alone = pipe(PROMPT, n=1, seed=1000 + i)
        assert np.array_equal(pixels(alone.images[0]), pixels(batch.images[i])), f"seed {1000 + i} differs"
    assert not np.array_equal(pixels(batch.images[0]), pixels(batch.images[1]))  # seeds do matter


def test_same_seed_same_pixels_in_another_process(pipe, tiny_checkpoint, tmp_path):
    script = (
        "import sys, torch, numpy as np\n"
        "torch.set_num_threads(1)\n"
        "from ganvas.core.pipeline import Pipeline\n"
        "res = Pipeline.load(sys.argv[1])(sys.argv[2], n=3, seed=77)\n"
        "np.save(sys.argv[3], np.stack([np.asarray(im) for im in res.images]))\n"
    )
    import subprocess

    out = tmp_path / "other.npy"
    env = {"GANVAS_PLUGINS": "", "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [sys.executable, "-c", script, str(tiny_checkpoint), PROMPT, str(out)], check=True, env=env, timeout=120
    )
    here = np.stack([pixels(im) for im in pipe(PROMPT, n=3, seed=77).images])
    assert np.array_equal(np.load(out), here)


def test_pipeline_equals_a_direct_generator_call(pipe):
    """No hidden steps: image = G(noise(seed) * psi, encoder(prompt))."""
    result = pipe(PROMPT, n=2, seed=5, truncation=0.7)
    G = pipe.model.generator
    text = pipe.encode([PROMPT]).expand(2, -1)
    with torch.inference_mode():
        direct = [G(noise(16, [s]) * 0.7, text[:1]) for s in (5, 6)]
    for image, tensor in zip(result.images, direct):
        assert np.array_equal(pixels(image), pixels(to_pil(tensor)[0]))
    assert not np.array_equal(pixels(result.images[0]), pixels(pipe(PROMPT, seed=5, truncation=1.0).images[0]))


def test_result_fields(pipe, tiny_checkpoint):
    result = pipe(PROMPT, n=2, seed=9, truncation=0.8, style="noto")
    assert len(result.images) == 2 and result.images[0].size == (32, 32) and result.images[0].mode == "RGB"
    assert result.seeds == [9, 10]
    assert result.request.prompt == f"{PROMPT}; noto style"  # the model's prompt template (as emoji64's)
    assert result.input_request.prompt == PROMPT and result.input_request.style == "noto"
    assert {"prepare", "check", "encode", "generate", "postprocess", "metadata", "total"} <= set(result.timings)
    assert result.model.name == "tiny" and result.model.resolution == 32 and len(result.model.hash) == 10
    assert result.model.path == str(tiny_checkpoint.resolve())
    assert result.metadata[0]["seed"] == "9" and result.images[1].info["seed"] == "10"
    assert result.warnings == []


def test_random_seed_is_recorded(pipe):
    result = pipe(PROMPT, n=2)
    assert result.seeds[1] == result.seeds[0] + 1 == result.request.seed + 1
    assert result.input_request.seed == result.seeds[0]  # replaying the input request reproduces it


def test_prompt_embeddings_are_cached(pipe):
    pipe("a prompt only this test uses", seed=1)
    cache = pipe._prompts
    misses = cache.misses
    pipe("a prompt only this test uses", n=3, seed=2)
    assert cache.misses == misses and cache.hits >= 1


def test_models_are_cached_and_thread_safe(plugins, tiny_checkpoint):
    first = Pipeline.load(str(tiny_checkpoint), plugins=plugins)
    second = Pipeline.load(str(tiny_checkpoint), plugins=plugins)
    assert first.model is second.model
    expected = [pixels(im) for im in first(PROMPT, n=4, seed=300).images]
    outputs, errors = {}, []

    def work(k):
        try:
            outputs[k] = [pixels(im) for im in second(PROMPT, n=4, seed=300).images]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in range(4):
        assert all(np.array_equal(a, b) for a, b in zip(outputs[k], expected))


def test_retrained_checkpoint_is_reloaded(plugins, tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "m", seed=1)
    before = Pipeline.load(str(folder), plugins=plugins)
    save_tiny_checkpoint(folder, seed=2)
    import os

    stat = os.stat(folder / "model.safetensors")
    os.utime(folder / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    after = Pipeline.load(str(folder), plugins=plugins)
    assert after.model is not before.model and after.info.hash != before.info.hash


def test_interpolate_key_frames_equal_plain_generations(pipe):
    result = pipe.interpolate(["a red circle", "a blue square"], steps=4, seed=3, truncation=0.9)
    assert len(result.images) == 5 and [f["index"] for f in result.frames] == [0, 1, 2, 3, 4]
    assert [f["t"] for f in result.frames] == [0, 0.25, 0.5, 0.75, 1.0]
    start = pipe("a red circle", seed=3, truncation=0.9).images[0]
    end = pipe("a blue square", seed=3, truncation=0.9).images[0]
    assert np.array_equal(pixels(result.images[0]), pixels(start))
    assert np.array_equal(pixels(result.images[-1]), pixels(end))
    assert not np.array_equal(pixels(result.images[2]), pixels(start))
    one = pipe.interpolate(["a red circle", "a blue square"], steps=4, seed=3, truncation=0.9, frames=[2])
    assert np.array_equal(pixels(one.images[0]), pixels(result.images[2]))


def test_interpolate_between_seeds_and_replay(pipe):
    result = pipe.interpolate("a green star", steps=2, seeds=[1, 2, 3])
    assert len(result.images) == 5 and result.seeds == [1, 1, 2, 2, 3]
    assert np.array_equal(pixels(result.images[2]), pixels(pipe("a green star", seed=2).images[0]))
    replay = pipe.generate(result.input_request, frames=[3])  # what --from-png does for a frame
    assert np.array_equal(pixels(replay.images[0]), pixels(result.images[3]))
    with pytest.raises(InvalidRequest):
        pipe.interpolate(["a", "b", "c"], seeds=[1, 2])
    with pytest.raises(InvalidRequest):
        pipe.interpolate("only one key frame", seed=1)


def test_requested_size_is_a_resize(pipe):
    result = pipe(PROMPT, seed=1, size=64)
    assert result.images[0].size == (64, 64)
    assert "Size: 64x64" in result.images[0].info["parameters"]


@pytest.mark.parametrize(
    "changes, param",
    [
        ({"n": 0}, "n"),
        ({"truncation": 0}, "truncation"),
        ({"truncation": 1.5}, "truncation"),
        ({"seed": -1}, "seed"),
        ({"prompt": "   "}, "prompt"),
        ({"size": 4}, "size"),
        ({"model": "other"}, "model"),
    ],
)
def test_invalid_requests_name_the_field(pipe, changes, param):
    request = GenerationRequest(PROMPT, seed=1).replace(**changes)
    with pytest.raises(InvalidRequest) as info:
        pipe.generate(request)
    assert info.value.param == param


def test_request_round_trips_through_json():
    request = GenerationRequest("x", n=2, seed=3, style="noto", extra={"grayscale": True})
    assert GenerationRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
    with pytest.raises(InvalidRequest):
        GenerationRequest.from_dict({"prompt": "x", "colour": "red"})


def test_unknown_model_and_broken_checkpoint(plugins, tmp_path):
    with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
        Pipeline.load("nope", plugins=plugins)
    folder = save_tiny_checkpoint(tmp_path / "broken")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(GanvasError, match="model.safetensors"):
        Pipeline.load(str(folder), plugins=plugins)


def test_models_folder_registration_and_default_model(plugins, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("GANVAS_MODELS_PATH", str(tiny_checkpoint.parent))
    monkeypatch.setenv("GANVAS_MODEL", "tiny")
    assert "tiny" in plugins.models()
    name, source, origin = resolve_model(None, plugins)
    assert name == "tiny" and origin == "plugin default_backend"
    result = generate(GenerationRequest(PROMPT, seed=4))  # the one call for hosts, default model
    assert result.model.name == "tiny"


def test_loader_models_and_lazy_package_exports(plugins):
    import ganvas

    assert ganvas.Pipeline is Pipeline
    from conftest import make_tiny_generator

    loaded = load_model("built-in-code", lambda: make_tiny_generator(seed=3))
    assert loaded.info.path is None and len(loaded.info.hash) == 10


# --- style words: each model's prompt template (config.json "prompt_template") --------------------------------


def test_the_style_word_goes_in_with_the_models_own_template(plugins, tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "prefixed", prompt_template="{style} drawing of {prompt}")
    pipe = Pipeline.load(str(folder), plugins=plugins)
    assert pipe.info.prompt_template == "{style} drawing of {prompt}"
    result = pipe(" a fox ", seed=1, style=" pixel ")
    assert result.request.prompt == "pixel drawing of a fox" and result.input_request.prompt == " a fox "
    assert result.metadata[0]["Description"] == "pixel drawing of a fox"
    typed = pipe("pixel drawing of a fox", seed=1, style="pixel")  # already in: not put in twice
    assert typed.request.prompt == "pixel drawing of a fox"
    assert np.array_equal(pixels(typed.images[0]), pixels(result.images[0]))
    frames = pipe.interpolate(["a fox", "a cat"], steps=2, seed=3, style="pixel")  # every key prompt
    assert frames.frames[1]["prompts"] == ["pixel drawing of a fox", "pixel drawing of a cat"]
    assert pipe("a fox", seed=1, style="  ").request.prompt == "a fox"  # a blank style is no style


def test_a_model_without_a_template_refuses_a_style_naming_the_field(plugins, tmp_path):
    """No template: the model was not trained to read a style word, so the request is refused (param "style")
    rather than drawn without the style the user asked for (the HTTP server and Krita show no warnings)."""
    pipe = Pipeline.load(str(save_tiny_checkpoint(tmp_path / "plain", prompt_template=None)), plugins=plugins)
    assert pipe.info.prompt_template is None
    for call in (
        lambda: pipe(PROMPT, seed=1, style="noto"),
        lambda: pipe.interpolate([PROMPT, "a cat"], steps=2, seed=1, style="noto"),
        lambda: pipe.generate(GenerationRequest(PROMPT, seed=1, style="noto")),
    ):
        with pytest.raises(InvalidRequest, match="style 'noto': model 'plain' has no prompt template") as refused:
            call()
        assert refused.value.param == "style"
    plain = pipe(PROMPT, seed=1)
    assert plain.request.prompt == PROMPT
    for blank in (None, "", "   "):
        assert np.array_equal(pixels(pipe(PROMPT, seed=1, style=blank).images[0]), pixels(plain.images[0]))


def test_shipped_models_prompt_templates(plugins):
    """emoji64's captions end in "; <style> style" (its config.json says so); shapes was trained without styles."""
    from ganvas.core.io.checkpoint import read_config
    from ganvas.core.requests import prompt_template
    from ganvas.plugins.default_backend import MODELS_DIR

    assert prompt_template(read_config(MODELS_DIR / "emoji64")) == "{prompt}; {style} style"
    assert prompt_template(read_config(MODELS_DIR / "shapes")) is None


@pytest.mark.parametrize(
    "template",
    [
        "{prompt}",
        "{style}",
        "{prompt} {prompt} {style}",
        "{prompt}, {style}, {seed}",
        "{prompt!r} {style}",
        "{prompt",
        7,
    ],
)
def test_a_malformed_template_is_a_load_error_naming_the_file(plugins, tmp_path, template):
    folder = set_prompt_template(save_tiny_checkpoint(tmp_path / "bad"), template)
    with pytest.raises(GanvasError, match=r"config\.json: prompt_template") as failed:
        Pipeline.load(str(folder), plugins=plugins)
    assert str(folder) in str(failed.value)


def test_a_loader_model_may_bring_its_template(plugins):
    from conftest import make_tiny_generator

    def loader():
        generator = make_tiny_generator(seed=4)
        generator.prompt_template = "{prompt} ({style})"
        return generator

    loaded = load_model("templated-loader", loader)
    assert loaded.info.prompt_template == "{prompt} ({style})"
    assert loaded.info.styled_prompt("fox", "pixel") == "fox (pixel)"
    assert load_model("plain-loader", lambda: make_tiny_generator(seed=4)).info.prompt_template is None


def test_pipeline_interpolate_checks_the_frame_count_before_building_frames(tmp_path):
    """Pipeline.interpolate(steps=10^9) is refused by the request policy before the frame list exists.
    Run in a process with a capped address space: the old order raised MemoryError there."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import save_tiny_checkpoint
        from ganvas.core.pipeline import Pipeline
        from ganvas.core.plugin_manager import GanvasPlugins
        from ganvas.core.requests import RequestRefused
        from pathlib import Path

        pipe = Pipeline.load(str(save_tiny_checkpoint(Path({str(tmp_path)!r}) / "tiny")),
                             plugins=GanvasPlugins(entry_points=False, env={{}}))
        for frames in (None, [3]):
            try:
                pipe.interpolate(["a red apple", "a green apple"], steps=10 ** 9, seed=1, frames=frames)
            except RequestRefused as exc:
                print(exc)
    """)
    cap = 3 << 30  # the process needs ~1.3 GB; the old frame list alone needed 8 GB
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        done.stdout.splitlines()
        == ["request refused by request_policy: n=1000000001 images requested; the limit is 100"] * 2
    )
