"""The generator runs at the pipeline's own torch thread count, whatever the host set, and the host gets its
setting back: the same seed gives the same pixels in ComfyUI (torch left at 2 threads), the command line
(1) and a script that asked for 4, in one process or in several.

The shipped default model is the fixture for the pixel checks: with 2 or 4 threads, a few of its pixels
move by one level (2 of the 8 images rendered here, on the machine this was written on), so equal pixels
mean something there. Every test also records the thread count torch had inside the generator's forward,
which fails on any machine if the pipeline does not set its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, pixels, save_tiny_checkpoint
from PIL import Image

from ganvas.core import threads as threads_module
from ganvas.core.errors import GanvasError
from ganvas.core.pipeline import Pipeline, configure_threads, render_threads
from ganvas.core.requests import DEFAULT_MODEL

SHIPPED = REPO / "models" / DEFAULT_MODEL
CASES = [("red apple", None), ("cat face", "noto")]  # rendered n=4 from seed 3: seeds 3..6 each
PROMPT = "a small red circle on the left"


@contextmanager
def host_threads(n: int):
    """What a host does: torch at its own thread count (restored afterwards, for the rest of the suite)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def forward_threads(pipe: Pipeline):
    """A list that receives torch's thread count at every forward of the pipeline's generator."""
    seen: list[int] = []
    handle = pipe.model.generator.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    try:
        yield seen
    finally:
        handle.remove()


@pytest.fixture
def pipeline_default(monkeypatch):
    """No configure_threads value from an earlier in-process command: GANVAS_THREADS, else 1."""
    monkeypatch.setattr(threads_module, "_configured_threads", None)
    monkeypatch.delenv("GANVAS_THREADS", raising=False)


@pytest.fixture
def shipped(plugins, pipeline_default):
    return Pipeline.load(str(SHIPPED), plugins=plugins)


def renders(pipe: Pipeline) -> np.ndarray:
    return np.stack([pixels(im) for prompt, style in CASES for im in pipe(prompt, n=4, seed=3, style=style).images])


def test_same_seed_same_pixels_whatever_threads_the_host_set(shipped):
    out = {}
    with forward_threads(shipped) as seen:
        for host in (1, 2, 4):
            with host_threads(host):
                out[host] = renders(shipped)
                assert torch.get_num_threads() == host  # the host's setting is given back
    assert seen == [1] * (3 * 4 * len(CASES))
    assert np.array_equal(out[2], out[1]) and np.array_equal(out[4], out[1])


HOST_SCRIPT = """
import json, sys, torch
from pathlib import Path
if int(sys.argv[3]):
    torch.set_num_threads(int(sys.argv[3]))
before = torch.get_num_threads()
from ganvas.core.pipeline import Pipeline
pipe = Pipeline.load(sys.argv[1])
seen = set()
pipe.model.generator.register_forward_pre_hook(lambda module, args: seen.add(torch.get_num_threads()))
for k, (prompt, style) in enumerate(json.loads(sys.argv[4])):
    for i, image in enumerate(pipe(prompt, n=4, seed=3, style=style).images):
        image.save(Path(sys.argv[2]) / f"{k}_{i}.png")
print(json.dumps({"host": before, "after": torch.get_num_threads(), "forward": sorted(seen)}))
"""


@pytest.mark.parametrize("set_threads, omp", [(4, None), (0, "2")], ids=["set_num_threads-4", "OMP_NUM_THREADS-2"])
def test_same_seed_same_png_pixels_in_another_process_whatever_its_threads(shipped, tmp_path, set_threads, omp):
    env = {"GANVAS_PLUGINS": "", "PATH": "/usr/bin:/bin", **({"OMP_NUM_THREADS": omp} if omp else {})}
    done = subprocess.run(
        [sys.executable, "-c", HOST_SCRIPT, str(SHIPPED), str(tmp_path), str(set_threads), json.dumps(CASES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # torch may cap OMP_NUM_THREADS and its default at the machine's cores: the host's count is what it reported.
    assert report["forward"] == [1] and report["after"] == report["host"] == (set_threads or report["host"])
    theirs = np.stack(
        [np.asarray(Image.open(tmp_path / f"{k}_{i}.png").convert("RGB")) for k in range(len(CASES)) for i in range(4)]
    )
    assert np.array_equal(theirs, renders(shipped))


def test_thread_count_comes_from_the_pipeline_and_goes_back_even_after_an_error(pipe, pipeline_default, monkeypatch):
    with host_threads(2), forward_threads(pipe) as seen:
        pipe(PROMPT, seed=1)  # default: 1
        monkeypatch.setenv("GANVAS_THREADS", "3")
        pipe(PROMPT, seed=1)
        pipe.threads = 4  # the pipeline's own setting wins over the environment
        pipe(PROMPT, seed=1)
        assert seen == [1, 3, 4] and torch.get_num_threads() == 2

        def fail(module, args):
            raise RuntimeError("forward failed")

        handle = pipe.model.generator.register_forward_pre_hook(fail)
        try:
            with pytest.raises(RuntimeError, match="forward failed"):
                pipe(PROMPT, seed=1)
        finally:
            handle.remove()
        assert torch.get_num_threads() == 2
        pipe.threads = None
        monkeypatch.setenv("GANVAS_THREADS", "two")
        with pytest.raises(GanvasError, match="GANVAS_THREADS='two'"):
            pipe(PROMPT, seed=1)
        assert torch.get_num_threads() == 2


def test_configure_threads_sets_torch_and_every_pipelines_count(pipe, pipeline_default):
    with host_threads(1), forward_threads(pipe) as seen:
        assert configure_threads(3) == 3 and torch.get_num_threads() == 3  # the command line's --threads
        torch.set_num_threads(2)  # a host changing it afterwards
        pipe(PROMPT, seed=1)
        assert seen == [3] and torch.get_num_threads() == 2


def test_concurrent_renders_take_turns_with_the_process_wide_setting(
    plugins, tiny_checkpoint, tmp_path, pipeline_default
):
    """Two models (each with its own lock) rendered from two threads at different thread counts: the second
    render starts only after the first has finished and put the setting back."""
    first = Pipeline.load(str(tiny_checkpoint), plugins=plugins)
    second = Pipeline.load(str(save_tiny_checkpoint(tmp_path / "other", seed=5)), plugins=plugins)
    assert first.model is not second.model
    first.threads, second.threads = 1, 3
    first.encode([PROMPT]), second.encode([PROMPT])  # the text encoder loaded: threads reach render at once
    entered, release, log = threading.Event(), threading.Event(), []

    def hold(module, args):
        log.append(("first", torch.get_num_threads()))
        entered.set()
        release.wait(60)

    def note(module, args):
        log.append(("second", torch.get_num_threads()))

    handles = [
        first.model.generator.register_forward_pre_hook(hold),
        second.model.generator.register_forward_pre_hook(note),
    ]
    try:
        workers = [
            threading.Thread(target=first, args=(PROMPT,), kwargs={"seed": 1}),
            threading.Thread(target=second, args=(PROMPT,), kwargs={"seed": 1}),
        ]
        workers[0].start()
        assert entered.wait(60)
        workers[1].start()
        time.sleep(0.5)  # without the lock, the second render would be inside its forward by now
        log.append("first released")
        release.set()
        for worker in workers:
            worker.join(60)
    finally:
        for handle in handles:
            handle.remove()
    assert log == [("first", 1), "first released", ("second", 3)]


def test_render_threads_is_reentrant_and_restores_the_callers_setting(pipeline_default):
    with host_threads(2):
        with render_threads() as outer:
            assert outer == 1 and torch.get_num_threads() == 1
            with render_threads(3) as inner:  # a plugin rendering inside a render must not deadlock
                assert inner == 3 and torch.get_num_threads() == 3
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2


def test_comfyui_nodes_render_through_the_pipeline_and_leave_threads_alone(shipped):
    from ganvas.comfy_nodes import generation

    node_pipe = generation.load_pipeline(str(SHIPPED))
    assert node_pipe.model is shipped.model
    with host_threads(2), forward_threads(node_pipe) as seen:  # ComfyUI keeps torch at its own 2 threads
        prompt, style = CASES[0]
        images, seeds = generation.generate(node_pipe, prompt, seed=3, batch_size=4, style=style)
        batch = generation.to_image_batch(images)
        frames = generation.interpolate(node_pipe, "red apple", "cat face", 3, 4, frames=3)
        assert torch.get_num_threads() == 2
    assert seeds == [3, 4, 5, 6] and seen == [1] * (4 + 3)
    expected = renders(shipped)[:4]
    assert np.array_equal((batch.numpy() * 255).round().astype(np.uint8), expected)
    plain = shipped.interpolate(["red apple", "cat face"], 2, seeds=[3, 4])
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(frames, plain.images))
    # The pack leaves the thread setting to the pipeline: no call of its own that could disagree with it.
    pack = Path(generation.__file__).parent
    assert not [p.name for p in pack.glob("*.py") if "set_num_threads" in p.read_text(encoding="utf-8")]
