"""The Krita plugin outside Krita: its HTTP client against a real `ganvas serve`, its pure logic, the
installer and `ganvas krita install`, and (with a Python that has PyQt5) the docker's panel driven
offscreen against the same server. The real Krita run is tests/krita_bridge/test_krita_e2e.py (slow)."""

from __future__ import annotations

import ast
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import save_tiny_checkpoint
from PIL import Image

from ganvas.core.errors import RequestRefused
from ganvas.core.hookspecs import hookimpl
from ganvas.core.plugin_manager import GanvasPlugins
from ganvas.core.requests import MAX_SEED
from ganvas.krita_bridge import ENABLE_KEY, PLUGIN_MODULE, desktop_file, install, plugin_dir
from ganvas.krita_bridge.ganvas_krita import client as kc
from ganvas.krita_bridge.ganvas_krita import local_server, session
from ganvas.krita_bridge.ganvas_krita.settings import DEFAULTS, Settings

REPO = Path(__file__).resolve().parents[2]
KEY = "krita-test-key"


# --- a real server (in this process, on a loopback port) ------------------------------------------------------


class TinyModels:
    def __init__(self, folder: Path, rgba: Path):
        self.folder, self.rgba = folder, rgba

    @hookimpl
    def ganvas_register_models(self, register):
        register("tiny", str(self.folder))
        register(RGBA_MODEL, str(self.rgba))


RGBA_MODEL = "tiny-rgba"


def save_rgba_checkpoint(folder: Path) -> Path:
    """A 32 px model with an alpha channel (the server answers RGBA PNGs, straight alpha)."""
    from ganvas.core.io import checkpoint
    from ganvas.core.model.config import ModelConfig
    from ganvas.core.model.networks import Generator

    checkpoint.save_model(
        folder, Generator(ModelConfig(resolution=32, channels=4, g_channels=8, d_channels=8, cond_dim=64)).eval(), {}
    )
    return folder


class Refuser:
    @hookimpl
    def ganvas_check_request(self, request):
        if "forbidden" in request.prompt:
            raise RequestRefused("no forbidden things here", param="prompt")


STYLES = ["noto", "twemoji"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from ganvas.core.hosts.server import ServerConfig
    from ganvas.core.hosts.server.background import BackgroundServer

    plugins = GanvasPlugins(entry_points=False, env={})
    models = tmp_path_factory.mktemp("krita-models")
    model = save_tiny_checkpoint(models / "tiny", styles=STYLES)
    plugins.register(TinyModels(model, save_rgba_checkpoint(models / RGBA_MODEL)), "test-models")
    plugins.register(Refuser(), "test-refuser")
    config = ServerConfig(
        port=0,
        api_key=KEY,
        model="tiny",
        workers=2,
        max_queue=8,
        access_log=None,
        store_dir=tmp_path_factory.mktemp("krita-store"),
    )
    with BackgroundServer(config, plugins) as srv:
        yield srv


@pytest.fixture
def api(server):
    return kc.GanvasClient(server.url + "/v1/", api_key=KEY, timeout=60)


def pixels(png: bytes) -> bytes:
    return Image.open(io.BytesIO(png)).convert("RGB").tobytes()


class SilentServer:
    """A real listening socket that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- client against the real server ---------------------------------------------------------------------------


def test_probe_reads_health_and_models(api):
    info = kc.probe(api)
    assert info.status == "ok" and info.model == "tiny"
    # "sizes": native, then the shipped upsampler's sides (x4: 64 and 128 px); native only without one
    from ganvas.plugins.default_backend import upsampler_folders

    sizes = [32, 64, 128] if upsampler_folders() else [32]
    assert {"id": "tiny", "resolution": 32, "styles": STYLES, "sizes": sizes} in info.models


def test_generate_returns_pngs_with_per_image_seeds(api):
    images, elapsed = api.generate(kc.GenerateParams("a red circle", n=3, seed=11, truncation=0.7))
    assert [im.seed for im in images] == [11, 12, 13]
    assert all(im.png.startswith(kc.PNG_SIGNATURE) for im in images) and elapsed > 0
    assert Image.open(io.BytesIO(images[0].png)).size == (32, 32)
    # The seed contract the layer names rely on: seed 12 alone is the second image of the batch.
    alone, _ = api.generate(kc.GenerateParams("a red circle", n=1, seed=12, truncation=0.7))
    assert pixels(alone[0].png) == pixels(images[1].png)
    assert pixels(images[0].png) != pixels(images[1].png)


def test_generate_size_and_style(api):
    # below the native 32 px: a plain resize on every server version (above it needs an upsampler)
    images, _ = api.generate(kc.GenerateParams("a blue star", seed=3, size=16, style="flat"))
    assert Image.open(io.BytesIO(images[0].png)).size == (16, 16)
    assert images[0].style == "flat"


def test_server_refusal_and_invalid_field_are_named(api):
    with pytest.raises(kc.ClientError) as refused:
        api.generate(kc.GenerateParams("something forbidden", seed=1))
    assert refused.value.kind == "refused" and refused.value.status == 400
    assert "no forbidden things" in refused.value.message
    with pytest.raises(kc.ClientError) as invalid:
        api.generate(kc.GenerateParams("x" * 5000, seed=1))
    assert invalid.value.kind == "invalid" and invalid.value.param == "prompt"
    with pytest.raises(kc.ClientError) as missing:
        api.generate(kc.GenerateParams("a red circle", model="no-such-model"))
    assert missing.value.kind == "not_found" and "no-such-model" in missing.value.message


def test_wrong_key_is_auth_but_health_still_answers(server):
    wrong = kc.GanvasClient(server.url, api_key="wrong")
    assert wrong.health()["status"] == "ok"
    with pytest.raises(kc.ClientError) as exc:
        wrong.models()
    assert exc.value.kind == "auth" and exc.value.status == 401


def test_server_down_is_offline_fast():
    started = time.monotonic()
    with pytest.raises(kc.ClientError) as exc:
        kc.GanvasClient(f"127.0.0.1:{closed_port()}").health()
    assert exc.value.kind == "offline" and "connection refused" in exc.value.message
    assert time.monotonic() - started < 2


def test_silent_server_times_out():
    silent = SilentServer()
    try:
        with pytest.raises(kc.ClientError) as exc:
            kc.GanvasClient(silent.url, timeout=0.3).generate(kc.GenerateParams("a red circle"))
        assert exc.value.kind == "timeout" and "0.3 s" in exc.value.message
    finally:
        silent.close()


def test_cancel_wakes_a_blocked_call():
    silent = SilentServer()
    call, outcome = kc.Call(), {}

    def run():
        try:
            kc.GanvasClient(silent.url, timeout=30).generate(kc.GenerateParams("a red circle"), call=call)
        except kc.ClientError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    try:
        worker.start()
        time.sleep(0.3)
        started = time.monotonic()
        call.cancel()
        worker.join(5)
        assert not worker.is_alive() and time.monotonic() - started < 2
        assert outcome["error"].kind == "cancelled"
    finally:
        silent.close()


def test_not_a_ganvas_server_is_a_bad_response(tmp_path):
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    (tmp_path / "health").write_text("<html>hello</html>")
    httpd = HTTPServer(("127.0.0.1", 0), lambda *a: SimpleHTTPRequestHandler(*a, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(kc.ClientError) as exc:
            kc.GanvasClient(f"http://127.0.0.1:{httpd.server_port}").health()
        assert exc.value.kind == "bad_response" and "not JSON" in exc.value.message
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- client logic without a server ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://localhost:8000/v1/", "http://localhost:8000"),
        ("https://gpu.example/ganvas/v1", "https://gpu.example/ganvas"),
        (" http://[::1]:9000 ", "http://[::1]:9000"),
    ],
)
def test_normalize_url(given, expected):
    assert kc.normalize_url(given) == expected


@pytest.mark.parametrize(
    "bad, words",
    [("", "empty"), ("ftp://host", "http://"), ("http://:80", "no host"), ("http://host:99999", "bad port")],
)
def test_bad_urls_are_named(bad, words):
    with pytest.raises(kc.ClientError) as exc:
        kc.normalize_url(bad)
    assert words in exc.value.message and exc.value.param == "url"


def test_error_mapping_from_status_and_body():
    body = json.dumps(
        {"error": {"message": "busy", "type": "rate_limit_error", "param": None, "code": "queue_full"}}
    ).encode()
    busy = kc.error_from_response(429, body, {"retry-after": "3", "retry-after-ms": "2500"})
    assert busy.kind == "busy" and busy.retry_after == 2.5 and busy.code == "queue_full"
    assert kc.error_from_response(502, b"<html>Bad Gateway</html>").message == "HTTP 502: <html>Bad Gateway</html>"
    assert kc.error_from_response(503, b"{}").kind == "busy"
    assert kc.error_from_response(500, b"").kind == "server"


def test_params_are_checked_before_the_round_trip():
    for params, param in [
        (kc.GenerateParams("  "), "prompt"),
        (kc.GenerateParams("x", n=11), "n"),
        (kc.GenerateParams("x", n=2, seed=MAX_SEED), "seed"),
        (kc.GenerateParams("x", truncation=0), "truncation"),
    ]:
        with pytest.raises(kc.ClientError) as exc:
            params.check()
        assert exc.value.param == param
    assert kc.MAX_SEED == MAX_SEED  # the plugin cannot import ganvas.core, so it keeps its own copy
    assert kc.GenerateParams("x", seed=0).body() == {
        "prompt": "x",
        "n": 1,
        "response_format": "b64_json",
        "seed": 0,
        "size": "auto",
    }


def test_bad_images_in_an_answer_are_named():
    params = kc.GenerateParams("x", seed=5)
    with pytest.raises(kc.ClientError, match="no data"):
        kc.parse_images({"created": 1}, params)
    with pytest.raises(kc.ClientError, match="not a PNG"):
        kc.parse_images({"data": [{"b64_json": "aGVsbG8="}]}, params)
    # a plain OpenAI-compatible server sends no seeds: ganvas's seed + i rule fills them in
    png = "iVBORw0KGgo="
    assert [im.seed for im in kc.parse_images({"data": [{"b64_json": png}] * 2}, params)] == [5, 6]


def test_session_seeds_names_and_history():
    assert session.parse_seed(" 42 ", 3) == 42
    for text in ("", "-1", "1.5", str(MAX_SEED)):
        with pytest.raises(kc.ClientError):
            session.parse_seed(text, 2)
    assert 0 <= session.random_seed() <= session.SEED_DRAW_LIMIT
    assert session.layer_name("a  red\ncircle", 7) == "ganvas: a red circle (seed 7)"
    long = session.layer_name("word " * 40, 1)
    assert long.endswith("\u2026 (seed 1)") and len(long) < 90
    image = lambda s: kc.GeneratedImage(b"", s, "p")  # noqa: E731
    assert session.seeds_label([image(3), image(4), image(5)]) == "seeds 3\u20135"
    history = session.History(limit=3)
    params = kc.GenerateParams("p")
    for live in (False, True, True, True):
        history.add(session.Batch(params, [image(1)], 0.01, live=live))
    assert len(history) == 2 and history[-1].live  # live previews replace each other
    for _ in range(3):
        history.add(session.Batch(params, [image(1)], 0.01))
    assert len(history) == 3 and "1 image in 10 ms" in history[0].summary()


def test_settings_parse_and_fall_back():
    settings = Settings.memory({"count": "zero", "truncation": "nan", "live": "True", "size": "4096"})
    assert settings.integer("count", 1, 10) == int(DEFAULTS["count"])
    assert settings.number("truncation", 0.01, 1) == 1.0
    assert settings.flag("live") is True
    assert settings.integer("size", 0, 1024) == 1024
    settings.set("seed_locked", True)
    assert settings.store["seed_locked"] == "true"
    with pytest.raises(KeyError, match="unknown ganvas setting"):
        settings.set("colour", "red")


def test_local_server_command_and_refusals(tmp_path):
    assert local_server.command_args("/opt/my venv/bin/ganvas serve --port {port}", "http://127.0.0.1:8123") == [
        "/opt/my",
        "venv/bin/ganvas",
        "serve",
        "--port",
        "8123",
    ]
    assert local_server.command_args("'/opt/my venv/python' -m x --host {host}", "localhost:9") == [
        "/opt/my venv/python",
        "-m",
        "x",
        "--host",
        "localhost",
    ]
    for template, words in [
        ("", "no server command"),
        ("ganvas serve --port {prot}", "unknown placeholder"),
        ("ganvas 'serve", "cannot parse"),
    ]:
        with pytest.raises(kc.ClientError, match=words):
            local_server.command_args(template, "http://127.0.0.1:8000")
    server = local_server.LocalServer()
    with pytest.raises(kc.ClientError, match="not this computer"):
        server.start("ganvas serve", "http://gpu.example:8000")
    with pytest.raises(kc.ClientError, match="cannot find the program") as missing:
        server.start(str(tmp_path / "no-such-ganvas") + " serve --port {port}", "http://127.0.0.1:8000")
    assert missing.value.kind == "setup" and "ganvas krita install" in missing.value.message
    assert not server.running


def test_local_server_starts_and_stops_a_real_process(tmp_path):
    server = local_server.LocalServer()
    script = "import sys, time; print('up', sys.argv[1], flush=True); time.sleep(60)"
    args = server.start(f"{sys.executable} -c \"{script}\" {{port}}", "http://127.0.0.1:8765")
    assert args[-1] == "8765" and server.running
    deadline = time.monotonic() + 10
    while "up 8765" not in server.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.log_tail() == "up 8765"
    pid = server.process.pid
    assert server.stop(timeout=5) is not None and not server.running
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]


# --- the plugin stays stdlib + PyQt, and importable without Krita --------------------------------------------


def test_plugin_imports_only_stdlib_pyqt_and_krita():
    allowed = set(sys.stdlib_module_names) | {"PyQt5", "PyQt6", "krita"}
    for path in sorted(plugin_dir().glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            bad = [n for n in names if n.split(".")[0] not in allowed]
            assert not bad, f"{path.name} imports {bad}: Krita's Python has only the stdlib and PyQt"


def test_bridge_imports_without_krita_or_torch():
    code = (
        "import sys, ganvas.krita_bridge, ganvas.krita_bridge.install, ganvas.krita_bridge.ganvas_krita as p;"
        "import ganvas.krita_bridge.ganvas_krita.client, ganvas.krita_bridge.ganvas_krita.session;"
        "assert 'torch' not in sys.modules and 'krita' not in sys.modules, sorted(sys.modules);"
        "print(p.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.2.0"


# --- installer and `ganvas krita install` -------------------------------------------------------------------


def installed_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_install_copies_plugin_and_replaces_an_old_copy(tmp_path):
    resources = tmp_path / "krita"
    stale = resources / "pykrita" / PLUGIN_MODULE / "old_module.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# from an older version")
    (resources / "pykrita" / "other_plugin.desktop").write_text("kept")
    target = install.install(resources)
    files = installed_files(target)
    assert {"__init__.py", "panel.py", "client.py", "qt.py", "manual.html"} <= files
    assert "old_module.py" not in files and not any("__pycache__" in f for f in files)
    # the command "Start local server" runs when the user typed none: this Python, by its full path
    recorded = json.loads((target / "installed.json").read_text())
    assert recorded["server_command"] == install.local_server_command() and sys.executable in recorded["server_command"]
    assert (resources / "pykrita" / f"{PLUGIN_MODULE}.desktop").read_text() == desktop_file().read_text()
    assert (resources / "pykrita" / "other_plugin.desktop").read_text() == "kept"
    assert sorted(p.name for p in (resources / "pykrita").iterdir()) == [
        PLUGIN_MODULE,
        f"{PLUGIN_MODULE}.desktop",
        "other_plugin.desktop",
    ]  # no staging leftovers


def test_desktop_file_matches_what_krita_reads():
    entries = dict(line.split("=", 1) for line in desktop_file().read_text().splitlines() if "=" in line)
    assert entries["ServiceTypes"] == "Krita/PythonPlugin"
    assert entries["X-KDE-Library"] == PLUGIN_MODULE and ENABLE_KEY == f"enable_{PLUGIN_MODULE}"
    assert (plugin_dir() / entries["X-Krita-Manual"]).is_file()


KRITA_IMPORTER = Path("/usr/share/krita/pykrita/plugin_importer/plugin_importer.py")


def test_zip_has_desktop_file_and_folder_at_the_root(tmp_path):
    out = install.build_zip(tmp_path / "sub" / "ganvas_krita.zip")
    names = zipfile.ZipFile(out).namelist()
    assert f"{PLUGIN_MODULE}.desktop" in names and f"{PLUGIN_MODULE}/__init__.py" in names
    assert f"{PLUGIN_MODULE}/" in names  # Krita's importer looks for the folder's own entry
    assert all(n == f"{PLUGIN_MODULE}.desktop" or n.startswith(f"{PLUGIN_MODULE}/") for n in names)
    assert not any(n.endswith(".pyc") for n in names)


@pytest.mark.skipif(
    not KRITA_IMPORTER.exists(), reason="Krita's plugin_importer.py is not installed (apt-get install krita)"
)
def test_krita_own_importer_accepts_the_zip(tmp_path):
    """The code behind Tools > Scripts > Import Python Plugin from File, run on our zip."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("krita_plugin_importer", KRITA_IMPORTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.i18n = str  # Krita provides i18n as a builtin
    (tmp_path / "res").mkdir()  # Krita's resources folder always exists
    importer = module.PluginImporter(
        str(install.build_zip(tmp_path / "p.zip")), str(tmp_path / "res"), lambda plugin: True
    )
    imported = importer.import_all()
    assert [p["name"] for p in imported] == [PLUGIN_MODULE]
    assert installed_files(tmp_path / "res" / "pykrita" / PLUGIN_MODULE) == installed_files(plugin_dir()) - {
        f for f in installed_files(plugin_dir()) if "__pycache__" in f
    } | {"installed.json"}
    assert (tmp_path / "res" / "pykrita" / f"{PLUGIN_MODULE}.desktop").is_file()


def test_kritarc_edit_keeps_everything_else(tmp_path):
    kritarc = tmp_path / "kritarc"
    kritarc.write_text(
        "ResourceDirectory=/custom/res\n\n[python]\nenable_scripter=true\nenable_ganvas_krita=false\n\n"
        "[MainWindow]\nState=AAAA==\n"
    )
    install.enable(kritarc, "/venv/bin/python -m ganvas.core.hosts.cli.main serve --port {port}")
    text = kritarc.read_text()
    assert "[python]\nenable_scripter=true\nenable_ganvas_krita=true\n\n[MainWindow]\nState=AAAA==" in text
    assert text.count("enable_ganvas_krita") == 1
    assert install.read_kritarc_entry(kritarc, "ganvas", "server_command").endswith("serve --port {port}")
    assert install.read_kritarc_entry(kritarc, "", "ResourceDirectory") == "/custom/res"
    assert install.default_resources_dir("linux", {}, kritarc) == Path("/custom/res")
    fresh = tmp_path / "new" / "kritarc"
    install.enable(fresh)
    assert fresh.read_text() == "[python]\nenable_ganvas_krita=true\n"


def test_default_locations_follow_the_platform(tmp_path):
    none = tmp_path / "absent-kritarc"
    assert install.default_resources_dir("linux", {"XDG_DATA_HOME": "/x/data"}, none) == Path("/x/data/krita")
    assert install.default_resources_dir("win32", {"APPDATA": "C:/Users/a/AppData/Roaming"}, none) == Path(
        "C:/Users/a/AppData/Roaming/krita"
    )
    assert install.default_resources_dir("darwin", {}, none).parts[-3:] == ("Library", "Application Support", "krita")
    assert install.default_kritarc("linux", {"XDG_CONFIG_HOME": "/x/cfg"}) == Path("/x/cfg/kritarc")


def krita_cli() -> click.Group:
    from ganvas.plugins import commands

    @click.group()
    def cli():
        pass

    manager = GanvasPlugins(builtins=False, entry_points=False, env={})
    manager.register(commands, "commands")  # the built-in that adds `ganvas krita` (krita_bridge/command.py)
    manager.register_commands(cli)
    return cli


def test_krita_install_command(tmp_path):
    cli = krita_cli()
    kritarc = tmp_path / "cfg" / "kritarc"
    result = CliRunner().invoke(
        cli, ["krita", "install", "--resources", str(tmp_path / "res"), "--enable", "--kritarc", str(kritarc)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "res" / "pykrita" / PLUGIN_MODULE / "panel.py").is_file()
    assert "enabled it in" in result.output and "Settings > Dockers > ganvas" in result.output
    assert install.read_kritarc_entry(kritarc, "python", ENABLE_KEY) == "true"
    assert f"'Start local server' in the docker runs: {install.local_server_command()}" in result.output

    result = CliRunner().invoke(cli, ["krita", "install", "--zip", str(tmp_path / "p.zip")])
    assert result.exit_code == 0 and "Import Python Plugin from File" in result.output
    assert zipfile.is_zipfile(tmp_path / "p.zip")
    recorded = json.loads(zipfile.ZipFile(tmp_path / "p.zip").read(f"{PLUGIN_MODULE}/installed.json"))
    assert recorded["server_command"] == install.local_server_command()

    # Without --enable (Krita's Plugin Manager switches it on): the command is recorded all the same.
    result = CliRunner().invoke(cli, ["krita", "install", "--resources", str(tmp_path / "res2")])
    assert result.exit_code == 0 and "Python Plugin Manager" in result.output
    recorded = json.loads((tmp_path / "res2" / "pykrita" / PLUGIN_MODULE / "installed.json").read_text())
    assert recorded["server_command"] == install.local_server_command()


def test_krita_install_warns_when_a_venv_is_first_on_path(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "bin" / "python3").symlink_to(sys.executable)
    cli = krita_cli()
    args = ["krita", "install", "--resources", str(tmp_path / "res")]
    activated = CliRunner().invoke(cli, args, env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"})
    assert activated.exit_code == 0, activated.output
    assert f"virtualenv {venv} first on PATH" in activated.output and "lack PyQt5" in activated.output
    plain = CliRunner().invoke(cli, args, env={"PATH": "/usr/bin:/bin"})
    assert plain.exit_code == 0 and "Warning" not in plain.output
    assert install.venv_first_on_path({"PATH": f"/usr/bin:{venv / 'bin'}"}) is None  # later on PATH: harmless


def test_server_command_setting_prefers_the_users_then_the_recorded_one(tmp_path, monkeypatch):
    from ganvas.krita_bridge.ganvas_krita import settings as ks

    recorded = tmp_path / "installed.json"
    monkeypatch.setattr(ks, "INSTALLED_FILE", recorded)
    assert Settings.memory().server_command() == ks.FALLBACK_SERVER_COMMAND  # nothing recorded
    recorded.write_text(json.dumps({"server_command": "/venv/bin/python -m ganvas serve --port {port}"}))
    assert Settings.memory().server_command().startswith("/venv/bin/python")
    # what older versions stored without asking (the fallback, or an older install's command) gives way
    # (before 0.2 installers recorded `-m ganvas.core.cli`, the CLI's old module)
    for stale in (
        ks.FALLBACK_SERVER_COMMAND,
        "/old/bin/python -m ganvas serve --port {port}",
        "/old/bin/python -m ganvas.core.cli serve --port {port}",
        "",
    ):
        assert Settings.memory({"server_command": stale}).server_command().startswith("/venv/bin/python")
    mine = "/opt/ganvas/bin/ganvas serve --port {port} --model emoji64"
    assert Settings.memory({"server_command": mine}).server_command() == mine
    recorded.write_text("{not json")
    assert Settings.memory().server_command() == ks.FALLBACK_SERVER_COMMAND


def test_krita_install_into_an_unwritable_place_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(krita_cli(), ["krita", "install", "--resources", str(blocker / "krita")])
    assert result.exit_code == 1 and "cannot install into" in result.output and "Traceback" not in result.output


# --- the panel, offscreen, against the real server ------------------------------------------------------------


def python_with_pyqt5() -> str | None:
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and Path(candidate).exists():
            ok = subprocess.run([candidate, "-c", "import PyQt5.QtWidgets"], capture_output=True, timeout=60)
            if ok.returncode == 0:
                return candidate
    return None


def test_panel_offscreen_against_the_real_server(server):
    python = python_with_pyqt5()
    if python is None:
        pytest.skip("no Python with PyQt5 (apt-get install python3-pyqt5, which Krita uses too)")
    out = subprocess.run(
        [
            python,
            str(REPO / "tests" / "krita_bridge" / "krita_panel_driver.py"),
            str(plugin_dir().parent),
            server.url,
            KEY,
            RGBA_MODEL,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == [] and report["missing_names"] == []
    for step in (
        "connect",
        "generate",
        "insert_rendered",
        "typed_seed",
        "unlocked",
        "refused",
        "empty",
        "live",
        "live_second",
        "cancel",
        "offline",
    ):
        assert report[step]["ok"], (step, report[step])
    assert report["connect"]["status"].startswith("ready") and "tiny" in report["models"]
    assert report["start_visible_when_ready"] is False  # Start local server shows only when it can help
    assert report["style_choices"] == ["", *STYLES]  # the model's style words, from GET /v1/models
    assert report["seeds"] == [41, 42, 43] and report["generate"]["message"].startswith("3 images in")
    assert report["pending_after_click"] is True  # Generate only queues the call; Krita's UI never waits

    # Insertion: prepared and finished on the UI thread, rendered off it, with the Fit and Scaling chosen.
    assert report["insert_pending_after_click"] is True
    assert report["host_calls"] == [
        ["canvas", "ganvas: a red circle (seed 43)", [0, 0, 100, 60], "fill", "pixel", True]
    ]
    assert report["prepared_on_ui"] == [True, True]
    assert report["inserted_png"] == report["pngs"][2]
    assert "nothing is selected" in report["insert"]["message"]
    assert report["settings"]["fit"] == "fill" and report["settings"]["scaling"] == "pixel"

    # A typed seed is used although unlocked (reproducing a layer's "seed N"); then a new one is drawn.
    assert report["typed_seeds"] == [7, 8, 9]
    assert report["seed_after_unlocked"] != "7" and "next seed" in report["typed_seed_message"]
    assert report["unlocked_seeds"][0] == int(report["seed_after_unlocked"])

    assert "no forbidden things" in report["refused"]["message"]
    assert report["empty"]["message"] == "invalid prompt: the prompt is empty"
    assert report["live_batches"] == 1 and report["live_prompt"] == "a blue star"
    live = [label for label in report["live_history"] if label.endswith("live")]
    assert len(live) == 2 and "a green moon" in live[0] and "a blue star" in live[1], report["live_history"]
    assert report["cancel_kept_results"] is True

    # Offline: said in the status, under Generate (unprompted) and in Generate's tooltip; Start is offered.
    assert report["offline"]["status"].startswith("offline") and "connection refused" in report["offline"]["status"]
    assert report["generate_enabled_offline"] is False
    assert report["offline_message_unprompted"].startswith("Generate needs a server: press Start local server")
    assert (
        "not connected" in report["offline_generate_tooltip"]
        and "Start local server" in report["offline_generate_tooltip"]
    )
    assert report["start_visible_offline"] is True
    assert report["offline_generate_message"].startswith("Generate needs a server")
    assert report["settings"]["server_url"] == "http://127.0.0.1:9" and report["settings"]["count"] == "3"
    assert report["settings"]["live"] == "false" and report["settings"]["seed_locked"] == "false"
    assert "server_command" not in report["settings"]  # never stored unless the user types one

    # A command Krita cannot find: plain words and the fix, not the internal setting's name.
    assert "cannot find the program" in report["not_found_message"]
    assert "ganvas krita install" in report["not_found_message"] and "Server > Command" in report["not_found_message"]
    assert "server_command" not in report["not_found_message"] and report["server_section_open"] is True

    assert report["local_started"] and report["start_button_text"] == "Stop local server"
    assert report["local_starting"]["ok"] and report["local_stop_message"] == "stopping the local server"
    assert report["local_stopped"] is True
    assert report["local_exited"]["ok"] and "no such model" in report["local_exited"]["status"]

    assert report["decoded_size"] == [32, 32] and report["fit_size"] == [50, 20]
    b, g, r, a = report["bgra_first_pixel"]
    assert [r, g, b, a] == report["rgb_first_pixel"]  # Krita's RGBA/U8 byte order is B, G, R, A
    assert report["mask_alpha_left_right"] == [255, 0] and report["full_mask_untouched"] is True
    assert "could not be decoded" in report["bad_png"] and "could not be decoded" in report["render_bad_png"]

    # render(): aspect ratio kept for each fit, in a 100x60 area at (10, 20); alpha kept from RGBA PNGs.
    assert report["rgba_has_alpha"] is True and report["rgba_alpha_range"][0] < 255
    assert report["renders"] == {
        "inside/smooth": [30, 20, 60, 60],
        "inside/pixel": [30, 20, 60, 60],
        "fill/smooth": [10, 20, 100, 60],
        "fill/pixel": [10, 20, 100, 60],
        "actual/smooth": [44, 34, 32, 32],
        "actual/pixel": [44, 34, 32, 32],
    }
    assert report["actual_bytes_equal"] is True
    assert report["pixel_art_new_colours"] == 0  # nearest-neighbour invents no colours
    assert report["smooth_alpha_range"][1] < 255  # the semi-transparent model stays semi-transparent
    x, y, w, h, outside_max, inside_min = report["masked_fill"]
    assert [x, y, w, h] == [0, 0, 100, 60] and outside_max == 0 and inside_min > 0
    assert report["actual_clipped"] == [5, 5, 20, 10]

    # The Size box offers the sizes GET /v1/models lists for the model (e.g. an upsampler's), native first.
    assert report["size_choices"] == [[0, "native (64 px)"], [128, "128 px"], [256, "256 px"]]

    # History keeps live batches across prompts, bounded by count and by bytes.
    assert report["history_bounded"] == [["p2", True], ["p3", True], ["p4", True], ["p5", False]]
    assert report["history_bytes"] == ["p1", "p2"]


SIZE_DRIVER = r'''
import json, os, sys, time
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, sys.argv[1])
from ganvas_krita import guard
from ganvas_krita.panel import GanvasPanel
from ganvas_krita.qt import QApplication
from ganvas_krita.settings import Settings

URL, KEY = sys.argv[2], sys.argv[3]
errors = []
guard.listeners.append(lambda exc, text: errors.append(text))
app = QApplication([])


class Host:
    canvas = (70, 500)

    def canvas_size(self):
        return self.canvas


def wait(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.005)
    return False


def box(panel):
    return {"choices": [[panel.size.itemData(i), panel.size.itemText(i)] for i in range(panel.size.count())],
            "current": panel.size.currentData()}


report = {}
host = Host()
settings = Settings.memory({"server_url": URL, "api_key": KEY})
panel = GanvasPanel(settings, host)
report["ready"] = wait(lambda: panel.status.text().startswith("ready"))
report["at_70x500"] = box(panel)
host.canvas = (1000, 800)
panel.prompt.setText("a red circle")
panel.seed.setText("5")
report["params_size_at_1000x800"] = panel._params().size
host.canvas = (20, 20)
report["params_size_at_20x20"] = panel._params().size
host.canvas = (1000, 800)
panel._params()
panel.size.setCurrentIndex(panel.size.findData(0))       # the user picks native: kept from now on
host.canvas = (1000, 800)
report["picked"] = [panel._params().size, settings.store.get("size")]
panel.size.setCurrentIndex(panel.size.findData(report["params_size_at_1000x800"]))
panel.generate_button.click()
report["generated"] = wait(lambda: panel.shown_batch is not None)
report["message"] = panel.message.text()
from ganvas_krita import canvas
shown = canvas.decode_png(panel.shown_batch.images[0].png) if panel.shown_batch else None
report["png_size"] = [shown.width(), shown.height()] if shown is not None else None
stored = Settings.memory({"server_url": URL, "api_key": KEY, "size": "64"})
other = GanvasPanel(stored, host)
wait(lambda: other.status.text().startswith("ready"))
report["stored_choice_kept"] = other.size.currentData()
report["stored_box"] = box(other)
report["stored_status"] = other.status.text()
report["errors"] = errors
print(json.dumps(report))
'''


def test_panel_size_box_lists_the_servers_sizes_and_follows_the_canvas(server, tmp_path):
    """Offscreen panel against the real server: the Size box holds the model card's `sizes` (native + the
    upsampler's sides), and until the user picks one it follows the canvas: the largest side not above the
    canvas's shorter side, else the largest."""
    python = python_with_pyqt5()
    if python is None:
        pytest.skip("no Python with PyQt5 (apt-get install python3-pyqt5, which Krita uses too)")
    card = kc.GanvasClient(server.url + "/v1/", api_key=KEY, timeout=60).models()
    sizes = next(m for m in card if m["id"] == "tiny")["sizes"]
    if sizes in (None, [], [32]):
        pytest.skip(f"the server lists no upsampled sizes for tiny ({sizes}): models/upsamplers/ is empty")
    assert sizes[0] == 32 and 64 in sizes and all(s > 32 for s in sizes[1:])
    driver = tmp_path / "size_driver.py"
    driver.write_text(SIZE_DRIVER)
    out = subprocess.run(
        [python, str(driver), str(plugin_dir().parent), server.url, KEY], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ready"] and report["errors"] == []
    expected = [[0, "native (32 px)"], *([s, f"{s} px"] for s in sizes[1:])]
    assert report["at_70x500"]["choices"] == expected
    assert report["at_70x500"]["current"] == 64  # the largest side <= 70
    assert report["params_size_at_1000x800"] == max(sizes)  # followed when Generate builds the request
    assert report["params_size_at_20x20"] == max(sizes)  # smaller than every size: the largest
    assert report["picked"] == [None, "0"]  # a picked size (native) stays
    assert report["generated"], report["message"]
    assert report["png_size"] == [max(sizes)] * 2  # the server made it at that size
    assert report["stored_choice_kept"] == 64, json.dumps(
        [report["stored_box"], report["stored_status"]]
    )  # a stored choice is the user's, not the canvas's
