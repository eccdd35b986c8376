"""The quality-push pieces: transparent (RGBA) images end to end, the validation hold-out, prompt forms and
the negatives that make D read the words, minibatch-stddev, and a training run that logs validation.

Fixtures are drawn here (a coloured shape on a transparent background, two designs per concept), so the
default suite needs no shared data."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from PIL import Image, ImageDraw

from ganvas.core.datasets.folders import (
    CAPTION_FORMS,
    image_channels,
    load_image,
    load_imagefolder,
    typed_prompt,
    validation_holdout,
)
from ganvas.core.io.images import from_uint8, on_white, to_pil
from ganvas.core.model.networks import minibatch_stddev
from ganvas.core.training.sampling import CaptionSampler, parse_mix

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 190),
    "orange": (250, 130, 10),
}
DESIGNS = ("solid", "ring", "dot")


def draw(colour: str, design: str) -> Image.Image:
    image = Image.new("RGBA", (64, 64), (255, 0, 255, 0))  # garbage colour under alpha 0, as SVG renders have
    d = ImageDraw.Draw(image)
    rgb = COLOURS[colour]
    if design == "solid":
        d.rectangle((12, 12, 50, 50), fill=rgb + (255,))
    elif design == "ring":
        d.ellipse((12, 12, 50, 50), outline=rgb + (255,), width=6)
    else:
        d.ellipse((24, 24, 40, 40), fill=rgb + (160,))
    return image


@pytest.fixture(scope="module")
def rgba_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rgba") / "train"
    folder.mkdir()
    rows = []
    for colour in COLOURS:
        for design in DESIGNS:
            name = f"{colour}_{design}.png"
            draw(colour, design).save(folder / name)
            rows.append(
                {
                    "file_name": name,
                    "text": f"{colour} thing; {colour}, shape; {design} style",
                    "label": f"{colour} thing",
                    "style": design,
                }
            )
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


# --- transparency ----------------------------------------------------------------------------------------------


def test_rgba_loads_premultiplied_and_comes_back_as_straight_alpha(tmp_path):
    image = Image.new("RGBA", (2, 2))
    image.putpixel((0, 0), (200, 100, 50, 128))
    image.putpixel((1, 0), (255, 0, 0, 0))  # invisible red: must not leak into training
    image.save(tmp_path / "p.png")
    arr = load_image(tmp_path / "p.png", 2, channels=4)
    assert arr[0, 0].tolist() == [100, 50, 25, 128] and arr[0, 1].tolist() == [0, 0, 0, 0]
    back = to_pil(from_uint8(torch.from_numpy(arr).permute(2, 0, 1)[None]))[0]
    assert back.mode == "RGBA"
    r, g, b, a = back.getpixel((0, 0))
    assert a == 128 and max(abs(r - 200), abs(g - 100), abs(b - 50)) <= 2  # premultiplying loses < 1 level x 2
    assert back.getpixel((1, 0)) == (0, 0, 0, 0)
    white = (on_white(from_uint8(torch.from_numpy(arr).permute(2, 0, 1)[None].float())) + 1) * 127.5
    # Over white: 200 * 0.5 + 255 * 0.5 = 227.5; a fully transparent pixel is white.
    assert white[0, :, 0, 0].round().tolist() == pytest.approx([227, 177, 152], abs=1)
    assert white[0, :, 0, 1].round().tolist() == [255, 255, 255]
    assert load_image(tmp_path / "p.png", 2)[0, 1].tolist() == [255, 255, 255]  # RGB loading composites on white


def test_a_transparent_imagefolder_loads_as_rgba_with_its_prompt_forms(rgba_folder):
    assert image_channels(rgba_folder, ["red_solid.png"]) == 4
    data = load_imagefolder(rgba_folder, 64)
    assert data.images.shape == (18, 4, 64, 64) and data.images[:, 3].max() == 255 and data.images[:, 3].min() == 0
    assert data.caption_forms.shape == (18, len(CAPTION_FORMS))
    first = [data.captions[i] for i in data.caption_forms[0].tolist()]
    assert first == ["red thing; red, shape; solid style", "red thing; solid style", "red thing"]
    assert typed_prompt("red thing", " solid ") == "red thing; solid style" and typed_prompt("x", None) == "x"
    assert load_imagefolder(rgba_folder, 64, channels=3).images.shape[1] == 3


# --- validation hold-out ---------------------------------------------------------------------------------------


def test_validation_holdout_is_deterministic_about_five_percent_and_keeps_every_concept_in_train():
    rows = [
        {"file_name": f"{c:04d}_{s}.png", "text": f"c{c} {s}", "label": f"c{c}", "style": s}
        for c in range(400)
        for s in ("a", "b", "c")
    ]
    held = validation_holdout(rows)
    assert held == validation_holdout(list(reversed(rows)))  # order does not matter
    assert 0.04 * len(rows) < len(held) < 0.06 * len(rows)
    kept = Counter(r["label"] for r in rows if r["file_name"] not in held)
    assert all(kept[r["label"]] >= 1 for r in rows)  # a held-out pair's concept is still trained on
    singles = [{"file_name": f"{c}.png", "text": f"c{c}", "label": f"c{c}"} for c in range(200)]
    assert validation_holdout(singles) == set()  # a concept with one image is never held out


def test_train_and_validation_subsets_split_the_folder(rgba_folder):
    rows = [json.loads(line) for line in (rgba_folder / "metadata.jsonl").read_text().splitlines()]
    held = validation_holdout(rows)
    assert held == {"blue_dot.png"}  # a hash of the file name: fixed for this fixture
    train = load_imagefolder(rgba_folder, 64, subset="train")
    val = load_imagefolder(rgba_folder, 64, subset="validation")
    assert len(train) + len(val) == len(rows) and len(val) == len(held)


# --- prompt forms and negatives --------------------------------------------------------------------------------


def _sampler(data, forms, negatives):
    return CaptionSampler(
        data,
        parse_mix(forms, CAPTION_FORMS, "full"),
        parse_mix(negatives, ("random", "style", "concept"), "random"),
        "cpu",
    )


def test_style_swaps_keep_the_concept_and_concept_swaps_keep_the_design(rgba_folder):
    data = load_imagefolder(rgba_folder, 64)
    rng = torch.Generator().manual_seed(0)
    idx = torch.arange(len(data)).repeat(20)

    def parts(caption_id):
        text = data.captions[caption_id]
        label = text.split(";")[0]
        style = text.rsplit(";", 1)[1].strip().removesuffix(" style") if ";" in text else None
        return label, style

    caps, mis = _sampler(data, "full:1", "style:1").draw(idx, rng)
    swapped = [(parts(c), parts(m)) for c, m in zip(caps.tolist(), mis.tolist()) if c != m]
    assert len(swapped) > 0.5 * len(idx)  # 2 of 3 draws pick another design; the rest fall back to random
    style_swaps = [(a, b) for a, b in swapped if a[0] == b[0]]
    assert len(style_swaps) > 0.5 * len(idx) and all(a[1] != b[1] for a, b in style_swaps)

    caps, mis = _sampler(data, "full:1", "concept:1").draw(idx, rng)
    pairs = [(parts(c), parts(m)) for c, m in zip(caps.tolist(), mis.tolist())]
    assert sum(a[1] == b[1] and a[0] != b[0] for a, b in pairs) > 0.7 * len(idx)  # 5 of 6 draws are another concept

    caps, mis = _sampler(data, "name:1", "style:1").draw(idx, rng)
    names = {data.captions[c] for c in caps.tolist()}
    assert names == {f"{c} thing" for c in COLOURS}
    # A bare name has no style word to swap: its style negative is another design's typed prompt.
    swapped = [data.captions[m] for c, m in zip(caps.tolist(), mis.tolist()) if c != m]
    assert any(s.endswith(" style") and s.count(";") == 1 for s in swapped)


def test_prompt_forms_are_drawn_in_the_asked_proportions(rgba_folder):
    data = load_imagefolder(rgba_folder, 64)
    caps, _ = _sampler(data, "full:0.5,typed:0.3,name:0.2", "").draw(
        torch.arange(18).repeat(300), torch.Generator().manual_seed(1)
    )
    kinds = Counter(2 - data.captions[c].count(";") for c in caps.tolist())  # 2 ";" full, 1 typed, 0 name
    total = sum(kinds.values())
    assert kinds[0] / total == pytest.approx(0.5, abs=0.03) and kinds[1] / total == pytest.approx(0.3, abs=0.03)


def test_mixes_name_their_mistakes():
    assert parse_mix("", CAPTION_FORMS, "full") == {"full": 1.0}
    assert parse_mix("full:3,name:1", CAPTION_FORMS, "full") == {"full": 0.75, "name": 0.25}
    with pytest.raises(ValueError, match="unknown kind 'typo'"):
        parse_mix("typo:1", CAPTION_FORMS, "full")
    with pytest.raises(ValueError, match="not a number"):
        parse_mix("full:x", CAPTION_FORMS, "full")
    with pytest.raises(ValueError, match="add up to 0"):
        parse_mix("full:0", CAPTION_FORMS, "full")


def test_forms_and_swaps_need_label_and_style_metadata(rgba_folder):
    data = load_imagefolder(rgba_folder, 64)
    data.caption_forms = None
    with pytest.raises(ValueError, match="label"):
        _sampler(data, "typed:1", "")
    with pytest.raises(ValueError, match="label"):
        _sampler(data, "", "style:1")


# --- the discriminator's view of a batch --------------------------------------------------------------------------


def test_minibatch_stddev_is_zero_for_a_collapsed_batch_and_positive_otherwise():
    same = torch.randn(1, 5, 4, 4).expand(8, -1, -1, -1)
    out = minibatch_stddev(same, 4)
    assert out.shape == (8, 6, 4, 4) and out[:, 5].abs().max() < 1e-3
    varied = minibatch_stddev(torch.randn(8, 5, 4, 4), 4)
    assert (varied[:, 5] > 0.5).all()
    assert minibatch_stddev(torch.randn(6, 5, 4, 4), 4).shape == (6, 6, 4, 4)  # 6 images: groups of 2


# --- a transparent model trained end to end, validation logged ----------------------------------------------------


def test_rgba_training_logs_validation_records_its_recipe_and_draws_transparent_images(rgba_folder, tmp_path, plugins):
    from ganvas.core.evaluation.evaluator import save_evaluator, train_evaluator
    from ganvas.core.pipeline import Pipeline
    from ganvas.core.text.encoder import EmbeddingCache, default_cache_dir
    from ganvas.core.training.trainer import Trainer, TrainOptions

    rgb = load_imagefolder(rgba_folder, 64, channels=3)
    vectors = EmbeddingCache(default_cache_dir()).lookup(rgb.captions)
    save_evaluator(
        train_evaluator(rgb.images, vectors, rgb.caption_index, epochs=2, batch=18, log=lambda m: None), tmp_path / "ev"
    )
    opts = TrainOptions(
        data=str(rgba_folder),
        out=str(tmp_path / "run"),
        resolution=64,
        steps=4,
        batch=6,
        preset="tiny",
        caption_forms="full:0.5,typed:0.3,name:0.2",
        negatives="random:0.4,style:0.3,concept:0.3",
        gp_augment=True,
        ema_images=1000,
        evaluator=str(tmp_path / "ev"),
        val_every=2,
        log_every=2,
        sample_every=2,
        threads=1,
        progress=False,
    )
    Trainer(opts, log=lambda m: None).run()
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert {"val_r1_full", "val_r1_typed", "val_style_typed", "val_name_spread_ratio"} <= set(stats[-1])
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["generator"]["channels"] == 4
    phases = config["trained"]["phases"]
    assert phases[0]["from_step"] == 0 and phases[0]["options"]["negatives"] == opts.negatives
    pipe = Pipeline.load(str(tmp_path / "run" / "model"), plugins=plugins)
    image = pipe("red thing", seed=0, style="solid").images[0]
    assert image.mode == "RGBA" and pipe.info.channels == 4
