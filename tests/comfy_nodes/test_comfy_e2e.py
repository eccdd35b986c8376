"""End to end: a real ComfyUI with the pack in custom_nodes, driven over HTTP like any client.

Needs a ComfyUI checkout (ComfyUI is not on PyPI), so it is skipped unless configured:

    GANVAS_COMFYUI_DIR=~/ComfyUI GANVAS_COMFYUI_PYTHON=~/ComfyUI/.venv/bin/python \\
        python -m pytest -m slow tests/comfy_nodes/test_comfy_e2e.py

GANVAS_COMFYUI_PYTHON (default: this Python) must have ComfyUI's requirements and ganvas installed.
ComfyUI runs with --cpu on 127.0.0.1 and a free port, its base directory in a temporary folder
(custom_nodes/ganvas linked by `ganvas comfy install`, models/ganvas with checkpoints: RGB, RGBA, one
that is retrained during the run) and an extra_model_paths.yaml with a second `ganvas` folder. ComfyUI's
torch runs at 2 threads (OMP_NUM_THREADS=2, what it keeps on a 2-core machine) while `ganvas generate`
uses 1: each PNG must still equal, pixel for pixel, what the ganvas command line writes with the same
Python, model and seed, and each PNG that Ganvas Save writes must replay (`ganvas generate --from-png`)
to the same pixels. A second ComfyUI, whose Python cannot import ganvas, checks the install message.
GANVAS_COMFY_EVIDENCE=FILE appends ComfyUI's answers to the error cases to FILE (JSON lines).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from comfy_helpers import COMFYUI_DIR, COMFYUI_PYTHON, NO_CHECKOUT, load_workflow, record_evidence, save_rgba_checkpoint
from conftest import REPO, save_tiny_checkpoint
from PIL import Image

from ganvas.comfy_nodes.installer import install

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not COMFYUI_DIR, reason=NO_CHECKOUT),
    pytest.mark.skipif(
        bool(COMFYUI_DIR) and not Path(COMFYUI_DIR or ".", "main.py").is_file(),
        reason=f"GANVAS_COMFYUI_DIR={COMFYUI_DIR} has no main.py: not a ComfyUI checkout",
    ),
]

PYTHON = COMFYUI_PYTHON or sys.executable
DEFAULT_STYLES = json.loads((REPO / "models" / "emoji64" / "config.json").read_text())["trained"]["styles"]
START_TIMEOUT = 240
RUN_TIMEOUT = 180
PROMPT = "a small red circle on the left"
MAX_SEED = 2**53 - 1
COMFY_THREADS = "2"  # ComfyUI's torch; the pipeline renders at its own 1 thread
# Prompts the default model draws (test_threads.py: with 2 threads some of their pixels move by a level
# unless the pipeline sets its own thread count).
CASES = [("fox", "noto", 0), ("red apple", "none", 3), ("cat face", "noto", 3)]
# Makes `import ganvas` fail in ComfyUI's Python, as when ganvas is not installed there.
BLOCK_GANVAS = """import sys
class _NoGanvas:
    def find_spec(self, name, path=None, target=None):
        if name == "ganvas" or name.startswith("ganvas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoGanvas())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _post_json(url: str, body: dict):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANVAS_")}
    env.update(OMP_NUM_THREADS="1", GANVAS_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _comfy_env(block_ganvas: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANVAS_") and k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS=COMFY_THREADS, PYTHONUNBUFFERED="1")
    if block_ganvas is not None:
        env["PYTHONPATH"] = str(block_ganvas)
    return env


class Comfy:
    def __init__(self, url: str, base: Path, log: Path, extra: Path):
        self.url, self.base, self.log, self.extra = url, base, log, extra

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, pattern: str, after: int = 0, timeout: float = 30) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.log_text(), after)
            if match:
                return match
            if time.monotonic() > deadline:
                pytest.fail(f"no log line matching {pattern!r} within {timeout} s:\n{self.log_text()[-3000:]}")
            time.sleep(0.3)


def _start_comfyui(tmp: Path, block_ganvas: Path | None = None):
    base = tmp / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "models").mkdir()
    installed = install(base)  # the real command's code: a link to comfy_nodes/
    assert installed.target.is_symlink() and installed.models_dir == base / "models" / "ganvas"
    models = installed.models_dir
    save_tiny_checkpoint(models / "tiny")
    save_rgba_checkpoint(models / "tiny_rgba", styles=["flat", "outline"])
    save_tiny_checkpoint(models / "fresh")
    extra = tmp / "extra-models"
    save_tiny_checkpoint(extra / "tiny_extra", seed=1)
    config = tmp / "extra_model_paths.yaml"
    config.write_text(f"ganvas_test:\n  ganvas: {extra}\n")
    port = _free_port()
    log = tmp / "comfyui.log"
    cmd = [
        PYTHON,
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-directory",
        str(base),
        "--extra-model-paths-config",
        str(config),
        "--database-url",
        "sqlite:///:memory:",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=COMFYUI_DIR, stdout=out, stderr=subprocess.STDOUT, env=_comfy_env(block_ganvas)
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"ComfyUI exited with {proc.returncode} while starting:\n{log.read_text()[-4000:]}")
        try:
            _get(f"{url}/system_stats", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.terminate()
                pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
    return proc, Comfy(url, base, log, extra)


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    """A running ComfyUI with ganvas in its Python."""
    proc, comfy = _start_comfyui(tmp_path_factory.mktemp("comfyui"))
    try:
        yield comfy
    finally:
        _stop(proc)


def queue(comfy: Comfy, workflow: dict, extra_data: dict | None = None):
    body = {"prompt": workflow, "client_id": uuid.uuid4().hex}
    if extra_data:
        body["extra_data"] = extra_data
    return _post_json(f"{comfy.url}/prompt", body)


def run_workflow(comfy: Comfy, workflow: dict, extra_data: dict | None = None) -> dict:
    """POST /prompt, poll /history until done; the history entry (the caller checks its status)."""
    status, queued = queue(comfy, workflow, extra_data)
    assert status == 200, f"/prompt refused the workflow: {json.dumps(queued)[:2000]}"
    prompt_id = queued["prompt_id"]
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        history = json.loads(_get(f"{comfy.url}/history/{prompt_id}"))
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            return history[prompt_id]
        time.sleep(0.3)
    pytest.fail(f"prompt {prompt_id} did not finish within {RUN_TIMEOUT} s")


def run_ok(comfy: Comfy, workflow: dict, extra_data: dict | None = None) -> dict:
    entry = run_workflow(comfy, workflow, extra_data)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    return entry


def execution_error(entry: dict) -> dict:
    assert entry["status"]["status_str"] == "error", entry["status"]
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert len(errors) == 1, entry["status"]
    return errors[0]


def saved_files(comfy: Comfy, entry: dict, node_id: str) -> list[Path]:
    """The PNGs a Save node wrote, as files in ComfyUI's output folder (checked to be served by /view)."""
    files = []
    for image in entry["outputs"][node_id]["images"]:
        assert image["type"] == "output"
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        path = comfy.base / "output" / image["subfolder"] / image["filename"]
        assert _get(f"{comfy.url}/view?{query}") == path.read_bytes()
        files.append(path)
    return files


def png(path: Path) -> tuple[np.ndarray, str, dict]:
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return np.asarray(image), image.mode, dict(image.text)


def ganvas_cli(args: list[str], out: Path) -> dict[str, tuple[np.ndarray, str]]:
    """Run the ganvas command line with ComfyUI's Python at its default 1 thread; {file name: (pixels, mode)}."""
    done = subprocess.run(
        [PYTHON, "-m", "ganvas.core.hosts.cli.main", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=_cli_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return {p.name: png(p)[:2] for p in sorted(out.glob("*.png"))}


def by_seed(files: dict, seed: int):
    return next(v for n, v in files.items() if n.endswith(f"-seed{seed}.png"))


def replay(path: Path, out: Path) -> tuple[np.ndarray, str]:
    (made,) = ganvas_cli(["generate", "--from-png", str(path)], out).values()
    return made


def _loader(model: str = "tiny", device: str = "cpu") -> dict:
    return {"class_type": "GanvasModelLoader", "inputs": {"model_name": model, "device": device}}


def _generate(prompt: str = PROMPT, seed: int = 0, batch: int = 1, style: str = "none", model=("1", 0)) -> dict:
    return {
        "class_type": "GanvasGenerate",
        "inputs": {
            "model": list(model) if model else None,
            "prompt": prompt,
            "seed": seed,
            "batch_size": batch,
            "truncation": 1.0,
            "style": style,
        },
    }


def _saver(images=("2", 0), metadata=("2", 3), prefix: str = "ganvas") -> dict:
    return {
        "class_type": "GanvasSave",
        "inputs": {"images": list(images), "metadata": list(metadata), "filename_prefix": prefix},
    }


# --- the pack in ComfyUI ------------------------------------------------------------------------------------


def test_the_pack_loads_and_lists_both_model_folders_and_the_trained_styles(comfyui):
    info = json.loads(_get(f"{comfyui.url}/object_info"))
    assert {
        "GanvasModelLoader",
        "GanvasGenerate",
        "GanvasInterpolate",
        "GanvasEncodePrompt",
        "GanvasMixPrompts",
        "GanvasSave",
    } <= set(info)
    model_name = info["GanvasModelLoader"]["input"]["required"]["model_name"][1]
    assert {"tiny", "tiny_rgba", "tiny_extra", "emoji64"} <= set(model_name["options"])
    assert model_name["default"] == "emoji64"
    style = info["GanvasGenerate"]["input"]["required"]["style"][1]
    assert style["options"][: len(DEFAULT_STYLES) + 1] == ["none", *DEFAULT_STYLES] and style["default"] == "noto"
    assert {"flat", "outline"} <= set(style["options"])  # tiny_rgba's styles follow the default model's
    assert info["GanvasGenerate"]["output"] == ["IMAGE", "STRING", "MASK", "GANVAS_METADATA"]
    assert info["GanvasSave"]["output_node"] is True
    lines = [
        line
        for line in comfyui.log_text().splitlines()
        if line.rstrip().endswith(os.sep + "ganvas") and "seconds" in line
    ]
    assert lines and "IMPORT FAILED" not in lines[0], comfyui.log_text()[-3000:]


def test_pngs_equal_ganvas_generate_while_comfyuis_torch_runs_at_two_threads(comfyui, tmp_path):
    """Pixel identity with the shipped default model, ComfyUI's torch at 2 threads, the CLI's at 1: Ganvas
    Save writes the CLI's PNG (RGBA too, for a transparent model); Save Image writes its colour channels."""
    workflow = {"1": _loader("emoji64")}
    for k, (prompt, style, seed) in enumerate(CASES):
        gen = str(10 + 3 * k)
        workflow[gen] = _generate(prompt, seed, 4, style)
        workflow[str(11 + 3 * k)] = _saver((gen, 0), (gen, 3), f"case{k}")
        workflow[str(12 + 3 * k)] = {
            "class_type": "SaveImage",
            "inputs": {"images": [gen, 0], "filename_prefix": f"plain{k}"},
        }
    entry = run_ok(comfyui, workflow)
    threads = comfyui.wait_for_log(
        r"loaded model 'emoji64' \(64 px, RGBA?, hash \w+\) on cpu; it renders at "
        r"(\d+) torch thread\(s\) \(ComfyUI's torch uses (\d+)\)"
    )
    assert threads.groups() == ("1", COMFY_THREADS)
    for k, (prompt, style, seed) in enumerate(CASES):
        expected = ganvas_cli(
            [
                "generate",
                prompt,
                "-n",
                "4",
                "--seed",
                str(seed),
                "--model",
                "emoji64",
                *([] if style == "none" else ["--style", style]),
            ],
            tmp_path / f"cli{k}",
        )
        ganvas_saved, plain = saved_files(comfyui, entry, str(11 + 3 * k)), saved_files(comfyui, entry, str(12 + 3 * k))
        for i, (path, plain_path) in enumerate(zip(ganvas_saved, plain)):
            cli_pixels, cli_mode = by_seed(expected, seed + i)
            pixels, mode, _ = png(path)
            assert (mode, pixels.shape[:2]) == (cli_mode, (64, 64))
            assert np.array_equal(pixels, cli_pixels), f"{prompt!r} seed {seed + i} differs from ganvas generate"
            pixels, mode, _ = png(plain_path)
            assert mode == "RGB" and np.array_equal(pixels, cli_pixels[..., :3]), f"Save Image {prompt!r} {seed + i}"


def test_ganvas_save_pngs_replay_with_ganvas_generate_from_png(comfyui, tmp_path):
    workflow = load_workflow("ganvas_generate_api.json")
    assert workflow["1"]["inputs"]["model_name"] == "emoji64" and workflow["3"]["class_type"] == "GanvasSave"
    ui = load_workflow("ganvas_generate.json")
    entry = run_ok(comfyui, workflow, {"extra_pnginfo": {"workflow": ui}})
    node = workflow["2"]["inputs"]
    files = saved_files(comfyui, entry, "3")
    assert len(files) == node["batch_size"]
    expected = ganvas_cli(
        [
            "generate",
            node["prompt"],
            "-n",
            str(node["batch_size"]),
            "--seed",
            str(node["seed"]),
            "--style",
            node["style"],
            "--model",
            "emoji64",
        ],
        tmp_path / "cli",
    )
    for i, path in enumerate(files):
        pixels, mode, text = png(path)
        assert np.array_equal(pixels, by_seed(expected, node["seed"] + i)[0])
        graph = json.loads(text["prompt"])  # ComfyUI's chunks
        assert graph["1"].pop("is_changed")[0].startswith("emoji64|")  # ComfyUI adds it; no server path
        assert graph == workflow and json.loads(text["workflow"]) == ui
        assert str(comfyui.base) not in text["prompt"] and str(REPO) not in text["prompt"]
        assert text["parameters"].startswith(
            f"fox; noto style\nSteps: 1, Sampler: GAN, Seed: {node['seed'] + i}, Size: 64x64, Model hash: "
        )  # A1111
        record = json.loads(text["ganvas"])
        assert record["seed"] == node["seed"] + i and record["request"]["style"] == "noto"
        assert record["model"]["name"] == "emoji64" and text["Software"].startswith("ganvas ")
        assert mode == by_seed(expected, node["seed"] + i)[1]
        replayed, replay_mode = replay(path, tmp_path / f"replay{i}")
        assert replay_mode == mode and np.array_equal(replayed, pixels), f"{path.name} does not replay"


def test_mix_and_interpolate_equal_ganvas_interpolate_and_replay(comfyui, tmp_path):
    workflow = load_workflow("ganvas_mix_interpolate_api.json")
    workflow["1"]["inputs"]["model_name"] = "tiny"  # quick: 32 px
    entry = run_ok(comfyui, workflow)
    model = str(comfyui.base / "models" / "ganvas" / "tiny")
    a, b = workflow["2"]["inputs"]["text"], workflow["3"]["inputs"]["text"]

    interp = workflow["7"]["inputs"]
    frames = saved_files(comfyui, entry, "8")
    expected = ganvas_cli(
        [
            "interpolate",
            interp["prompt_from"],
            interp["prompt_to"],
            "--seeds",
            f"{interp['seed_from']},{interp['seed_to']}",
            "--steps",
            str(interp["frames"] - 1),
            "--style",
            interp["style"],
            "--model",
            model,
        ],
        tmp_path / "interp",
    )
    assert [png(f)[0].tobytes() for f in frames] == [expected[n][0].tobytes() for n in sorted(expected)]
    middle = frames[len(frames) // 2]
    assert np.array_equal(replay(middle, tmp_path / "replay-frame")[0], png(middle)[0])

    assert workflow["4"]["inputs"]["weight"] == 0.5  # = frame 1 of 2 steps
    mixed = saved_files(comfyui, entry, "6")
    seed = workflow["5"]["inputs"]["seed"]
    for i, path in enumerate(mixed):
        frames_i = ganvas_cli(
            [
                "interpolate",
                a,
                b,
                "--seed",
                str(seed + i),
                "--steps",
                "2",
                "--style",
                workflow["5"]["inputs"]["style"],
                "--model",
                model,
            ],
            tmp_path / f"mix{i}",
        )
        frame1 = next(v for n, v in frames_i.items() if n.endswith("frame001.png"))[0]
        assert np.array_equal(png(path)[0], frame1), f"mixed image {i} differs"
        assert np.array_equal(replay(path, tmp_path / f"replay-mix{i}")[0], frame1)


def test_a_transparent_model_gives_image_and_mask_and_rgba_pngs(comfyui, tmp_path):
    workflow = load_workflow("ganvas_transparent_api.json")
    workflow["1"]["inputs"]["model_name"] = "tiny_rgba"
    node = workflow["2"]["inputs"]
    node["style"] = "flat"
    entry = run_ok(comfyui, workflow)
    expected = ganvas_cli(
        [
            "generate",
            node["prompt"],
            "-n",
            str(node["batch_size"]),
            "--seed",
            str(node["seed"]),
            "--style",
            "flat",
            "--model",
            str(comfyui.base / "models" / "ganvas" / "tiny_rgba"),
        ],
        tmp_path / "cli",
    )
    ganvas_saved, joined = saved_files(comfyui, entry, "3"), saved_files(comfyui, entry, "5")
    for i, (path, via_mask) in enumerate(zip(ganvas_saved, joined)):
        cli_pixels, cli_mode = by_seed(expected, node["seed"] + i)
        assert cli_mode == "RGBA" and len(np.unique(cli_pixels[..., 3])) > 1
        pixels, mode, _ = png(path)  # Ganvas Save keeps the model's alpha
        assert mode == "RGBA" and np.array_equal(pixels, cli_pixels), f"Ganvas Save image {i}"
        pixels, mode, _ = png(via_mask)  # IMAGE + MASK -> Join Image with Alpha -> Save Image
        assert mode == "RGBA" and np.array_equal(pixels, cli_pixels), f"Join Image with Alpha image {i}"
        replayed, replay_mode = replay(path, tmp_path / f"replay{i}")
        assert replay_mode == "RGBA" and np.array_equal(replayed, cli_pixels)

    workflow["1"]["inputs"]["model_name"] = "tiny"  # an RGB model: MASK all zeros, so alpha 255
    workflow["2"]["inputs"]["style"] = "none"
    entry = run_ok(comfyui, workflow)
    for path in saved_files(comfyui, entry, "5"):
        pixels, mode, _ = png(path)
        assert mode == "RGBA" and (pixels[..., 3] == 255).all()
    assert all(png(path)[1] == "RGB" for path in saved_files(comfyui, entry, "3"))


# --- errors: once, under the right input, no server paths --------------------------------------------------


def _node_errors(body: dict, node_id: str) -> list[dict]:
    return body["node_errors"][node_id]["errors"]


def test_validation_errors_are_reported_once_under_the_right_input(comfyui):
    workflow = {"1": _loader("no-such-model"), "2": _generate(), "3": _saver()}
    status, body = queue(comfyui, workflow)
    record_evidence("bad model_name", body)
    assert status == 400 and list(body["node_errors"]) == ["1"], body
    (error,) = _node_errors(body, "1")
    assert error["extra_info"]["input_name"] == "model_name" and error["type"] == "custom_validation_failed"
    assert error["details"].startswith(
        "model_name - ganvas model 'no-such-model' not found: put its checkpoint "
        "folder (config.json + model.safetensors) in ComfyUI's models/ganvas folder"
    )
    assert "tiny_extra" in error["details"] and "emoji64" in error["details"]
    text = json.dumps(body)
    assert str(comfyui.base) not in text and str(comfyui.extra) not in text and str(REPO) not in text

    workflow = {"1": _loader(), "2": _generate("x" * 2000), "3": _saver()}
    status, body = queue(comfyui, workflow)
    record_evidence("2000-character prompt", body)
    assert status == 400 and list(body["node_errors"]) == ["2"], body
    (error,) = _node_errors(body, "2")
    assert error["extra_info"]["input_name"] == "prompt"
    assert error["details"] == "prompt - prompt is 2,000 characters; the limit is 1,000 (GANVAS_MAX_PROMPT_CHARS)"

    workflow = {"1": _loader(), "2": _generate(seed=MAX_SEED, batch=2), "3": _saver()}
    status, body = queue(comfyui, workflow)
    record_evidence("seed 2**53-1 with batch_size 2", body)
    assert status == 400 and list(body["node_errors"]) == ["2"], body
    (error,) = _node_errors(body, "2")
    assert error["extra_info"]["input_name"] == "seed" and error["type"] == "value_bigger_than_max"


def test_errors_found_when_a_node_runs_name_the_field(comfyui):
    cases = {
        "device not in the list": (
            {"1": _loader(device="gpu9"), "2": _generate(), "3": _saver()},
            "1",
            "device",
            "device must be one of cpu, comfyui, got 'gpu9'",
        ),
        "style typo": (
            {"1": _loader("emoji64"), "2": _generate("fox", style="notto"), "3": _saver()},
            "2",
            "style",
            f"style 'notto' is not a style model 'emoji64' was trained with; its styles: "
            f"{', '.join(DEFAULT_STYLES)} (or none)",
        ),
        "prompt over the limit with its style": (
            {"1": _loader("emoji64"), "2": _generate("y" * 995, style="noto"), "3": _saver()},
            "2",
            "prompt",
            "prompt is 995 characters, 1,007 with the style suffix '; noto style'; the limit is 1,000",
        ),
        "model null": (
            {"2": _generate(model=None), "3": _saver()},
            "2",
            "model",
            "model is null, not a ganvas model: connect the model output of a Ganvas Model Loader to model",
        ),
        "empty prompt": ({"1": _loader(), "2": _generate("   "), "3": _saver()}, "2", "prompt", "prompt is empty"),
    }
    for name, (workflow, node_id, field, message) in cases.items():
        status, body = queue(comfyui, workflow)
        if status == 400:  # ComfyUI versions that check V3 combo values themselves refuse these up front
            record_evidence(name, body)
            (error,) = _node_errors(body, node_id)
            assert error["extra_info"]["input_name"] == field, (name, body)
            continue
        entry = run_workflow(comfyui, {**workflow})
        error = execution_error(entry)
        record_evidence(name, {k: error[k] for k in ("node_id", "node_type", "exception_type", "exception_message")})
        assert error["node_id"] == node_id and message in error["exception_message"], (name, error)
        assert "Traceback" not in error["exception_message"] and "AttributeError" not in error["exception_type"]
    assert json.loads(_get(f"{comfyui.url}/system_stats"))["system"]["comfyui_version"]


# --- memory: ComfyUI's unloading, retrained checkpoints ----------------------------------------------------


def test_comfyuis_unload_releases_ganvas_models(comfyui):
    workflow = {"1": _loader("tiny_extra"), "2": _generate(), "3": _saver()}
    before = len(re.findall(r"loaded model 'tiny_extra'", comfyui.log_text()))
    run_ok(comfyui, workflow)
    mark = len(comfyui.log_text())
    status, _ = _post_json(f"{comfyui.url}/free", {"unload_models": True, "free_memory": True})
    assert status == 200
    released = comfyui.wait_for_log(
        r"ganvas: ComfyUI unloaded its models; ganvas released (\d+) model\(s\): (.*)", after=mark
    )
    assert int(released.group(1)) >= 1 and "tiny_extra (cpu)" in released.group(2)
    run_ok(comfyui, workflow)  # both caches were dropped: the model loads from disk again
    assert len(re.findall(r"loaded model 'tiny_extra'", comfyui.log_text())) == before + 2


def test_a_retrained_checkpoint_reloads_and_replaces_the_older_one(comfyui, tmp_path):
    folder = comfyui.base / "models" / "ganvas" / "fresh"
    workflow = {"1": _loader("fresh"), "2": _generate(seed=4), "3": _saver()}
    first = png(saved_files(comfyui, run_ok(comfyui, workflow), "3")[0])[0]
    mark = len(comfyui.log_text())
    time.sleep(0.01)
    save_tiny_checkpoint(folder, seed=1)  # "retrained" in place
    second = png(saved_files(comfyui, run_ok(comfyui, workflow), "3")[0])[0]
    comfyui.wait_for_log(re.escape(str(folder)) + r" changed on disk; its older version was released", after=mark)
    expected = ganvas_cli(["generate", PROMPT, "--seed", "4", "--model", str(folder)], tmp_path / "cli")
    assert not np.array_equal(first, second) and np.array_equal(second, by_seed(expected, 4)[0])


# --- ComfyUI without ganvas in its Python ----------------------------------------------------------------------


def test_without_ganvas_the_ui_says_how_to_install_it(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comfyui-no-ganvas")
    blocker = tmp / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_GANVAS)
    proc, comfy = _start_comfyui(tmp, block_ganvas=blocker)
    try:
        info = json.loads(_get(f"{comfy.url}/object_info"))
        assert "GanvasGenerate" in info  # the pack still loads
        workflow = {"1": _loader("emoji64"), "2": _generate(), "3": _saver()}
        status, body = queue(comfy, workflow)
        record_evidence("ganvas not installed in ComfyUI's Python", body)
        assert status == 400 and list(body["node_errors"]) == ["1"], body
        (error,) = _node_errors(body, "1")
        python = re.search(r"ComfyUI's Python \((.+?)\)", error["details"]).group(1)
        assert error["extra_info"]["input_name"] == "model_name"
        assert error["details"] == (
            f"model_name - the ganvas Python package is not installed in ComfyUI's Python "
            f"({python}): run `{python} -m pip install {REPO}` and restart ComfyUI "
            f"(ComfyUI's torch is kept; ganvas needs torch>=2.4)"
        )
        done = subprocess.run([python, "-c", "import ganvas"], capture_output=True, env=_comfy_env(blocker))
        assert done.returncode != 0  # the same Python really cannot import ganvas
    finally:
        _stop(proc)
