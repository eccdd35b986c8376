"""`ganvas train`, `train-evaluator` and `eval` read data through the registered dataset formats
(`ganvas_register_datasets`) and embed captions with the registered text encoder the model names
(`ganvas_register_text_encoders`): a test plugin's own format and encoder, end to end through the real CLI."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from click.testing import CliRunner

from ganvas.core.datasets.folders import CaptionedImages
from ganvas.core.hookspecs import hookimpl
from ganvas.core.hosts.cli.main import main
from ganvas.core.io.checkpoint import load_generator, read_config

torch.set_num_threads(1)

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 210, 20)}
DESIGNS = ("solid", "framed")
HELD_OUT = {("red", "framed"), ("blue", "framed")}  # only in the "test" split


def colour_image(colour: str, design: str, resolution: int, k: int) -> torch.Tensor:
    """(3, R, R) uint8: a solid colour, or the colour framed in white; `k` shifts the shade a little."""
    rgb = torch.tensor([max(0, c - 6 * k) for c in COLOURS[colour]], dtype=torch.uint8)
    image = rgb[:, None, None].expand(3, resolution, resolution).clone()
    if design == "framed":
        edge = resolution // 4
        image[:, :edge], image[:, -edge:], image[:, :, :edge], image[:, :, -edge:] = 255, 255, 255, 255
    return image


class TinyColours:
    """A test plugin: the "tiny-colours" dataset format (in memory; `tiny-colours:N` = N shades per image) and the
    "tiny-words" text encoder (16-d bag of hashed words)."""

    def __init__(self):
        self.calls: list[dict] = []

    def load(self, path, resolution, split=None, subset="all", channels=None):
        # No `seed`, `size` or `workers` here: a loader receives only the options its signature names.
        self.calls.append(
            {"path": path, "resolution": resolution, "split": split, "subset": subset, "channels": channels}
        )
        copies = int(path or 2)
        pairs = [(c, d) for c in COLOURS for d in DESIGNS if ((c, d) in HELD_OUT) == (split == "test")]
        captions, index, labels, styles, images = [], [], [], [], []
        for colour, design in pairs:
            text = f"{colour} thing; {design} style"
            captions.append(text)
            for k in range(copies):
                images.append(colour_image(colour, design, resolution, k))
                index.append(len(captions) - 1)
                labels.append(f"{colour} thing")
                styles.append(design)
        return CaptionedImages(
            torch.stack(images),
            captions,
            torch.tensor(index),
            [],
            f"tiny-colours {split or 'all'}",
            styles=list(DESIGNS),
            labels=labels,
            image_styles=styles,
        )

    @hookimpl
    def ganvas_register_datasets(self, register):
        register("tiny-colours", self.load, description="solid and framed colours, built in memory")

    @hookimpl
    def ganvas_register_text_encoders(self, register):
        register("tiny-words", TinyWords)


class TinyWords:
    """Deterministic 16-d sentence vectors: the normalised sum of one fixed random vector per word."""

    def encode(self, texts):
        rows = []
        for text in texts:
            vector = torch.zeros(16)
            for word in text.replace(";", " ").split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                vector += torch.randn(16, generator=torch.Generator().manual_seed(seed))
            rows.append(vector)
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


@pytest.fixture
def tiny_colours(plugins, monkeypatch, tmp_path):
    monkeypatch.setenv("GANVAS_CACHE", str(tmp_path / "cache"))  # the tiny-words vectors stay in the test
    plugin = TinyColours()
    assert plugins.register(plugin, "tiny-colours")
    return plugin


def _invoke(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_a_plugin_dataset_and_text_encoder_train_and_evaluate_end_to_end(tiny_colours, tmp_path):
    run, ev = tmp_path / "run", tmp_path / "evaluator"
    result = _invoke(
        [
            "train",
            "--data",
            "tiny-colours:3",
            "--out",
            str(run),
            "--resolution",
            "32",
            "--steps",
            "4",
            "--batch",
            "4",
            "--preset",
            "tiny",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--log-every",
            "2",
            "--sample-every",
            "4",
            "--checkpoint-every",
            "4",
            "--no-progress",
            "--text-encoder",
            "tiny-words",
        ]
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["step"] == 4 and out["model"] == str(run / "model")
    assert tiny_colours.calls[0] == {"path": "3", "resolution": 32, "split": None, "subset": "all", "channels": None}
    # The model records the plugin's encoder (name and its 16-d vectors) and the --data spec it was trained on.
    config = read_config(run / "model")
    assert config["text_encoder"] == {"name": "tiny-words", "dim": 16}
    generator, data = load_generator(run / "model")
    assert generator.config.text_encoder == "tiny-words" and data["trained"]["data"] == "tiny-colours:3"
    assert (tmp_path / "cache" / "text-embeddings" / "tiny-words.safetensors").exists()

    tiny_colours.calls.clear()
    _invoke(
        [
            "train-evaluator",
            "--data",
            "tiny-colours:3",
            "--out",
            str(ev),
            "--epochs",
            "2",
            "--batch",
            "8",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--text-encoder",
            "tiny-words",
        ]
    )
    assert tiny_colours.calls == [{"path": "3", "resolution": 64, "split": "train", "subset": "all", "channels": 3}]
    assert json.loads((ev / "evaluator.json").read_text())["config"]["text_dim"] == 16

    tiny_colours.calls.clear()
    report_file = tmp_path / "report.json"
    result = _invoke(
        [
            "eval",
            "--model",
            str(run / "model"),
            "--data",
            "tiny-colours:3",
            "--split",
            "test",
            "--evaluator",
            str(ev),
            "--threads",
            "1",
            "--json-out",
            str(report_file),
        ]
    )
    # The split to judge and train/ (where a test concept's other design lives), both RGB at the model's size.
    assert [(c["split"], c["resolution"], c["channels"]) for c in tiny_colours.calls] == [
        ("test", 32, 3),
        ("train", 32, 3),
    ]
    report = json.loads(report_file.read_text())
    assert report["split"] == "test" and report["images"] == 2 * 3 and report["resolution"] == 32
    # Each held-out concept has its other design in train/: style and diversity see both.
    assert report["style"]["images"] == 6 and report["style"]["chance"] == 0.5
    assert report["diversity"]["concepts"] == 2
    assert "--data tiny-colours:3 --split test" in result.stdout


def test_resume_keeps_the_runs_text_encoder(tiny_colours, tmp_path):
    run = tmp_path / "run"
    common = [
        "--data",
        "tiny-colours:2",
        "--out",
        str(run),
        "--resolution",
        "32",
        "--batch",
        "4",
        "--preset",
        "tiny",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--log-every",
        "1",
        "--sample-every",
        "2",
        "--checkpoint-every",
        "1",
        "--no-progress",
    ]
    _invoke(["train", *common, "--steps", "1", "--text-encoder", "tiny-words"])
    _invoke(["train", *common, "--steps", "2", "--resume"])  # no --text-encoder: the run's own
    assert json.loads((run / "training_state.json").read_text())["info"]["step"] == 2
    assert read_config(run / "model")["text_encoder"]["name"] == "tiny-words"


@pytest.mark.parametrize(
    "command",
    [["train", "--out", "never-written"], ["eval", "--model", "tiny"], ["train-evaluator", "--out", "never-written"]],
)
def test_an_unknown_dataset_is_one_line_naming_the_registered_formats(
    tiny_colours, tiny_checkpoint, tmp_path, monkeypatch, command
):
    monkeypatch.chdir(tmp_path)
    command = [tiny_checkpoint.as_posix() if a == "tiny" else a for a in command]
    result = CliRunner().invoke(main, [*command, "--data", "no-such-format"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "unknown dataset 'no-such-format'" in lines[0]
    assert "registered: imagefolder, shapes, sidecar, tiny-colours" in lines[0]
    assert not (tmp_path / "never-written").exists()


def test_an_unknown_text_encoder_names_the_registered_ones(tiny_colours, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            "tiny-colours",
            "--out",
            str(tmp_path / "run"),
            "--resolution",
            "32",
            "--text-encoder",
            "nope",
        ],
    )
    assert result.exit_code != 0
    assert "text encoder 'nope' is not provided by any plugin (available: minilm, tiny-words)" in result.output
