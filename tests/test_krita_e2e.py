"""End to end in a real Krita under Xvfb: the docker, driven through its widgets, against real servers.

The test makes a throwaway HOME/XDG profile, installs the plugin with the real installer, enables it
(and the test-only driver plugin, tests/krita_autotest/) through kritarc, and starts Krita on a
private Xvfb display. Inside Krita the driver creates a document, presses "Start local server" (a real
`ganvas serve` started by the docker's configured command), generates with a locked seed, inserts
one result as a layer and one into a selection, checks a refused prompt and live mode, saves
screenshots, exports the document to PNG and quits. The test then checks that the docker's server
stopped with Krita and compares the layers' pixels with a second, independent `ganvas serve`.

A Python exception inside Krita fails the test as soon as the driver writes it to its report.
Regenerate docs/krita-docker.png with:
    GANVAS_UPDATE_SCREENSHOT=1 python -m pytest -m slow tests/test_krita_e2e.py
(GANVAS_KRITA_E2E_MODEL=<checkpoint folder> uses a trained model instead of the random tiny one).
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from conftest import save_tiny_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
AUTOTEST = REPO / "tests" / "krita_autotest"
SCREENSHOT = REPO / "docs" / "krita-docker.png"
KRITA = shutil.which("krita")
XVFB = shutil.which("Xvfb")
PROMPT = "a large red circle in the centre"
LIVE_PROMPT = "a small blue square at the top"
SEED = 1234
DOC_SIZE = 256
SELECTION = (150, 140, 80, 60)
KRITA_TIMEOUT_S = 420
LOAD_TIMEOUT_S = 120          # Krita start until the driver plugin has written its first report
# Krita's embedded Python finds its prefix through the first `python3` on PATH: an activated venv there
# makes it load the venv's site-packages (no PyQt5) and fail. Krita gets the system folders only.
KRITA_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

if KRITA is None or XVFB is None:
    pytest.skip("needs Krita and Xvfb (apt-get install -y krita python3-pyqt5 xvfb); "
                f"missing: {', '.join(n for n, p in (('krita', KRITA), ('Xvfb', XVFB)) if p is None)}",
                allow_module_level=True)


def serve_argv() -> list[str]:
    from ganvas.core.plugins import BUILTIN_PLUGINS

    if "serve_command" in BUILTIN_PLUGINS:
        return [sys.executable, "-m", "ganvas.core.cli", "serve"]
    return [sys.executable, "-m", "ganvas.plugins.serve_command"]  # same command, before it is registered


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_xvfb(tmp: Path) -> tuple[subprocess.Popen, str]:
    read, write = os.pipe()
    proc = subprocess.Popen([XVFB, "-displayfd", str(write), "-screen", "0", "1440x960x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=open(tmp / "xvfb.log", "wb"))
    os.close(write)
    with os.fdopen(read) as fh:
        number = fh.readline().strip()
    if not number:
        proc.kill()
        pytest.fail(f"Xvfb did not start: {(tmp / 'xvfb.log').read_text(errors='replace')}")
    return proc, f":{number}"


def make_profile(tmp: Path, model_dir: Path, server_url: str, **config) -> dict:
    """HOME/XDG folders with the plugin installed by the real installer and enabled in kritarc."""
    from ganvas.krita_bridge import install

    home = tmp / "home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GANVAS_", "OPENAI_", "XDG_", "QT_", "PYTHON", "DISPLAY", "WAYLAND"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local" / "share"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_RUNTIME_DIR=str(tmp / "run"),
               GANVAS_MODELS_PATH=str(model_dir.parent), GANVAS_PLUGINS="", OMP_NUM_THREADS="1", GANVAS_THREADS="1")
    for key in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        Path(env[key]).mkdir(parents=True, exist_ok=True, mode=0o700)
    resources = Path(env["XDG_DATA_HOME"]) / "krita"
    install.install(resources)
    shutil.copytree(AUTOTEST / "ganvas_autotest", resources / "pykrita" / "ganvas_autotest")
    shutil.copyfile(AUTOTEST / "ganvas_autotest.desktop", resources / "pykrita" / "ganvas_autotest.desktop")
    kritarc = Path(env["XDG_CONFIG_HOME"]) / "kritarc"
    install.enable(kritarc)
    install.set_kritarc_entries(kritarc, "python", {"enable_ganvas_autotest": "true"})
    command = " ".join([*serve_argv(), "--port", "{port}", "--model", str(model_dir), "--access-log", "off",
                        "--store", str(tmp / "docker-store")])
    out = tmp / "out"
    out.mkdir()
    env["GANVAS_AUTOTEST_CONFIG"] = json.dumps({
        "report": str(tmp / "report.json"), "out_dir": str(out), "server_url": server_url,
        "server_command": command, "prompt": PROMPT, "live_prompt": LIVE_PROMPT, "seed": SEED, "count": 2,
        "doc_size": DOC_SIZE, "selection": SELECTION, **config})
    return env


class Reference:
    """An independent `ganvas serve` (same checkpoint) whose images the layers must equal."""

    def __init__(self, tmp: Path, model_dir: Path, env: dict):
        self.log = tmp / "reference.log"
        self.proc = subprocess.Popen([*serve_argv(), "--port", "0", "--model", str(model_dir), "--access-log", "off",
                                      "--store", str(tmp / "ref-store")],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=env)
        self.url = None

    def wait_ready(self, timeout: float = 180) -> "Reference":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                if "ready at http://" in line:
                    self.url = line.split("ready at ", 1)[1].split()[0].removesuffix("/v1")
                    return self
            if self.proc.poll() is not None:
                pytest.fail(f"reference server exited {self.proc.returncode}: {self.log.read_text(errors='replace')}")
            time.sleep(0.1)
        pytest.fail(f"reference server not ready: {self.log.read_text(errors='replace')}")

    def image(self, seed: int) -> Image.Image:
        body = json.dumps({"prompt": PROMPT, "n": 1, "seed": seed, "response_format": "b64_json"}).encode()
        request = urllib.request.Request(f"{self.url}/v1/images/generations", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            item = json.load(response)["data"][0]
        assert item["seed"] == seed
        return Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).convert("RGB")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def run_krita(tmp: Path, env: dict) -> dict:
    """Run Krita until the driver quits it; fail at once when the report says a step failed."""
    report_path = tmp / "report.json"
    xvfb, display = start_xvfb(tmp)
    env = dict(env, DISPLAY=display, PATH=KRITA_PATH)
    log = tmp / "krita.log"
    # Not start_new_session: Krita in a new session could not connect to Xvfb (checked with Xvfb 21.1.7).
    krita = subprocess.Popen([KRITA, "--nosplash"], env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    report: dict = {}
    try:
        started = time.monotonic()
        deadline = started + KRITA_TIMEOUT_S
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if 'krita.scripting: "Traceback' in text:  # Python failed while Krita loaded it or a plugin
                pytest.fail(f"Python error while Krita started:\n{text[-3000:]}")
            if not report_path.exists() and time.monotonic() - started > LOAD_TIMEOUT_S:
                pytest.fail(f"the driver plugin did not start within {LOAD_TIMEOUT_S} s:\n{text[-3000:]}")
            if report_path.exists():
                report = json.loads(report_path.read_text())
                if report.get("ok") is False:
                    pytest.fail(f"inside Krita: {report.get('error')}\n{report.get('details', '')}\n"
                                f"docker: {report.get('docker')}\nsteps: {[s['step'] for s in report['steps']]}")
            if krita.poll() is not None:
                break
            time.sleep(0.2)
        else:
            steps = [s["step"] for s in report.get("steps", [])]
            pytest.fail(f"Krita still running after {KRITA_TIMEOUT_S} s; steps done: {steps}\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
    finally:
        if krita.poll() is None:
            krita.kill()
            krita.wait(10)
        pid = report.get("local_server_pid")
        if pid and krita.returncode != 0 and not process_gone(pid):
            os.kill(pid, signal.SIGKILL)  # Krita was killed, so the docker could not stop its server
        xvfb.terminate()
        xvfb.wait(10)
    if report_path.exists():
        report = json.loads(report_path.read_text())
    assert report.get("ok") is True, (f"Krita exited {krita.returncode} before the driver finished: {report}\n"
                                      f"{log.read_text(errors='replace')[-3000:]}")
    return report


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.fixture
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("krita-models")
    chosen = os.environ.get("GANVAS_KRITA_E2E_MODEL")
    if chosen:  # a copy: both servers must load the same weights even if a training run rewrites them
        return Path(shutil.copytree(chosen, folder / Path(chosen).resolve().name))
    return save_tiny_checkpoint(folder / "tiny")


def test_docker_in_real_krita(tmp_path, model_dir):
    port = free_port()
    env = make_profile(tmp_path, model_dir, f"http://127.0.0.1:{port}")
    reference = Reference(tmp_path, model_dir, env)  # starts loading while Krita starts
    try:
        report = run_krita(tmp_path, env)

        # The docker's own server was stopped when Krita closed.
        pid = report["local_server_pid"]
        assert pid, report
        deadline = time.monotonic() + 10
        while not (process_gone(pid) and not port_open(port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the docker's local server outlived Krita")
        assert not port_open(port)

        steps = {s["step"]: s for s in report["steps"]}
        assert steps["wait ready"]["docker"]["ganvasStatus"].startswith("ready")
        assert report["dockers"] == 1
        assert report["refused_message"].startswith("invalid: prompt") and "1000" in report["refused_message"]
        assert LIVE_PROMPT in report["live_history"][0] and len(report["live_history"]) == 2, report["live_history"]
        assert report["restored"] == [f"ganvas: {PROMPT} (seed {SEED + i})" for i in range(2)]  # history

        reference.wait_ready()
        first, second = reference.image(SEED), reference.image(SEED + 1)

        # Insert as layer: named after prompt and seed, centred, pixel for pixel the server's image.
        layer = report["layers"]["ganvasInsertLayer"]
        assert layer["name"] == f"ganvas: {PROMPT} (seed {SEED})"
        w, h = first.size
        x, y = (DOC_SIZE - w) // 2, (DOC_SIZE - h) // 2
        assert layer["bounds"] == [x, y, w, h]
        pixels = Image.open(layer["png"])
        assert pixels.convert("RGBA").getextrema()[3] == (255, 255)
        assert pixels.convert("RGB").tobytes() == first.tobytes()
        exported = Image.open(report["export"]).convert("RGB")
        assert exported.size == (DOC_SIZE, DOC_SIZE)
        assert exported.crop((x, y, x + w, y + h)).tobytes() == first.tobytes()

        # Insert into selection: the second result scaled to the selection's bounds.
        sel = report["layers"]["ganvasInsertSelection"]
        assert sel["name"] == f"ganvas: {PROMPT} (seed {SEED + 1})"
        assert sel["bounds"] == list(SELECTION)
        scaled = Image.open(sel["png"])
        assert scaled.convert("RGBA").getextrema()[3] == (255, 255)
        sx, sy, sw, sh = SELECTION
        expected = second.resize((sw, sh), Image.Resampling.BILINEAR)
        diff = ImageStat.Stat(ImageChops.difference(scaled.convert("RGB"), expected)).mean
        other = ImageStat.Stat(ImageChops.difference(scaled.convert("RGB"),
                                                     first.resize((sw, sh), Image.Resampling.BILINEAR))).mean
        assert max(diff) < 8, f"selection layer differs from the scaled image by {diff}"
        assert sum(diff) < sum(other), "the selection layer looks more like the other seed's image"
        assert exported.crop((sx, sy, sx + sw, sy + sh)).tobytes() == scaled.convert("RGB").tobytes()

        if os.environ.get("GANVAS_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(tmp_path / "out" / "window.png", SCREENSHOT)
    finally:
        reference.close()


@pytest.mark.parametrize("inject, words", [("slot", "ZeroDivisionError"), ("docker", "AttributeError")])
def test_python_error_inside_krita_fails_fast(tmp_path, model_dir, inject, words):
    """The driver's error reporting itself: a deliberate bug ends the run long before any timeout."""
    env = make_profile(tmp_path, model_dir, f"http://127.0.0.1:{free_port()}", inject=inject)
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as failed:
        run_krita(tmp_path, env)
    assert words in str(failed.value) and "inside Krita" in str(failed.value)
    assert time.monotonic() - started < LOAD_TIMEOUT_S
