"""`ganvas serve` driven by the official `openai` SDK over real loopback sockets.

Most tests share one in-process server (uvicorn in a thread, see core/server/background.py) with an
API key; tests that need another configuration (tiny queue, slow model, CORS) start their own, which
is cheap because the model and the text encoder stay loaded in this process. The subprocess tests
run the real command and kill it (SIGKILL, SIGTERM) mid-request.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import SHIPPED_MODELS, pixels  # noqa: E402

from ganvas.core.errors import RequestRefused  # noqa: E402
from ganvas.core.hookspecs import hookimpl  # noqa: E402
from ganvas.core.hosts.server.background import BackgroundServer  # noqa: E402
from ganvas.core.hosts.server.config import MAX_FRAMES, ServerConfig, ServerConfigError, is_loopback  # noqa: E402
from ganvas.core.hosts.server.store import PARTIAL_PREFIX, ImageStore  # noqa: E402
from ganvas.core.hosts.server.workers import QueueFull, WorkerPool  # noqa: E402
from ganvas.core.plugin_manager import GanvasPlugins  # noqa: E402
from ganvas.core.requests import MAX_SEED  # noqa: E402

KEY = "test-key"


class TinyModels:
    """Registers the conftest checkpoint as model "tiny" (plus extra named sources)."""

    def __init__(self, folder: Path, **extra):
        self.folder, self.extra = folder, extra

    @hookimpl
    def ganvas_register_models(self, register):
        register("tiny", str(self.folder))
        for name, source in self.extra.items():
            register(name, source)


class Gate:
    """A policy plugin that holds any prompt containing "hold" until released: a slow job on demand."""

    def __init__(self):
        self.open = threading.Event()

    @hookimpl
    def ganvas_check_request(self, request):
        if "hold" in request.prompt:
            assert self.open.wait(60), "gate never opened"
        if "forbidden" in request.prompt:
            raise RequestRefused("no forbidden things", param="prompt")
        if "explode" in request.prompt:
            raise ZeroDivisionError("division by zero")  # a bug in a policy plugin, not a refusal


def make_plugins(tiny: Path, *extra_plugins, **extra_models) -> GanvasPlugins:
    manager = GanvasPlugins(entry_points=False, env={})
    manager.register(TinyModels(tiny, **extra_models), "test-models")
    for i, plugin in enumerate(extra_plugins):
        manager.register(plugin, f"test-plugin-{i}")
    return manager


def client(srv, key=KEY, **kw):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, **{"max_retries": 0, "timeout": 60, **kw})


def decode(item) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
    image.load()
    return image


def raw(srv, method, path, body=None, headers=None):
    """(status, headers, parsed JSON or bytes) for a hand-made request."""
    conn = http.client.HTTPConnection("127.0.0.1", int(srv.url.rsplit(":", 1)[1]), timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        try:
            data = json.loads(data)
        except ValueError:
            pass
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def auth(extra=None):
    return {"Authorization": f"Bearer {KEY}".encode(), **(extra or {})}


@pytest.fixture(scope="module")
def gate():
    return Gate()


@pytest.fixture(scope="module")
def srv(tiny_checkpoint, tmp_path_factory, gate):
    config = ServerConfig(
        port=0,
        api_key=KEY,
        model="tiny",
        workers=2,
        max_queue=8,
        access_log=None,
        store_dir=tmp_path_factory.mktemp("store"),
    )
    with BackgroundServer(config, make_plugins(tiny_checkpoint, gate)) as server:
        yield server


# --- generation through the SDK ----------------------------------------------------------------------------


def test_sdk_b64_json_n_greater_than_one_with_seeds(srv):
    r = client(srv).images.generate(
        prompt="a red circle", n=3, size="64x64", response_format="b64_json", extra_body={"seed": 7}
    )
    assert isinstance(r.created, int) and len(r.data) == 3
    images = [decode(item) for item in r.data]
    assert all(im.size == (64, 64) and im.format == "PNG" for im in images)
    # the per-image seed is an extra field: the SDK keeps it (its models allow extras)
    assert [item.seed for item in r.data] == [7, 8, 9]
    assert r.data[0].url is None and r.data[0].revised_prompt is None
    # image i uses seed + i: seed 8 alone is the second image of the batch
    alone = client(srv).images.generate(
        prompt="a red circle", size="64x64", response_format="b64_json", extra_body={"seed": 8}
    )
    assert (pixels(decode(alone.data[0])) == pixels(images[1])).all()
    assert not (pixels(images[0]) == pixels(images[1])).all()
    # PNG metadata from the pipeline travels with the image
    assert any("seed" in str(v).lower() for v in images[0].info.values())


def test_sdk_url_results_are_served_by_the_server(srv):
    r = client(srv).images.generate(prompt="a blue square", n=2, response_format="url", extra_body={"seed": 1})
    assert len(r.data) == 2 and all(item.b64_json is None for item in r.data)
    for item in r.data:
        assert item.url.startswith(srv.url + "/v1/images/files/")
        with urllib.request.urlopen(item.url, timeout=30) as resp:  # no API key needed: the id is the secret
            assert resp.headers["Content-Type"] == "image/png"
            assert "max-age=" in resp.headers["Cache-Control"]
            image = Image.open(io.BytesIO(resp.read()))
            assert image.size == (32, 32)  # no size: the model's native resolution
    stored = sorted(p.name for p in srv.config.store_dir.iterdir())
    assert all(not name.startswith(PARTIAL_PREFIX) for name in stored)
    assert {item.url.rsplit("/", 1)[1] for item in r.data} <= set(stored)


def test_sdk_defaults_only_prompt(srv):
    r = client(srv).images.generate(prompt="a green triangle")  # the SDK sends {"prompt": ...} only
    assert len(r.data) == 1 and r.data[0].url and isinstance(r.data[0].seed, int)


def test_extensions_truncation_style_and_model_alias(srv):
    c = client(srv)
    base = dict(prompt="a red circle", response_format="b64_json")
    full = c.images.generate(**base, extra_body={"seed": 3})
    low = c.images.generate(**base, extra_body={"seed": 3, "truncation": 0.25})
    assert not (pixels(decode(full.data[0])) == pixels(decode(low.data[0]))).all()
    styled = c.images.generate(**base, model="dall-e-2", extra_body={"seed": 3, "style": "noto"})
    assert styled.data[0].revised_prompt == "a red circle; noto style"
    assert styled.data[0].seed == 3


def test_a_style_for_a_model_without_a_prompt_template_is_400_naming_style(srv):
    """shapes was trained without style words (no "prompt_template" in its config.json): a style is refused."""
    with pytest.raises(openai.BadRequestError) as err:
        client(srv).images.generate(prompt="a red circle", model="shapes", extra_body={"seed": 1, "style": "noto"})
    assert err.value.status_code == 400 and err.value.param == "style", err.value.message
    assert "model 'shapes' has no prompt template" in err.value.message
    plain = client(srv).images.generate(
        prompt="a red circle", model="shapes", response_format="b64_json", extra_body={"seed": 1, "style": ""}
    )
    assert plain.data[0].revised_prompt is None  # a blank style is no style: the prompt is unchanged


def test_models_list_and_retrieve(srv):
    c = client(srv)
    assert [m.id for m in c.models.list()] == sorted({"tiny", *SHIPPED_MODELS})  # the test's model + shipped ones
    model = c.models.retrieve("tiny")
    assert model.id == "tiny" and model.object == "model" and model.resolution == 32
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("nope")


def shipped_upsampler_scale() -> int | None:
    """The scale of the upsampler the shipped folders register (models/upsamplers/), None when there is none."""
    from ganvas.plugins.default_backend import upsampler_folders

    for folder in upsampler_folders().values():
        return int(json.loads((folder / "config.json").read_text())["upsampler"]["scale"])
    return None


def test_model_cards_list_sizes_native_then_upsampled(srv):
    c = client(srv)
    c.images.generate(prompt="a red circle", size="32x32")  # "tiny" is loaded (the default): its card is full
    scale = shipped_upsampler_scale()
    expected = [32] if scale is None else [32, *(32 * f for f in (2, 4, 8) if f <= scale)]
    assert c.models.retrieve("tiny").sizes == expected
    listed = {m.id: m for m in c.models.list()}
    assert listed["tiny"].sizes == expected
    status, _, data = raw(srv, "GET", "/v1/models", headers=auth())
    card = next(m for m in data["data"] if m["id"] == "tiny")
    assert card["sizes"] == expected and card["resolution"] == 32
    assert all(not m.get("sizes") for m in data["data"] if m["id"] not in srv.state.hub._pipelines)


def test_hub_sizes_without_an_upsampler_is_the_native_side_only():
    from types import SimpleNamespace

    from ganvas.core.hosts.server.hub import ModelHub

    hub = ModelHub(GanvasPlugins(entry_points=False, env={}))
    hub._pipelines["m"] = SimpleNamespace(resolution=64, load_upsampler=lambda: None)
    assert hub.sizes("m") == [64]
    hub._pipelines["x4"] = SimpleNamespace(
        resolution=64, load_upsampler=lambda: SimpleNamespace(info=SimpleNamespace(scale=4))
    )
    assert hub.sizes("x4") == [64, 128, 256]
    hub._pipelines["x3"] = SimpleNamespace(
        resolution=64, load_upsampler=lambda: SimpleNamespace(info=SimpleNamespace(scale=3))
    )
    assert hub.sizes("x3") == [64, 128, 192]
    assert hub.sizes("not-loaded") is None


def test_size_256_is_the_upsampler_and_equals_the_command_line(srv, tmp_path):
    """`size="256x256"` on a 64 px model: the upsampler's 256x256 RGBA PNG, the same pixels as
    `ganvas generate --size 256` for the seed, and the card then offers 64, 128 and 256."""
    import numpy as np

    if "emoji64" not in SHIPPED_MODELS:
        pytest.skip("the shipped emoji64 model is not in models/")
    scale = shipped_upsampler_scale()
    if scale is None:
        pytest.skip("models/upsamplers/ holds no upsampler yet (the x4 upsampler is still being shipped)")
    c = client(srv)
    r = c.images.generate(
        prompt="a red apple", model="emoji64", size="256x256", response_format="b64_json", extra_body={"seed": 5}
    )
    served = decode(r.data[0])
    assert served.size == (256, 256) and served.mode == "RGBA" and served.format == "PNG"
    assert "upsampler" in served.info, served.info.keys()
    assert c.models.retrieve("emoji64").sizes == [64, *(64 * f for f in (2, 4, 8) if f <= scale)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANVAS_", "OPENAI_"))}
    env.update(GANVAS_PLUGINS="", OMP_NUM_THREADS="1", GANVAS_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ganvas.core.hosts.cli.main",
            "generate",
            "a red apple",
            "--model",
            "emoji64",
            "--seed",
            "5",
            "--size",
            "256",
            "--truncation",
            "1",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with Image.open(proc.stdout.split()[-1]) as cli:
        assert cli.size == (256, 256) and cli.mode == "RGBA"
        assert np.array_equal(np.asarray(cli), np.asarray(served))


def test_interpolation_frames(srv):
    c = client(srv)
    body = {"prompts": ["a red circle", "a blue square"], "steps": 4, "seed": 11, "response_format": "b64_json"}
    r = c.post("/images/interpolations", body=body, cast_to=object)
    assert [f["index"] for f in r["data"]] == [0, 1, 2, 3, 4]
    assert [f["t"] for f in r["data"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    first = Image.open(io.BytesIO(base64.b64decode(r["data"][0]["b64_json"])))
    plain = c.images.generate(prompt="a red circle", response_format="b64_json", extra_body={"seed": 11})
    assert (pixels(first) == pixels(decode(plain.data[0]))).all()  # frame 0 == a plain generation
    walk = c.post(
        "/images/interpolations",
        body={"prompts": ["a red circle"], "seeds": [1, 2, 3], "steps": 2, "response_format": "url"},
        cast_to=object,
    )
    assert [f["seed"] for f in walk["data"]] == [1, 1, 2, 2, 3] and all("url" in f for f in walk["data"])


@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompts": ["a"], "seed": 1}, "prompts"),  # one key frame
        ({"prompts": ["a", "b"], "steps": MAX_FRAMES}, "steps"),  # too many frames
        ({"prompts": ["a", "b", "c"], "seeds": [1, 2]}, "seeds"),  # lengths disagree
        ({"prompts": ["a", "b"], "seed": 1, "seeds": [1, 2]}, "seed"),
        ({"prompts": ["a", "  "]}, "prompts"),
        ({"prompts": "ab"}, "prompts"),
        ({"prompts": ["a", "b"], "steps": 40, "size": "1024x1024"}, "size"),  # pixel budget
    ],
)
def test_interpolation_errors(srv, body, param):
    with pytest.raises(openai.BadRequestError) as err:
        client(srv).post("/images/interpolations", body=body, cast_to=object)
    assert err.value.param == param, err.value.message


# --- errors, one SDK class each ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, param",
    [
        (dict(n=11), "n"),
        (dict(n=0), "n"),
        (dict(size="100x200"), "size"),
        (dict(size="4x4"), "size"),
        (dict(size="4096x4096"), "size"),
        (dict(size="large"), "size"),
        (dict(response_format="jpeg"), "response_format"),
        (dict(prompt=""), "prompt"),
        (dict(prompt="   "), "prompt"),
        (dict(prompt="x" * 1001), "prompt"),
        (dict(extra_body={"seed": -1}), "seed"),
        (dict(extra_body={"seed": MAX_SEED, "n": 2}), "seed"),
        (dict(extra_body={"truncation": 0}), "truncation"),
        (dict(extra_body={"truncation": 1.5}), "truncation"),
        (dict(extra_body={"n": "2"}), "n"),
        (dict(extra_body={"n": True}), "n"),
        (dict(extra_body={"seeds": [1]}), "seeds"),  # a typo is named, not ignored
        (dict(extra_body={"background": "transparent"}), "background"),
        (dict(prompt="something forbidden"), "prompt"),  # a policy plugin's refusal
    ],
)
def test_bad_input_is_400_naming_the_field(srv, kwargs, param):
    args = {"prompt": "a red circle", **kwargs}
    extra = args.pop("extra_body", {})
    with pytest.raises(openai.BadRequestError) as err:
        client(srv).images.generate(**args, extra_body=extra)
    assert err.value.status_code == 400 and err.value.param == param, err.value.message
    assert err.value.type == "invalid_request_error"
    assert set(err.value.body) == {"message", "type", "param", "code"}


def test_policy_limits_apply(srv):
    from ganvas.core import policy as request_policy

    request_policy.configure(max_prompt_chars=1000, max_n=2, blocklist=["purple"])
    with pytest.raises(openai.BadRequestError) as err:
        client(srv).images.generate(prompt="a purple circle")
    assert err.value.code == "request_refused" and "purple" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client(srv).images.generate(prompt="a red circle", n=3)
    assert err.value.param == "n"


def test_wrong_or_missing_key_is_401(srv):
    with pytest.raises(openai.AuthenticationError) as err:
        client(srv, key="wrong").images.generate(prompt="a red circle")
    assert err.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(srv, key="wrong").models.list()
    status, headers, body = raw(
        srv, "POST", "/v1/images/generations", json.dumps({"prompt": "x"}), {"Content-Type": "application/json"}
    )
    assert status == 401 and headers["www-authenticate"] == "Bearer" and "missing" in body["error"]["message"]
    # keys are compared as bytes: a non-ASCII token is a plain 401, never a TypeError (500)
    status, _, body = raw(srv, "GET", "/v1/models", headers={"Authorization": "Bearer test-k\u00e9y".encode()})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert raw(srv, "GET", "/health")[0] == 200  # health and the OpenAPI document need no key
    assert raw(srv, "GET", "/openapi.json")[0] == 200


@pytest.mark.parametrize("model", ["nope", "../tiny", "tiny/..", "/etc/passwd", "~/tiny", "C:\\tiny"])
def test_unknown_or_path_like_model_is_404(srv, model):
    with pytest.raises(openai.NotFoundError) as err:
        client(srv).images.generate(prompt="a red circle", model=model)
    assert err.value.param == "model" and err.value.code == "model_not_found"


def test_checkpoint_folder_path_is_not_a_model_name(srv, tiny_checkpoint):
    # the folder exists and holds a valid checkpoint: a request still cannot name it
    with pytest.raises(openai.NotFoundError):
        client(srv).images.generate(prompt="a red circle", model=str(tiny_checkpoint))


def test_body_too_large_is_413(srv):
    with pytest.raises(openai.APIStatusError) as err:
        client(srv).images.generate(prompt="a red circle", extra_body={"pad": "x" * 200_000})
    assert err.value.status_code == 413 and err.value.code == "request_too_large"
    # chunked upload: no Content-Length to check up front, the count stops it
    conn = http.client.HTTPConnection("127.0.0.1", int(srv.url.rsplit(":", 1)[1]), timeout=30)
    conn.request(
        "POST",
        "/v1/images/generations",
        body=iter([b'{"prompt": "', b"x" * 140_000, b'"}']),
        headers={**auth(), "Content-Type": "application/json"},
        encode_chunked=True,
    )
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"]["code"] == "request_too_large"
    conn.close()


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"null", "application/json"),
        (b"", "application/json"),
        (b'{"prompt": "x"}', "text/plain"),
        (b"prompt=x", "application/x-www-form-urlencoded"),
        (b'{"prompt": {"nested": [1]}}', "application/json"),
        (b'{"prompt": "x", "truncation": NaN}', "application/json"),
        (b'{"prompt": "x", "seed": 1e400}', "application/json"),
        (b'{"prompt": "x", "seed": 123456789012345678901234567890}', "application/json"),
        (b'{"prompt": "x\\ud800"}', "application/json"),
        (b"\xff\xfe", "application/json"),
    ],
)
def test_garbage_is_400_in_openai_shape(srv, body, content_type):
    status, _, data = raw(srv, "POST", "/v1/images/generations", body, auth({"Content-Type": content_type}))
    assert status == 400, data
    assert set(data["error"]) == {"message", "type", "param", "code"} and data["error"]["message"]


def test_unknown_routes_and_methods_in_openai_shape(srv):
    status, _, data = raw(srv, "GET", "/v1/nothing-here", headers=auth())
    assert status == 404 and data["error"]["code"] == "not_found"
    status, headers, data = raw(srv, "GET", "/v1/images/generations", headers=auth())
    assert status == 405 and "POST" in headers["allow"] and data["error"]["code"] == "method_not_allowed"
    for name in ("..%2F..%2Fetc%2Fpasswd", "short.png", "A" * 22 + ".txt", "A" * 22 + ".png"):
        status, _, data = raw(srv, "GET", f"/v1/images/files/{name}")
        assert status == 404 and data["error"]["code"] in ("not_found",), name


def test_health_and_openapi(srv):
    status, _, data = raw(srv, "GET", "/health")
    assert status == 200 and data["status"] == "ok" and data["model"] == "tiny"
    status, _, doc = raw(srv, "GET", "/openapi.json")
    assert {"/v1/images/generations", "/v1/images/interpolations", "/v1/models", "/health"} <= set(doc["paths"])
    request_schema = doc["components"]["schemas"]["CreateImageRequest"]
    assert request_schema["additionalProperties"] is False and request_schema["required"] == ["prompt"]


@pytest.mark.parametrize("size, side", [("8x08", 8), ("00008x00008", 8), ("064x64", 64), ("64x64", 64)])
def test_size_is_two_integers_compared_numerically(srv, size, side):
    r = client(srv).images.generate(prompt="a red circle", size=size, response_format="b64_json")
    assert decode(r.data[0]).size == (side, side)


@pytest.mark.parametrize(
    "size",
    [
        "8x8\n",
        " 8x8",
        "8X8",
        "+8x8",
        "8x-8",
        "8 x 8",
        "\u0668x\u0668",
        "\uff18x\uff18",
        "000008x8",
        "8x8x8",
        "x8",
        "8x",
        "0x0",
        "1e2x1e2",
        "8.0x8.0",
        "64x32",
        "1024x1792",
    ],
)
def test_malformed_or_non_square_size_is_400(srv, size):
    with pytest.raises(openai.BadRequestError) as err:
        client(srv).images.generate(prompt="a red circle", size=size)
    assert err.value.param == "size", err.value.message


def test_json_syntax_error_names_line_and_column_not_an_offset(srv):
    body = b'{\n  "prompt": "x",\n  "n": ,\n}'
    status, _, data = raw(srv, "POST", "/v1/images/generations", body, auth({"Content-Type": "application/json"}))
    assert status == 400 and data["error"]["param"] is None, data
    assert "line 3 column 8" in data["error"]["message"], data


def test_urls_never_come_from_the_host_header(srv, tiny_checkpoint, tmp_path):
    body = json.dumps({"prompt": "a red circle", "response_format": "url"})
    status, _, data = raw(
        srv, "POST", "/v1/images/generations", body, auth({"Content-Type": "application/json", "Host": "evil.example"})
    )
    assert status == 200 and data["data"][0]["url"].startswith(srv.url + "/v1/images/files/"), data
    status, headers, _ = raw(srv, "GET", "/v1/models/", headers=auth({"Host": "evil.example"}))
    assert "evil.example" not in headers.get("location", ""), (status, headers)
    config = ServerConfig(
        port=0, model="tiny", access_log=None, store_dir=tmp_path, public_url="https://images.example.com/ganvas/"
    )
    with BackgroundServer(config, make_plugins(tiny_checkpoint)) as server:
        r = client(server, default_headers={"Host": "evil.example"}).images.generate(prompt="a red circle")
        assert r.data[0].url.startswith("https://images.example.com/ganvas/v1/images/files/")


def test_crashing_policy_plugin_fails_closed(srv):
    stored = set(srv.config.store_dir.iterdir())
    with pytest.raises(openai.InternalServerError) as err:
        client(srv).images.generate(prompt="a circle that will explode", response_format="url")
    assert err.value.status_code == 500 and err.value.code == "policy_check_failed", err.value.message
    assert "test-plugin-0" in err.value.message and "ZeroDivisionError" in err.value.message
    with pytest.raises(openai.InternalServerError):
        client(srv).post("/images/interpolations", body={"prompts": ["a", "b explode"]}, cast_to=object)
    assert set(srv.config.store_dir.iterdir()) == stored  # nothing was generated


# --- backpressure, readiness, CORS: servers of their own -------------------------------------------------------


def test_full_queue_is_429_with_retry_after(tiny_checkpoint, tmp_path):
    gate = Gate()
    config = ServerConfig(port=0, model="tiny", workers=1, max_queue=1, access_log=None, store_dir=tmp_path)
    with BackgroundServer(config, make_plugins(tiny_checkpoint, gate)) as server:
        c = client(server)
        results: list = []
        held = [
            threading.Thread(target=lambda: results.append(c.images.generate(prompt=f"hold {i}"))) for i in range(2)
        ]
        for t in held:
            t.start()
        deadline = time.monotonic() + 30
        while server.state.pool.stats()["pending"] < 2:  # one running (held at the gate), one waiting
            assert time.monotonic() < deadline
            time.sleep(0.01)
        try:
            with pytest.raises(openai.RateLimitError) as err:
                c.images.generate(prompt="a red circle")
            assert err.value.code == "queue_full" and err.value.type == "rate_limit_error"
            assert int(err.value.response.headers["retry-after"]) >= 1
            assert raw(server, "GET", "/health")[2]["queue"]["pending"] == 2
        finally:
            gate.open.set()
        for t in held:
            t.join(60)
        assert len(results) == 2  # the admitted requests were answered
        assert c.images.generate(prompt="a red circle").data  # and the queue drained


def test_503_until_the_model_is_warm(tiny_checkpoint, tmp_path):
    release = threading.Event()

    def slow_loader():
        release.wait(60)
        return str(tiny_checkpoint)

    config = ServerConfig(port=0, model="slow", access_log=None, store_dir=tmp_path)
    server = BackgroundServer(config, make_plugins(tiny_checkpoint, slow=slow_loader), wait_ready=False).start()
    try:
        status, headers, data = raw(server, "GET", "/health")
        assert status == 503 and data["status"] == "loading" and headers["retry-after"]
        with pytest.raises(openai.InternalServerError) as err:  # 503 is the SDK's InternalServerError class
            client(server).images.generate(prompt="a red circle")
        assert err.value.status_code == 503 and err.value.code == "model_loading"
        release.set()
        server.wait_until_ready()
        assert client(server).images.generate(prompt="a red circle", model="slow").data
    finally:
        release.set()
        server.stop()


def test_model_that_fails_to_load_stops_the_server(tmp_path, tiny_checkpoint):
    config = ServerConfig(port=0, model="missing-model", access_log=None, store_dir=tmp_path)
    with pytest.raises(ServerConfigError, match="missing-model"):
        BackgroundServer(config, make_plugins(tiny_checkpoint)).start()


def test_cors_off_by_default_and_on_when_configured(srv, tiny_checkpoint, tmp_path):
    preflight = {
        "Origin": "http://example.test",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    status, headers, _ = raw(srv, "OPTIONS", "/v1/images/generations", headers=preflight)
    assert "access-control-allow-origin" not in headers
    config = ServerConfig(
        port=0, model="tiny", access_log=None, store_dir=tmp_path, api_key="k", cors_origins=["http://example.test"]
    )
    with BackgroundServer(config, make_plugins(tiny_checkpoint)) as server:
        status, headers, _ = raw(server, "OPTIONS", "/v1/images/generations", headers=preflight)
        assert status == 200 and headers["access-control-allow-origin"] == "http://example.test"
        status, headers, _ = raw(
            server,
            "POST",
            "/v1/images/generations",
            b"{}",
            {"Origin": "http://example.test", "Content-Type": "application/json"},
        )
        assert status == 401 and headers["access-control-allow-origin"] == "http://example.test"


def test_access_log_lines(tiny_checkpoint, tmp_path):
    log_file = tmp_path / "access.jsonl"
    from ganvas.core.hosts.server.runner import _access_logging

    _access_logging(str(log_file))
    try:
        config = ServerConfig(port=0, model="tiny", store_dir=tmp_path / "store", api_key="k")
        with BackgroundServer(config, make_plugins(tiny_checkpoint)) as server:
            client(server, key="k").images.generate(prompt="a secret prompt", n=2, user="u1")
            raw(server, "GET", "/health")
    finally:
        _access_logging(None)
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    gen = next(line for line in lines if line["path"] == "/v1/images/generations")
    assert gen["status"] == 200 and gen["model"] == "tiny" and gen["n"] == 2 and gen["user"] == "u1"
    assert {"ts", "id", "client", "method", "ms", "bytes", "wait_ms"} <= set(gen)
    text = log_file.read_text()
    assert "secret prompt" not in text and "Bearer" not in text  # neither prompts nor keys are logged


# --- the pieces on their own ------------------------------------------------------------------------------------


def test_non_loopback_bind_needs_a_key():
    with pytest.raises(ServerConfigError, match="API key"):
        ServerConfig(host="0.0.0.0").check()
    with pytest.raises(ServerConfigError, match="API key"):
        ServerConfig(host="::").check()
    ServerConfig(host="0.0.0.0", api_key="k").check()
    ServerConfig(host="localhost").check()
    assert is_loopback("127.0.0.2") and is_loopback("::1") and not is_loopback("192.168.1.10")
    with pytest.raises(ServerConfigError, match="empty"):
        ServerConfig(api_key=" ").check()


@pytest.mark.parametrize("key", [" s3cret", "s3cret ", "s3cret\n", "\ts3cret", "s3cret\r"])
def test_api_key_with_surrounding_whitespace_is_refused(key):
    with pytest.raises(ServerConfigError, match="whitespace"):
        ServerConfig(api_key=key).check()
    ServerConfig(api_key="s3 cret").check()  # inner spaces reach the server intact


def test_parse_size_is_numeric_and_strict():
    from ganvas.core.hosts.server.errors import APIError
    from ganvas.core.hosts.server.validation import parse_size

    assert parse_size(None) is None and parse_size("auto") is None
    assert parse_size("8x08") == parse_size("00008x00008") == 8 and parse_size("1024x1024") == 1024
    for bad in ("8x8\n", "\u0668x\u0668", "000008x8", "64x32", "4x4", "2048x2048", "8x8x8"):
        with pytest.raises(APIError) as err:
            parse_size(bad)
        assert err.value.param == "size", bad


def test_server_limits_are_checked():
    for field in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
        with pytest.raises(ServerConfigError, match="timeout|keep-alive"):
            ServerConfig(**{field: 0}).check()
    with pytest.raises(ServerConfigError, match="max-connections"):
        ServerConfig(max_connections=0).check()
    with pytest.raises(ServerConfigError, match="max-in-flight"):
        ServerConfig(max_in_flight=0).check()


def test_worker_pool_bounds_and_drains():
    release = threading.Event()
    pool = WorkerPool(workers=1, max_queue=1)
    first, second = pool.submit(lambda: release.wait(10) and 1), pool.submit(lambda: 2)
    with pytest.raises(QueueFull) as full:
        pool.submit(lambda: 3)
    assert full.value.retry_after > 0 and pool.stats()["rejected"] == 1
    assert threading.active_count() < 50  # fixed threads, whatever the load
    release.set()
    assert pool.shutdown(wait=True, timeout=10)
    assert first.result() == 1 and second.result() == 2  # admitted work finished during shutdown


def test_store_is_atomic_and_recovers(tmp_path):
    store = ImageStore(tmp_path, ttl_s=3600)
    image_id = store.put(b"\x89PNG data")
    assert store.lookup(image_id)[0].read_bytes() == b"\x89PNG data"
    assert store.lookup("../../etc/passwd") is None and store.lookup("x" * 22 + "/") is None
    # the rename path (filesystems without O_TMPFILE): a crash leaves .partial-*, the next open removes it
    fallback = ImageStore(tmp_path, ttl_s=3600, use_tmpfile=False)
    second = fallback.put(b"more")
    (tmp_path / f"{PARTIAL_PREFIX}abc").write_bytes(b"half")
    reopened = ImageStore(tmp_path, ttl_s=3600)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{image_id}.png", f"{second}.png"])
    assert reopened.lookup(second) is not None
    # expiry: a zero TTL store drops everything on open
    ImageStore(tmp_path, ttl_s=0)
    assert list(tmp_path.iterdir()) == []


def test_serve_command_registers_through_the_hook():
    import click

    from ganvas.plugins import commands

    @click.group()
    def cli():
        pass

    manager = GanvasPlugins(builtins=False, entry_points=False, env={})
    manager.register(commands, "commands")  # the built-in that adds `ganvas serve` (core/hosts/server/command.py)
    manager.register_commands(cli)
    assert "serve" in cli.commands
    params = {p.name for p in cli.commands["serve"].params}
    assert {"host", "port", "api_key", "workers", "threads", "max_queue", "cors_origins", "model"} <= params


# --- the real command in a subprocess ----------------------------------------------------------------------------


def serve_argv() -> list[str]:
    return [sys.executable, "-m", "ganvas.core.hosts.cli.main", "serve"]  # the real command line


class ServeProcess:
    def __init__(self, args: list[str], env: dict, log: Path):
        self.log = log
        self.handle = open(log, "ab")
        self.proc = subprocess.Popen([*serve_argv(), *args], stdout=self.handle, stderr=subprocess.STDOUT, env=env)
        self.url = ""

    def wait_ready(self, timeout: float = 120) -> "ServeProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            for line in text.splitlines():
                if "ready at http://" in line:
                    self.url = line.split("ready at ", 1)[1].split()[0].removesuffix("/v1")
                    return self
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise AssertionError(f"server not ready:\n{self.log.read_text(errors='replace')}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.handle.close()


def serve_env(tiny_checkpoint: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANVAS_", "OPENAI_"))}
    env.update(
        GANVAS_MODELS_PATH=str(tiny_checkpoint.parent), GANVAS_PLUGINS="", OMP_NUM_THREADS="1", GANVAS_THREADS="1"
    )
    return env


def test_serve_refuses_public_bind_without_key(tiny_checkpoint):
    proc = subprocess.run(
        [*serve_argv(), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=serve_env(tiny_checkpoint),
        timeout=60,
    )
    assert proc.returncode == 1 and "without an API key" in proc.stderr
    assert "Traceback" not in proc.stderr


def _store_is_clean(store: Path) -> list[str]:
    names = sorted(p.name for p in store.iterdir())
    for name in names:
        assert not name.startswith(PARTIAL_PREFIX) and name.endswith(".png"), names
        with Image.open(store / name) as im:
            im.load()  # a truncated PNG raises here
    return names


def test_kill_mid_request_leaves_no_partial_files_and_restart_serves(tiny_checkpoint, tmp_path):
    store, env = tmp_path / "store", serve_env(tiny_checkpoint)
    args = ["--port", "0", "--model", "tiny", "--store", str(store), "--access-log", "off"]
    first = ServeProcess(args, env, tmp_path / "serve1.log").wait_ready()
    try:
        kept = client(first, key="x").images.generate(prompt="a red circle", response_format="url").data[0].url
        before = set(store.iterdir())
        failed: list = []

        def long_request():
            try:
                client(first, key="x").images.generate(
                    prompt="a red circle", n=10, size="1024x1024", response_format="url"
                )
            except openai.APIConnectionError as exc:
                failed.append(exc)

        t = threading.Thread(target=long_request)
        t.start()
        deadline = time.monotonic() + 60
        while set(store.iterdir()) == before:  # the request is writing its images: kill it now
            assert time.monotonic() < deadline and t.is_alive()
            time.sleep(0.002)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        t.join(30)
        assert failed, "the request should have died with the server"
        assert len(_store_is_clean(store)) < len(before) + 10
    finally:
        first.close()

    second = ServeProcess(args, env, tmp_path / "serve2.log").wait_ready()
    try:
        _store_is_clean(store)
        with urllib.request.urlopen(second.url + "/v1/images/files/" + kept.rsplit("/", 1)[1], timeout=30) as resp:
            assert resp.status == 200  # url results outlive a restart (until their 60 minutes are up)
        # graceful stop: SIGTERM while a request runs; it is answered, then the process exits 0
        answer: list = []
        t = threading.Thread(
            target=lambda: answer.append(
                client(second, key="x").images.generate(
                    prompt="a red circle", n=10, size="1024x1024", response_format="b64_json"
                )
            )
        )
        t.start()
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(second.url + "/health", timeout=30) as resp:
                if json.load(resp)["queue"]["running"] >= 1:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.002)
        second.proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert second.proc.wait(60) == 0
        assert answer and len(answer[0].data) == 10
        assert "stopped" in second.log.read_text()
    finally:
        second.close()


def test_serve_refuses_api_key_with_surrounding_spaces(tiny_checkpoint):
    env = serve_env(tiny_checkpoint)
    for args, extra in ((["--api-key", " s3cret "], {}), ([], {"GANVAS_API_KEY": "s3cret\n"})):
        proc = subprocess.run(
            [*serve_argv(), "--port", "0", *args], capture_output=True, text=True, env={**env, **extra}, timeout=60
        )
        assert proc.returncode == 1 and "whitespace" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


# --- slow clients, overload, slow regular expressions: one real `ganvas serve` with short limits -------------------

HALF_HEADERS = b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: app"  # never finished


def headers_then_nothing(key: str | None = None) -> bytes:
    """A request whose headers are complete and whose 100-byte body never arrives."""
    lines = [
        b"POST /v1/images/generations HTTP/1.1",
        b"Host: x",
        b"Content-Type: application/json",
        b"Content-Length: 100",
    ] + ([b"Authorization: Bearer " + key.encode()] if key else [])
    return b"\r\n".join(lines) + b'\r\n\r\n{"prompt": '


def connect(server, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10)
    try:
        sock.sendall(data)
    except OSError:  # already closed by the server (a connection limit): that is its answer
        pass
    return sock


def until_closed(sock: socket.socket, limit: float = 10.0) -> tuple[float, bytes]:
    """(seconds until the server closed the connection, what it sent before)."""
    start, data = time.monotonic(), b""
    sock.settimeout(limit)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except socket.timeout:
        raise AssertionError(f"the server kept the connection open for {limit} s") from None
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return time.monotonic() - start, data


def error_of(response: bytes) -> tuple[int, dict, dict]:
    """(status, headers, error object) of a raw HTTP response in the OpenAI error shape."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)["error"]


@pytest.fixture(scope="module")
def guarded(tiny_checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guarded")
    blocklist = tmp / "blocklist.txt"
    blocklist.write_text("/(a+)+$/\n/(b|bb)+$/\n")  # catastrophic for Python's re; the second also for `regex`
    env = {**serve_env(tiny_checkpoint), "GANVAS_BLOCKLIST": str(blocklist)}
    args = [
        "--port",
        "0",
        "--model",
        "tiny",
        "--api-key",
        KEY,
        "--store",
        str(tmp / "store"),
        "--access-log",
        "off",
        "--header-timeout",
        "1",
        "--body-timeout",
        "2",
        "--keep-alive",
        "1",
        "--max-in-flight",
        "2",
        "--max-connections",
        "100",
    ]
    proc = ServeProcess(args, env, tmp / "serve.log").wait_ready()
    yield proc
    proc.close()


def test_idle_and_slow_connections_are_closed(guarded):
    took, sent = until_closed(connect(guarded))  # connects, says nothing
    assert took < 4 and sent == b""
    took, sent = until_closed(connect(guarded, HALF_HEADERS))  # headers never finish
    status, _, error = error_of(sent)
    assert took < 4 and status == 408 and error["code"] == "request_timeout" and error["param"] is None
    took, sent = until_closed(connect(guarded, headers_then_nothing(KEY)))  # body never finishes
    status, _, error = error_of(sent)
    assert took < 5 and status == 408 and error["code"] == "request_timeout"
    dripping = connect(guarded, b"GET /health HTTP/1.1\r\n")  # a byte at a time does not reset the clock
    start = time.monotonic()
    with pytest.raises(OSError):
        while time.monotonic() - start < 10:
            dripping.sendall(b"X")
            time.sleep(0.2)
    assert time.monotonic() - start < 4
    dripping.close()
    conn = http.client.HTTPConnection("127.0.0.1", int(guarded.url.rsplit(":", 1)[1]), timeout=10)
    conn.request("GET", "/health")
    assert conn.getresponse().read()
    took, _ = until_closed(conn.sock)  # idle after a response: keep-alive
    assert took < 4


def test_garbage_http_is_400_in_openai_shape(guarded):
    _, sent = until_closed(connect(guarded, b"NOT HTTP AT ALL\r\n\r\n"))
    status, _, error = error_of(sent)
    assert status == 400 and set(error) == {"message", "type", "param", "code"}


def test_half_sent_requests_do_not_lock_out_other_clients(guarded):
    socks = [connect(guarded, HALF_HEADERS) for _ in range(300)]
    socks += [connect(guarded, headers_then_nothing()) for _ in range(100)]  # no key: 401 at once, no slot held
    try:
        start = time.monotonic()
        r = client(guarded).images.generate(prompt="a red circle", response_format="b64_json")
        assert r.data and time.monotonic() - start < 10
        assert client(guarded).models.list().data
    finally:
        for sock in socks:
            sock.close()


class _Transport:
    def __init__(self, closing=False):
        self.closing = closing

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True


def _connection(protocol, connections, opened, *, closing=False, busy=False):
    """A protocol object with just the state `_make_room` reads (unit stand-in beside the real test above)."""
    conn = object.__new__(protocol)
    conn.connections, conn._opened, conn.transport = connections, opened, _Transport(closing)
    conn.cycle = type("Cycle", (), {"response_complete": not busy})() if busy else None
    connections.add(conn)
    return conn


def test_connection_limit_evicts_the_oldest_idle_and_never_a_newcomer_for_closing_or_busy_ones():
    from ganvas.core.hosts.server.protocol import protocol_for

    protocol = protocol_for(ServerConfig(max_connections=3))
    connections: set = set()
    old_idle, busy = _connection(protocol, connections, 1.0), _connection(protocol, connections, 0.5, busy=True)
    newer_idle = _connection(protocol, connections, 2.0)
    newcomer = _connection(protocol, connections, 3.0)
    newcomer._make_room()
    assert old_idle.transport.closing and not busy.transport.closing and not newer_idle.transport.closing
    assert not newcomer.transport.closing
    # A burst: the evicted sockets are closing but still listed until the loop's next turn; they must not
    # push the next newcomer out (the race behind the half-sent-requests failure).
    evicted = [_connection(protocol, connections, 0.1 * i, closing=True) for i in range(5)]
    late = _connection(protocol, connections, 4.0)
    late._make_room()
    assert not late.transport.closing and all(c.transport.closing for c in evicted)
    assert newer_idle.transport.closing and not newcomer.transport.closing  # 3 live before it: oldest idle goes
    assert sum(not c.transport.closing for c in connections) == 3
    # Every other live connection is busy with a request: the newcomer still gets in.
    busy_only: set = set()
    for i in range(3):
        _connection(protocol, busy_only, float(i), busy=True)
    arrival = _connection(protocol, busy_only, 9.0)
    arrival._make_room()
    assert not arrival.transport.closing


def test_overload_is_503_in_openai_shape_with_retry_after(guarded):
    holders = [connect(guarded, headers_then_nothing(KEY)) for _ in range(2)]  # two requests in flight
    time.sleep(0.3)
    with pytest.raises(openai.InternalServerError) as err:
        client(guarded).models.list()
    assert err.value.status_code == 503 and err.value.code == "server_overloaded", err.value.body
    assert err.value.type == "server_error" and int(err.value.response.headers["retry-after"]) >= 1
    for sock in holders:
        assert error_of(until_closed(sock)[1])[0] == 408
    assert client(guarded).models.list().data  # free again once they timed out


def test_catastrophic_blocklist_regex_is_time_limited(guarded):
    start = time.monotonic()
    r = client(guarded, timeout=20).images.generate(prompt="a" * 40 + "!", response_format="b64_json")
    assert r.data and time.monotonic() - start < 5  # /(a+)+$/ no longer hangs
    start = time.monotonic()
    with pytest.raises(openai.BadRequestError) as err:
        client(guarded, timeout=20).images.generate(prompt="b" * 60 + "!")
    assert time.monotonic() - start < 5
    assert err.value.code == "request_refused" and "(b|bb)+$" in err.value.message, err.value.message
    with pytest.raises(openai.BadRequestError, match="blocked term"):
        client(guarded).images.generate(prompt="a banana")
    assert client(guarded).images.generate(prompt="a red circle").data


def test_in_flight_limit_counts_only_requests_past_the_key_check():
    """Unit stand-in beside the real tests above: keyless requests never take a place, keyed ones do."""
    import asyncio

    from ganvas.core.hosts.server.middleware import LimitInFlight, RequireKey

    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = LimitInFlight(slow_app, limit=1)
    app = RequireKey(limited, api_key=KEY)

    async def call(key):
        statuses = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        headers = [(b"authorization", b"Bearer " + key.encode())] if key else []
        scope = {"type": "http", "method": "POST", "path": "/v1/images/generations", "headers": headers}
        await app(scope, receive, send)
        return statuses[0]

    async def scenario():
        holder = asyncio.create_task(call(KEY))
        await asyncio.sleep(0)
        assert limited.active == 1
        keyless = await asyncio.gather(*(call(None) for _ in range(50)))
        assert keyless == [401] * 50 and limited.active == 1  # refused for the key, not for the load
        assert await call(KEY) == 503  # a second keyed request is over the limit of 1
        release.set()
        assert await holder == 200 and limited.active == 0
        assert await call(KEY) == 200

    asyncio.run(scenario())
