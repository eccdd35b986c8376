"""The `ganvas` command line: in-process through click's runner, plus real processes where the
console script's own startup matters (entry-point plugins, exit codes, one-line errors)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import numpy as np
from click.testing import CliRunner
from conftest import PLUGIN_ENV, REPO, SHIPPED_MODELS, pixels, run_ganvas
from PIL import Image

from ganvas.core.hosts.cli.main import main
from ganvas.core.io.png import read_png_text


def invoke(*args, **kwargs):
    return CliRunner().invoke(main, list(args), catch_exceptions=kwargs.pop("catch_exceptions", True), **kwargs)


def test_version_and_help():
    assert invoke("--version").output == "ganvas 0.2.0\n"
    out = invoke("--help").output
    for command in ("generate", "interpolate", "models", "plugins", "train"):
        assert command in out


def test_generate_writes_pngs_and_never_overwrites(tiny_checkpoint, tmp_path, plugins):
    args = [
        "generate",
        "a red circle",
        "-n",
        "2",
        "--seed",
        "7",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path),
        "--truncation",
        "0.9",
        "--style",
        "noto",
    ]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    names = [line.rsplit("/", 1)[-1] for line in first.output.split()]
    assert names == ["a-red-circle-noto-style-seed7.png", "a-red-circle-noto-style-seed8.png"]
    second = invoke(*args)
    assert [line.rsplit("/", 1)[-1] for line in second.output.split()] == [
        "a-red-circle-noto-style-seed7-1.png",
        "a-red-circle-noto-style-seed8-1.png",
    ]
    a, b = Image.open(tmp_path / names[0]), Image.open(tmp_path / "a-red-circle-noto-style-seed7-1.png")
    assert np.array_equal(pixels(a), pixels(b))
    assert read_png_text(tmp_path / names[1])["seed"] == "8"


def test_generate_from_prompts_file(tiny_checkpoint, tmp_path, plugins):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\ufeff# my prompts\na blue star\n\n  a green cross  \n", encoding="utf-8")
    result = invoke(
        "generate",
        "--prompts",
        str(prompts),
        "--seed",
        "1",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path / "out"),
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a-blue-star-seed1.png", "a-green-cross-seed1.png"]


def test_malformed_prompts_file_is_one_line_naming_the_line(tiny_checkpoint, tmp_path, plugins):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a red circle\nok\ncaf\xe9 latin-1\n")
    result = invoke("generate", "--prompts", str(bad), "--model", str(tiny_checkpoint))
    assert result.exit_code == 1
    assert result.output == f"Error: {bad} line 3: not UTF-8 text (byte 0xe9 at column 4)\n"
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    result = invoke("generate", "--prompts", str(binary), "--model", str(tiny_checkpoint))
    assert result.exit_code == 1 and "line 3: binary data (NUL byte)" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_from_png_reproduces_the_image(tiny_checkpoint, tmp_path, plugins):
    made = invoke(
        "generate",
        "a purple diamond",
        "-n",
        "3",
        "--seed",
        "40",
        "--style",
        "noto",
        "--truncation",
        "0.7",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path),
    )
    original = made.output.split()[2]
    replay = invoke("generate", "--from-png", original, "--out", str(tmp_path / "replay"))
    assert replay.exit_code == 0, replay.output
    copy = replay.output.split()[0]
    assert copy.endswith("/replay/a-purple-diamond-noto-style-seed42.png")
    assert np.array_equal(pixels(Image.open(original)), pixels(Image.open(copy)))
    assert read_png_text(copy)["parameters"] == read_png_text(original)["parameters"]
    conflict = invoke("generate", "--from-png", original, "--seed", "3")
    assert conflict.exit_code == 2 and "cannot be combined with seed" in conflict.output
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    result = invoke("generate", "--from-png", str(plain))
    assert result.exit_code == 1 and "no ganvas metadata" in result.output


def test_interpolate_command_and_frame_replay(tiny_checkpoint, tmp_path, plugins):
    result = invoke(
        "interpolate",
        "a red apple",
        "a green apple",
        "--steps",
        "3",
        "--seed",
        "2",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path),
        "--gif",
    )
    assert result.exit_code == 0, result.output
    paths = result.output.split()
    assert [p.rsplit("/", 1)[-1] for p in paths] == [
        "a-red-apple-frame000.png",
        "a-red-apple-frame001.png",
        "a-red-apple-frame002.png",
        "a-red-apple-frame003.png",
        "a-red-apple.gif",
    ]
    assert Image.open(paths[-1]).n_frames == 4
    replay = invoke("generate", "--from-png", paths[1], "--out", str(tmp_path / "r"))
    assert replay.exit_code == 0, replay.output
    assert replay.output.split()[0].endswith("/r/a-red-apple-frame001.png")
    assert np.array_equal(pixels(Image.open(paths[1])), pixels(Image.open(replay.output.split()[0])))
    seeds = invoke("interpolate", "a star", "--seeds", "1,x")
    assert seeds.exit_code == 2 and "comma-separated integers" in seeds.output


def test_models_command(tiny_checkpoint, monkeypatch, plugins):
    monkeypatch.setenv("GANVAS_MODELS_PATH", str(tiny_checkpoint.parent))
    monkeypatch.setenv("GANVAS_MODEL", "tiny")
    out = invoke("models").output
    assert f"tiny (default)\t32px\t{tiny_checkpoint}" in out.splitlines()
    rows = {row["name"]: row for row in json.loads(invoke("models", "--json").output)}
    assert rows["tiny"]["resolution"] == 32 and rows["tiny"]["plugin"] == "default_backend"
    assert set(rows) == {"tiny", *SHIPPED_MODELS}


def test_plugins_command_lists_builtins_with_all(plugins):
    info = json.loads(invoke("plugins", "--all").output)
    assert info["ganvas_version"] == "0.2.0"
    builtins = {p["name"]: p["hooks"] for p in info["plugins"]}
    assert builtins["request_policy"] == ["ganvas_check_request"]
    assert json.loads(invoke("plugins").output)["plugins"] == []


def test_errors_are_one_line_unless_debug(tiny_checkpoint, plugins, tmp_path, monkeypatch):
    result = invoke("generate", "x", "--model", "no-such-model")
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown model 'no-such-model'") and result.output.count("\n") == 1
    debug = invoke("generate", "x", "--model", "no-such-model", "--debug", catch_exceptions=True)
    assert type(debug.exception).__name__ == "ModelNotFound"
    debug = invoke("--debug", "generate", "x", "--model", "no-such-model")
    assert type(debug.exception).__name__ == "ModelNotFound"
    blocklist = tmp_path / "block.txt"
    blocklist.write_text("kitten\n")
    monkeypatch.setenv("GANVAS_BLOCKLIST", str(blocklist))
    refused = invoke("generate", "a kitten", "--model", str(tiny_checkpoint), "--out", str(tmp_path))
    assert refused.exit_code == 1
    assert refused.output == (
        "Error: request refused by request_policy: the prompt contains the blocked term "
        f"'kitten' (blocklist entry 'kitten' at {blocklist}:1)\n"
    )
    assert invoke("generate").exit_code == 2


def test_real_process_with_installed_plugins(installed_plugins, tiny_checkpoint, tmp_path):
    """The console script in a fresh process, the example plugin and the broken one found through their
    real entry points: commands added, broken plugin named, generation unaffected."""
    env = {"PYTHONPATH": str(installed_plugins)}
    hello = run_ganvas(["example-hello", "artist"], env)
    assert hello.returncode == 0 and hello.stdout == "hello artist from ganvas-example-plugin\n"
    assert "plugin broken-import (from ganvas-broken-plugin 0.0.1) failed to load: ModuleNotFoundError" in hello.stderr
    assert "plugin broken-hooks failed in ganvas_register_commands" in hello.stderr
    listed = json.loads(run_ganvas(["plugins"], env).stdout)
    assert {p["name"] for p in listed["plugins"]} == {"example", "broken-hooks"}
    made = run_ganvas(
        [
            "generate",
            "a cat",
            "--model",
            "example-tiny",
            "--seed",
            "5",
            "--param",
            "grayscale=true",
            "--out",
            str(tmp_path),
        ],
        env,
    )
    assert made.returncode == 0, made.stderr
    text = read_png_text(made.stdout.strip())
    assert text["example_plugin"].startswith("ganvas-example-plugin saw image 0") and text["model"] == "example-tiny"
    assert "plugin broken-hooks failed in ganvas_postprocess: Broken: postprocess exploded" in made.stderr
    refused = run_ganvas(["generate", "a forbidden cat", "--model", "example-tiny"], env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "Error: request refused by example: the example plugin refuses prompts containing 'forbidden'"
    )


def test_sample_sheet_script_draws_prompts_by_seeds(tiny_checkpoint, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "sheet.png"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "sample_sheet.py"),
            "--model",
            str(tiny_checkpoint),
            "--prompts",
            "a red circle",
            "a blue star",
            "--seeds",
            "3",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Image.open(out) as sheet:
        width, height = sheet.size
        rgb = np.asarray(sheet.convert("RGB"))
    assert height == 24 + 2 * (32 + 4)  # header + 2 rows of 32 px tiles
    label_w = width - 3 * (32 + 4)
    first_tile = rgb[24:56, label_w : label_w + 32]
    assert first_tile.std() > 0 and (rgb[:, :label_w] < 128).any()  # a generated tile, and the prompt written


# --- limits: prompts files, interpolation frames, mistyped --from-png metadata --------------------------------


def _run_capped(args: list[str], memory: int = 1 << 30, timeout: int = 120):
    """The real command line in a process whose address space is capped: an unbounded read or list
    fails fast with MemoryError there instead of eating the machine."""

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}
    return subprocess.run(
        [sys.executable, "-m", "ganvas.core.hosts.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        preexec_fn=cap,
    )


def test_prompts_from_dev_zero_are_refused_at_once_as_binary(tmp_path):
    done = _run_capped(["generate", "--prompts", "/dev/zero", "--model", "no-such-model", "--out", str(tmp_path)])
    assert done.returncode == 1, done.stderr
    assert done.stderr == "Error: /dev/zero line 1: binary data (NUL byte); expected one text prompt per line\n"


def test_prompts_file_limits_line_length_prompt_count_and_size(tmp_path):
    from ganvas.core.hosts.cli.main import MAX_PROMPT_LINE_BYTES
    from ganvas.core.hosts.watch.jobs import Limits

    limits = Limits()
    cases = {
        "long.txt": (
            b"ok\n" + b"a" * (5 << 20),
            f"line 2: longer than {MAX_PROMPT_LINE_BYTES} bytes; expected one prompt per line",
        ),
        "many.txt": (
            b"p\n" * (limits.max_prompts + 1),
            f"line {limits.max_prompts + 1}: more than {limits.max_prompts} prompts in one file; split the file",
        ),
        "big.txt": (
            (b"#" * 1000 + b"\n") * (limits.max_bytes // 1000 + 10) + b"a prompt\n",
            f"larger than {limits.max_bytes} bytes (at line {limits.max_bytes // 1001 + 1}); split the file",
        ),
        "late-nul.txt": (b"caf\xe9\n" * 3 + b"x\x00\n", "line 4: binary data (NUL byte)"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        result = invoke("generate", "--prompts", str(path), "--model", "no-such-model")
        assert result.exit_code == 1, (name, result.output)
        assert result.output.startswith(f"Error: {path}") and expected in result.output, (name, result.output)
        assert result.output.count("\n") == 1
    exact = tmp_path / "exact.txt"  # the limits themselves are allowed
    exact.write_bytes((b"b" * MAX_PROMPT_LINE_BYTES + b"\r\n") + b"p\r" * (limits.max_prompts - 1))
    result = invoke("generate", "--prompts", str(exact), "--model", "no-such-model")
    assert result.output.startswith("Error: unknown model 'no-such-model'"), result.output


def _rewrite_record(source, target, change):
    """Copy a ganvas PNG with its `ganvas` metadata record edited by change(record)."""
    from ganvas.core.io.png import save_png

    text = read_png_text(source)
    record = json.loads(text["ganvas"])
    change(record)
    with Image.open(source) as image:
        save_png(image, target, {"ganvas": json.dumps(record)})
    return target


def test_interpolation_frame_count_is_checked_before_anything_is_built(tiny_checkpoint, tmp_path, plugins):
    """--steps 10^9 and a crafted PNG asking for 10^9 frames: refused in one line before the frame list
    exists (the old code built it first: MemoryError here, gigabytes on a machine without a cap)."""
    steps = _run_capped(
        ["interpolate", "a", "b", "--steps", "1000000000", "--model", str(tiny_checkpoint), "--out", str(tmp_path)],
        memory=3 << 30,
    )
    assert steps.returncode == 2, steps.stderr
    assert steps.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for '--steps': 1000000000 steps make 1000000001 frames; the limit is 100 images "
        "per request (GANVAS_MAX_N)"
    )
    made = invoke(
        "interpolate",
        "a red apple",
        "a green apple",
        "--steps",
        "2",
        "--seed",
        "2",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path),
    )
    assert made.exit_code == 0, made.output
    frame = made.output.split()[1]

    def huge(record):
        record["request"]["extra"]["interpolate"]["steps"] = 10**9
        del record["frame"]  # no frame: the whole interpolation is replayed

    crafted = _rewrite_record(frame, tmp_path / "crafted.png", huge)
    replay = _run_capped(["generate", "--from-png", str(crafted), "--out", str(tmp_path / "r")], memory=3 << 30)
    assert replay.returncode == 1, replay.stderr
    assert replay.stderr.strip().splitlines()[-1] == (
        f"Error: {crafted}: the stored interpolation makes 1000000001 frames; the limit is 100 images per "
        f"request (GANVAS_MAX_N)"
    )
    assert not (tmp_path / "r").exists()


def test_mistyped_from_png_metadata_names_the_file_and_the_field(tiny_checkpoint, tmp_path, plugins):
    made = invoke(
        "generate", "a purple diamond", "--seed", "4", "--model", str(tiny_checkpoint), "--out", str(tmp_path)
    )
    image = made.output.split()[0]
    morph = invoke(
        "interpolate",
        "a red apple",
        "a green apple",
        "--steps",
        "2",
        "--seed",
        "2",
        "--model",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path),
    )
    frame = morph.output.split()[1]

    def setter(path, value):
        def change(record):
            *parents, last = path.split(".")
            holder = record
            for key in parents:
                holder = holder[key]
            if value is KeyError:
                del holder[last]
            else:
                holder[last] = value

        return change

    cases = [
        (image, "request.n", "3"),
        (image, "request.seed", "x"),
        (image, "request.model", 5),
        (image, "request.truncation", True),
        (image, "request.prompt", KeyError),
        (image, "request.extra", "interpolate"),
        (image, "request.size", 64.0),
        (image, "model", "tiny"),
        (image, "model.path", ["a"]),
        (frame, "frame", "1"),
        (frame, "request.extra.interpolate", [1]),
        (frame, "request.extra.interpolate.steps", "3"),
        (frame, "request.extra.interpolate.prompts", "a red apple"),
        (frame, "request.extra.interpolate.seeds", [2.5]),
    ]
    for number, (source, field, value) in enumerate(cases):
        crafted = _rewrite_record(source, tmp_path / f"crafted{number}.png", setter(field, value))
        result = invoke("generate", "--from-png", str(crafted), "--out", str(tmp_path / "r"))
        assert result.exit_code == 1, (field, result.output)
        assert result.output.startswith(f"Error: {crafted}: ganvas metadata field '{field}'"), (field, result.output)
        assert result.output.count("\n") == 1, result.output


def test_broken_checkpoints_are_one_line_errors_naming_file_and_field(tiny_checkpoint, tmp_path, plugins):
    """Mistyped config.json values, weights of another shape, NaN weights: `ganvas generate` says which
    file and which field or tensor, in one line, instead of a raw TypeError or a black image."""
    import shutil

    from safetensors.torch import load_file, save_file

    def broken(name, **config):
        folder = shutil.copytree(tiny_checkpoint, tmp_path / name)
        data = json.loads((folder / "config.json").read_text())
        data["generator"].update(config)
        (folder / "config.json").write_text(json.dumps(data))
        return folder

    nan = broken("nan")
    state = load_file(str(nan / "model.safetensors"))
    state["to_rgb.bias"][1] = float("nan")
    save_file(state, str(nan / "model.safetensors"))
    cases = {
        broken("text", z_dim="16"): "config.json: bad generator config ('z_dim' must be an integer, got '16')",
        broken("float", cond_dim=32.0): "config.json: bad generator config ('cond_dim' must be an integer, got 32.0)",
        broken("bool", max_mult=True): "config.json: bad generator config ('max_mult' must be an integer, got True)",
        broken("shape", z_dim=8): "model.safetensors: weights do not fit config.json: tensor 'mapping.0.weight' is "
        "[32, 400] in the file, config.json makes [32, 392]",
        nan: "model.safetensors: tensor 'to_rgb.bias' holds NaN or infinite values",
    }
    for folder, expected in cases.items():
        result = invoke("generate", "a cat", "--model", str(folder), "--out", str(tmp_path / "out"))
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith(f"Error: model {folder.name!r}: {folder}/{expected}"), result.output
    assert not (tmp_path / "out").exists()


def test_train_names_its_render_processes_apart_from_serves_worker_threads():
    """`train --workers` (0.1) and `serve --workers` meant different things; train's is --render-processes now,
    and the old spelling still parses to the same option."""
    from ganvas.core.hosts.cli.train import train_command

    for flag in ("--render-processes", "--workers"):
        ctx = train_command.make_context("train", ["--data", "shapes", "--out", "run", flag, "3"])
        assert ctx.params["workers"] == 3
    assert "--render-processes" in CliRunner().invoke(main, ["train", "--help"]).output
