"""`ganvas train-evaluator` and `ganvas eval` on a captioned dataset with emoji64's layout (train/, test/,
unseen_concepts/), built here from drawn shapes so the suite needs no shared data; plus the metrics alone."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

from ganvas.core.checkpoint import CheckpointError
from ganvas.core.cli import main
from ganvas.core.evaluation import frechet_distance, kernel_inception_distance, r_precision
from ganvas.core.evaluator import load_evaluator

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 210, 20),
           "purple": (140, 40, 190), "orange": (250, 130, 10), "black": (10, 10, 10), "cyan": (20, 200, 210),
           "pink": (250, 120, 190), "brown": (120, 70, 20)}
STYLES = ("solid", "ring")
HELD_OUT = ("red", "green", "blue", "yellow")  # their "ring" design only in test/ (like emoji64's test split)
UNSEEN = ("pink", "brown")                     # in neither train/ nor test/


def draw(colour: str, style: str, jitter: int) -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    d = ImageDraw.Draw(image)
    box = (12 + jitter, 12 + jitter, 50 + jitter, 50 + jitter)
    if style == "solid":
        d.rectangle(box, fill=COLOURS[colour])
    else:
        d.ellipse(box, outline=COLOURS[colour], width=6)
    return image


def write_split(folder, pairs, copies):
    folder.mkdir(parents=True)
    rows = []
    for colour, style in pairs:
        for k in range(copies):
            name = f"{colour}_{style}_{k}.png"
            draw(colour, style, jitter=k - copies // 2).save(folder / name)
            rows.append({"file_name": name, "text": f"{colour} thing; {colour}, thing; {style} style",
                         "label": f"{colour} thing", "style": style})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("emojiish")
    seen = [c for c in COLOURS if c not in UNSEEN]
    write_split(root / "train", [(c, s) for c in seen for s in STYLES if (c, s) not in
                                 [(h, "ring") for h in HELD_OUT]], copies=4)
    write_split(root / "test", [(h, "ring") for h in HELD_OUT], copies=1)
    write_split(root / "unseen_concepts", [(c, s) for c in UNSEEN for s in STYLES], copies=1)
    return root


@pytest.fixture(scope="module")
def evaluator(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluator")
    result = CliRunner().invoke(main, ["train-evaluator", "--data", str(dataset), "--out", str(out),
                                       "--epochs", "25", "--batch", "16", "--threads", "1"])
    assert result.exit_code == 0, result.output
    return out


def test_r_precision_is_one_for_matching_embeddings_and_chance_for_noise():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    concepts = [f"c{i}" for i in range(50)]
    perfect = r_precision(emb, emb, concepts, concepts, emb, draws=2, distractors=9)
    assert perfect["r_precision_at_1"] == 1.0 and perfect["top5"] == 1.0
    noise = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    blind = r_precision(noise, emb, concepts, concepts, emb, draws=20, distractors=9)
    assert 0.02 < blind["r_precision_at_1"] < 0.3  # chance is 1/10


def test_fid_and_kid_are_zero_for_the_same_set_and_grow_with_a_shift():
    torch.manual_seed(0)
    a, b = torch.randn(300, 8), torch.randn(300, 8)
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, b + 1.0) > 5 * frechet_distance(a, b)
    assert kernel_inception_distance(a, b + 1.0) > 10 * abs(kernel_inception_distance(a, b))


def test_evaluator_learns_the_train_split_and_is_saved_as_safetensors(evaluator):
    assert sorted(p.name for p in evaluator.iterdir()) == ["evaluator.json", "evaluator.safetensors"]
    info = json.loads((evaluator / "evaluator.json").read_text())["info"]
    assert info["images"] == 4 * (8 * 2 - 4) and info["batch"] == 16
    assert load_evaluator(evaluator).config.resolution == 64


@pytest.mark.parametrize("split", ["test", "unseen_concepts"])
def test_eval_command_reports_generated_ceiling_floor_fid_and_diversity(dataset, evaluator, tiny_checkpoint,
                                                                        tmp_path, split):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["eval", "--model", str(tiny_checkpoint), "--data", str(dataset), "--split",
                                       split, "--evaluator", str(evaluator), "--threads", "1",
                                       "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["split"] == split and report["images"] == 4
    # The real images of the split are recognised far above chance (3 distractors here: chance 25 %),
    # even for the unseen concepts, whose colour words the text encoder still knows.
    assert report["real"]["r_precision_at_1"] >= 0.75
    for key in ("generated", "shuffled"):
        assert 0.0 <= report[key]["r_precision_at_1"] <= 1.0
    assert report["fid"]["real_vs_real"] >= 0 and report["fid"]["generated_vs_real"] > report["fid"]["real_vs_real"]
    style = report["style"]  # each concept here has two designs: its caption must beat the other design's
    assert style["images"] == 4 and style["chance"] == 0.5 and style["real"] >= 0.75
    diversity = report["diversity"]
    assert diversity["concepts"] == (4 if split == "test" else 2) and diversity["real_style_spread"] > 0
    assert "real (ceiling)" in result.output and f"--split {split}" in result.output


def test_eval_without_an_evaluator_names_the_fix(dataset, tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="train-evaluator"):
        load_evaluator(tmp_path)
    result = CliRunner().invoke(main, ["eval", "--model", str(tiny_checkpoint), "--data", str(dataset)])
    assert result.exit_code != 0 and "train-evaluator" in result.output
