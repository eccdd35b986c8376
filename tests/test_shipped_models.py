"""The checkpoints shipped in models/: loadable by name, documented, licensed, and (emoji64) evaluated by the
project's own command with numbers that reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SHIPPED_MODELS

from ganvas.core.evaluation.evaluator import load_evaluator
from ganvas.core.hosts.cli.main import main
from ganvas.core.pipeline import Pipeline
from ganvas.core.requests import DEFAULT_MODEL
from ganvas.plugins.default_backend import MODELS_DIR

EMOJI = MODELS_DIR / "emoji64"
EMOJI_STYLES = ["noto", "twemoji", "fluent-flat", "fluent-color", "emojione", "noto-v1", "fxemoji", "streamline"]
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "emoji64a"


def test_the_default_model_is_shipped():
    assert DEFAULT_MODEL in SHIPPED_MODELS


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_loads_by_name_and_has_a_card(name, plugins):
    pipe = Pipeline.load(name, plugins=plugins)
    result = pipe("a prompt", n=2, seed=0)
    assert [im.size for im in result.images] == [(pipe.resolution, pipe.resolution)] * 2
    card = (MODELS_DIR / name / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: ganvas") and "## Evaluation" in card and "ganvas eval" in card
    assert "## Known limits" in card and "## Intended use" in card


def test_emoji_model_offers_its_styles_and_carries_its_licences(plugins):
    pipe = Pipeline.load("emoji64", plugins=plugins)
    assert pipe.resolution == 64 and sorted(pipe.info.styles) == sorted(EMOJI_STYLES)
    image = pipe("fox", seed=1, style="twemoji").images[0]
    alpha = image.getchannel("A")
    # Transparent: the corners (background) are clear, the middle (the emoji) is opaque.
    assert image.mode == "RGBA" and pipe.info.channels == 4
    assert alpha.getpixel((0, 0)) < 16 and alpha.getpixel((32, 32)) > 240
    assert pipe("fox", seed=1, style="twemoji").request.prompt == "fox; twemoji style"
    card = (EMOJI / "README.md").read_text(encoding="utf-8")
    for style in EMOJI_STYLES:
        assert f"| `{style}` |" in card
    for licence in (
        "Apache-2.0.txt",
        "CC-BY-4.0.txt",
        "MIT-fluentui-emoji.txt",
        "MIT-emojibase-data.txt",
        "Unicode-3.0-CLDR.txt",
    ):
        assert (EMOJI / "LICENSES" / licence).stat().st_size > 300
    assert "https://creativecommons.org/licenses/by/4.0/" in card and "Copyright Google Inc." in card
    assert load_evaluator(EMOJI).config.resolution == 64  # the evaluator the card's numbers come from


def test_emoji_card_numbers_are_the_saved_evaluation():
    numbers = json.loads((EMOJI / "evaluation.json").read_text())
    card = (EMOJI / "README.md").read_text(encoding="utf-8")
    for split in ("validation", "test", "unseen_concepts"):
        r = numbers[split]
        assert f"R@1 {r['generated']['r_precision_at_1'] * 100:5.1f}%" in card
        assert f"R@1 {r['generated_typed']['r_precision_at_1'] * 100:5.1f}%" in card
        assert f"FID (evaluator space) {r['fid']['generated_vs_real']:.4g}" in card
        assert f"--split {split} --seed 0" in card


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data/emoji64a (CI has it beside the clone)")
def test_emoji_evaluation_reproduces_on_unseen_concepts(tmp_path):
    """Re-run the card's command: the same seeds and evaluator give the same numbers."""
    out = tmp_path / "unseen.json"
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--model",
            "emoji64",
            "--data",
            str(DATA),
            "--split",
            "unseen_concepts",
            "--seed",
            "0",
            "--threads",
            "1",
            "--json-out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    fresh, saved = json.loads(out.read_text()), json.loads((EMOJI / "evaluation.json").read_text())["unseen_concepts"]
    for key in ("generated", "generated_typed", "real", "shuffled"):
        assert fresh[key]["r_precision_at_1"] == pytest.approx(saved[key]["r_precision_at_1"], abs=1e-9)
    assert fresh["fid"]["generated_vs_real"] == pytest.approx(saved["fid"]["generated_vs_real"], rel=1e-4)
    for key in ("name_ratio", "typed_ratio"):
        assert fresh["diversity"][key] == pytest.approx(saved["diversity"][key], rel=1e-4)
