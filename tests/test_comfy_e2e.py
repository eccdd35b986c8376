"""End to end: a real ComfyUI with the pack in custom_nodes, driven over HTTP like any client.

Needs a ComfyUI checkout (ComfyUI is not on PyPI), so it is skipped unless configured:

    GANVAS_COMFYUI_DIR=~/ComfyUI GANVAS_COMFYUI_PYTHON=~/ComfyUI/.venv/bin/python \\
        python -m pytest -m slow tests/test_comfy_e2e.py

GANVAS_COMFYUI_PYTHON (default: this Python) must have ComfyUI's requirements and ganvas installed.
ComfyUI runs with --cpu on 127.0.0.1 and a free port, its base directory in a temporary folder
(custom_nodes/ganvas linked by `ganvas comfy install`, models/ganvas with a checkpoint) and an
extra_model_paths.yaml with a second `ganvas` folder. Each PNG that SaveImage writes must equal, pixel
for pixel, what `ganvas generate` / `ganvas interpolate` write with the same Python, model and seed.
"""
from __future__ import annotations

import io
import json
import os
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
from PIL import Image

from comfy_helpers import COMFYUI_DIR, COMFYUI_PYTHON, NO_CHECKOUT, load_workflow
from conftest import save_tiny_checkpoint
from ganvas.plugins.comfy_command import install

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not COMFYUI_DIR, reason=NO_CHECKOUT),
    pytest.mark.skipif(bool(COMFYUI_DIR) and not Path(COMFYUI_DIR or ".", "main.py").is_file(),
                       reason=f"GANVAS_COMFYUI_DIR={COMFYUI_DIR} has no main.py: not a ComfyUI checkout"),
]

PYTHON = COMFYUI_PYTHON or sys.executable
START_TIMEOUT = 240
RUN_TIMEOUT = 180
PROMPT = "a small red circle on the left"


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
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANVAS_")}
    env.update(OMP_NUM_THREADS="1", GANVAS_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    """A running ComfyUI: (base url, base directory, log file)."""
    tmp = tmp_path_factory.mktemp("comfyui")
    base = tmp / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "models").mkdir()
    installed = install(base)  # the real command's code: a link to comfy_nodes/
    assert installed.target.is_symlink() and installed.models_dir == base / "models" / "ganvas"
    save_tiny_checkpoint(installed.models_dir / "tiny")
    extra = tmp / "extra-models"
    save_tiny_checkpoint(extra / "tiny_extra", seed=1)
    config = tmp / "extra_model_paths.yaml"
    config.write_text(f"ganvas_test:\n  ganvas: {extra}\n")
    port = _free_port()
    log = tmp / "comfyui.log"
    cmd = [PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
           "--extra-model-paths-config", str(config), "--database-url", "sqlite:///:memory:"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=COMFYUI_DIR, stdout=out, stderr=subprocess.STDOUT, env=_clean_env())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode} while starting:\n{log.read_text()[-4000:]}")
            try:
                _get(f"{url}/system_stats", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT} s:\n{log.read_text()[-4000:]}")
                time.sleep(0.5)
        yield url, base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def run_workflow(url: str, workflow: dict) -> dict:
    """POST /prompt, poll /history until done; the history entry (fails with ComfyUI's error)."""
    status, queued = _post_json(f"{url}/prompt", {"prompt": workflow, "client_id": uuid.uuid4().hex})
    assert status == 200, f"/prompt refused the workflow: {json.dumps(queued)[:2000]}"
    prompt_id = queued["prompt_id"]
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        history = json.loads(_get(f"{url}/history/{prompt_id}"))
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            entry = history[prompt_id]
            if entry["status"]["status_str"] == "success":
                return entry
            return entry  # the caller checks errors
        time.sleep(0.3)
    pytest.fail(f"prompt {prompt_id} did not finish within {RUN_TIMEOUT} s")


def fetch_images(url: str, entry: dict, node_id: str) -> list[np.ndarray]:
    """The PNGs a SaveImage node wrote, fetched through /view, as RGB arrays."""
    arrays = []
    for image in entry["outputs"][node_id]["images"]:
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        with Image.open(io.BytesIO(_get(f"{url}/view?{query}"))) as png:
            assert png.format == "PNG"
            arrays.append(np.asarray(png.convert("RGB")))
    return arrays


def ganvas_cli(args: list[str], out: Path) -> dict[str, np.ndarray]:
    """Run the ganvas command line with ComfyUI's Python; {file name: pixels}."""
    done = subprocess.run([PYTHON, "-m", "ganvas.core.cli", *args, "--out", str(out)], capture_output=True,
                          text=True, env=_clean_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    return {p.name: np.asarray(Image.open(p).convert("RGB")) for p in sorted(out.glob("*.png"))}


def test_the_pack_loads_and_lists_both_model_folders(comfyui):
    url, _, log = comfyui
    info = json.loads(_get(f"{url}/object_info"))
    assert {"GanvasModelLoader", "GanvasGenerate", "GanvasInterpolate", "GanvasEncodePrompt",
            "GanvasMixPrompts"} <= set(info)
    options = info["GanvasModelLoader"]["input"]["required"]["model_name"][1]["options"]
    assert {"tiny", "tiny_extra"} <= set(options)  # models/ganvas and extra_model_paths.yaml
    lines = [line for line in log.read_text().splitlines() if line.rstrip().endswith(os.sep + "ganvas")
             and "seconds" in line]
    assert lines and "IMPORT FAILED" not in lines[0], log.read_text()[-3000:]


def test_generate_workflow_png_equals_ganvas_generate(comfyui, tmp_path):
    url, base, _ = comfyui
    workflow = load_workflow("ganvas_generate_api.json")
    workflow["1"]["inputs"]["model_name"] = "tiny"
    node = workflow["2"]["inputs"]
    entry = run_workflow(url, workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    served = fetch_images(url, entry, "3")
    assert len(served) == node["batch_size"]
    expected = ganvas_cli(["generate", node["prompt"], "-n", str(node["batch_size"]), "--seed", str(node["seed"]),
                           "--truncation", str(node["truncation"]), "--model", str(base / "models" / "ganvas" / "tiny")],
                          tmp_path)
    for i, pixels in enumerate(served):
        name = next(n for n in expected if n.endswith(f"-seed{node['seed'] + i}.png"))
        assert pixels.shape == expected[name].shape == (32, 32, 3)
        assert np.array_equal(pixels, expected[name]), f"image {i} (seed {node['seed'] + i}) differs from {name}"


def test_mix_and_interpolate_workflow_equal_ganvas_interpolate(comfyui, tmp_path):
    url, base, _ = comfyui
    workflow = load_workflow("ganvas_mix_interpolate_api.json")
    workflow["1"]["inputs"]["model_name"] = "tiny"
    entry = run_workflow(url, workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    model = str(base / "models" / "ganvas" / "tiny")
    a, b = workflow["2"]["inputs"]["text"], workflow["3"]["inputs"]["text"]

    interp = workflow["7"]["inputs"]
    frames = fetch_images(url, entry, "8")
    expected = ganvas_cli(["interpolate", interp["prompt_from"], interp["prompt_to"], "--seeds",
                           f"{interp['seed_from']},{interp['seed_to']}", "--steps", str(interp["frames"] - 1),
                           "--model", model], tmp_path / "interp")
    assert [f.tobytes() for f in frames] == [expected[n].tobytes() for n in sorted(expected)]

    assert workflow["4"]["inputs"]["weight"] == 0.5  # = frame 1 of 2 steps
    mixed = fetch_images(url, entry, "6")
    seed = workflow["5"]["inputs"]["seed"]
    for i, pixels in enumerate(mixed):
        frames_i = ganvas_cli(["interpolate", a, b, "--seed", str(seed + i), "--steps", "2", "--model", model],
                              tmp_path / f"mix{i}")
        frame1 = next(v for n, v in frames_i.items() if n.endswith("frame001.png"))
        assert np.array_equal(pixels, frame1), f"mixed image {i} differs"


def test_bad_input_fails_the_node_with_ganvas_message_and_the_server_goes_on(comfyui):
    url, _, _ = comfyui
    workflow = load_workflow("ganvas_generate_api.json")
    workflow["1"]["inputs"]["model_name"] = "tiny"
    workflow["2"]["inputs"]["prompt"] = "   "
    entry = run_workflow(url, workflow)
    assert entry["status"]["status_str"] == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_type"] == "GanvasGenerate" and "prompt is empty" in errors[0]["exception_message"]
    status, body = _post_json(f"{url}/prompt", {"prompt": {**workflow, "1": {
        "class_type": "GanvasModelLoader", "inputs": {"model_name": "no-such-model", "device": "cpu"}}}})
    assert status == 400, body
    details = json.dumps(body["node_errors"]["1"])
    assert "ganvas model 'no-such-model' not found" in details and "tiny_extra" in details
    assert json.loads(_get(f"{url}/system_stats"))["system"]["comfyui_version"]
