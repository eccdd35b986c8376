"""The `ganvas` command line: in-process through click's runner, plus real processes where the
console script's own startup matters (entry-point plugins, exit codes, one-line errors)."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from conftest import REPO, SHIPPED_MODELS, pixels, run_ganvas
from ganvas.core.cli import main
from ganvas.core.png import read_png_text



def invoke(*args, **kwargs):
    return CliRunner().invoke(main, list(args), catch_exceptions=kwargs.pop("catch_exceptions", True), **kwargs)


def test_version_and_help():
    assert invoke("--version").output == "ganvas 0.1.0\n"
    out = invoke("--help").output
    for command in ("generate", "interpolate", "models", "plugins", "train"):
        assert command in out


def test_generate_writes_pngs_and_never_overwrites(tiny_checkpoint, tmp_path, plugins):
    args = ["generate", "a red circle", "-n", "2", "--seed", "7", "--model", str(tiny_checkpoint),
            "--out", str(tmp_path), "--truncation", "0.9", "--style", "noto"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    names = [line.rsplit("/", 1)[-1] for line in first.output.split()]
    assert names == ["a-red-circle-noto-style-seed7.png", "a-red-circle-noto-style-seed8.png"]
    second = invoke(*args)
    assert [line.rsplit("/", 1)[-1] for line in second.output.split()] == [
        "a-red-circle-noto-style-seed7-1.png", "a-red-circle-noto-style-seed8-1.png"]
    a, b = Image.open(tmp_path / names[0]), Image.open(tmp_path / "a-red-circle-noto-style-seed7-1.png")
    assert np.array_equal(pixels(a), pixels(b))
    assert read_png_text(tmp_path / names[1])["seed"] == "8"


def test_generate_from_prompts_file(tiny_checkpoint, tmp_path, plugins):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\ufeff# my prompts\na blue star\n\n  a green cross  \n", encoding="utf-8")
    result = invoke("generate", "--prompts", str(prompts), "--seed", "1", "--model", str(tiny_checkpoint),
                    "--out", str(tmp_path / "out"))
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
    made = invoke("generate", "a purple diamond", "-n", "3", "--seed", "40", "--style", "noto",
                  "--truncation", "0.7", "--model", str(tiny_checkpoint), "--out", str(tmp_path))
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
    result = invoke("interpolate", "a red apple", "a green apple", "--steps", "3", "--seed", "2",
                    "--model", str(tiny_checkpoint), "--out", str(tmp_path), "--gif")
    assert result.exit_code == 0, result.output
    paths = result.output.split()
    assert [p.rsplit("/", 1)[-1] for p in paths] == [
        "a-red-apple-frame000.png", "a-red-apple-frame001.png", "a-red-apple-frame002.png",
        "a-red-apple-frame003.png", "a-red-apple.gif"]
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
    assert info["ganvas_version"] == "0.1.0"
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
    assert refused.output == ("Error: request refused by request_policy: the prompt contains the blocked term "
                              f"'kitten' (blocklist entry 'kitten' at {blocklist}:1)\n")
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
    made = run_ganvas(["generate", "a cat", "--model", "example-tiny", "--seed", "5", "--param", "grayscale=true",
                       "--out", str(tmp_path)], env)
    assert made.returncode == 0, made.stderr
    text = read_png_text(made.stdout.strip())
    assert text["example_plugin"].startswith("ganvas-example-plugin saw image 0") and text["model"] == "example-tiny"
    assert "plugin broken-hooks failed in ganvas_postprocess: Broken: postprocess exploded" in made.stderr
    refused = run_ganvas(["generate", "a forbidden cat", "--model", "example-tiny"], env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "Error: request refused by example: the example plugin refuses prompts containing 'forbidden'")


def test_sample_sheet_script_draws_prompts_by_seeds(tiny_checkpoint, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "sheet.png"
    subprocess.run([sys.executable, str(REPO / "scripts" / "sample_sheet.py"), "--model",
                    str(tiny_checkpoint), "--prompts", "a red circle", "a blue star", "--seeds", "3", "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    with Image.open(out) as sheet:
        width, height = sheet.size
        rgb = np.asarray(sheet.convert("RGB"))
    assert height == 24 + 2 * (32 + 4)  # header + 2 rows of 32 px tiles
    label_w = width - 3 * (32 + 4)
    first_tile = rgb[24:56, label_w:label_w + 32]
    assert first_tile.std() > 0 and (rgb[:, :label_w] < 128).any()  # a generated tile, and the prompt written
