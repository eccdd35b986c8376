"""Tests for the shapes task (core/shapes.py) and its evaluator (core/shapes_eval.py)."""

import random

import numpy as np
import pytest
import torch

from ganvas.core.evaluation.shapes import (
    ATTRIBUTES,
    VOCAB,
    evaluate,
    format_report,
    load_classifier,
    save_classifier,
    to_tensor,
    train_classifier,
)
from ganvas.core.tasks.shapes import (
    COLOURS,
    HELD_OUT_PAIRS,
    POSITIONS,
    SHAPES,
    SIZES,
    SYNONYMS,
    ShapeObject,
    caption,
    parse_caption,
    render,
    sample_objects,
    single_object_combinations,
)

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------- captions


def test_combination_counts():
    assert len(single_object_combinations("include")) == 480
    assert len(single_object_combinations("exclude")) == 420
    held = single_object_combinations("only")
    assert len(held) == 60 and all((o.colour, o.shape) in HELD_OUT_PAIRS for o in held)


def test_caption_round_trip_every_single_object():
    for o in single_object_combinations("include"):
        text = caption([o])
        assert parse_caption(text) == [o]
    assert caption([ShapeObject("red", "circle", "small", "left")]) == "a small red circle on the left"
    assert caption([ShapeObject("cyan", "star", "large", "centre")]) == "a large cyan star in the centre"


def test_two_objects_large_first_and_round_trip():
    small = ShapeObject("yellow", "star", "small", "right")
    large = ShapeObject("blue", "square", "large", "left")
    text = caption([small, large])
    assert text == "a large blue square on the left and a small yellow star on the right"
    assert parse_caption(text) == [large, small]


def test_synonyms_parse_and_appear_in_random_captions():
    assert parse_caption("A Tiny Violet Plus in the Middle.") == [ShapeObject("purple", "cross", "small", "centre")]
    assert parse_caption("  a big  pink diamond   in the center ") == [
        ShapeObject("pink", "diamond", "large", "centre")
    ]
    assert parse_caption("a little red circle at the top") == [ShapeObject("red", "circle", "small", "top")]
    rng = random.Random(0)
    seen_synonyms = set()
    for _ in range(400):
        objects = sample_objects(rng, two_object_prob=0.5)
        text = caption(objects, rng)
        assert parse_caption(text) == objects
        seen_synonyms |= set(text.split()) & set(SYNONYMS)
    assert seen_synonyms == set(SYNONYMS)


@pytest.mark.parametrize(
    "text, bad",
    [
        ("a small magenta circle on the left", "magenta"),
        ("a small red blob on the left", "blob"),
        ("a huge red circle on the left", "huge"),
        ("a small red circle on the upper", "upper"),
        ("a red small circle on the left", "red"),
        ("a small red circle in the left", "in the left"),
        ("the small red circle on the left", "the"),
        ("a small red circle", "a small red circle"),
        ("a small red circle on the left and a large blue square on the left", "left"),
    ],
)
def test_parse_errors_name_the_problem(text, bad):
    with pytest.raises(ValueError, match=bad):
        parse_caption(text)


def test_parse_rejects_empty_and_three_objects():
    with pytest.raises(ValueError):
        parse_caption("   ")
    three = " and ".join(f"a small red circle {p}" for p in ("on the left", "on the right", "at the top"))
    with pytest.raises(ValueError, match="at most 2"):
        parse_caption(three)


# ---------------------------------------------------------------------------------------------- sampling


def test_held_out_pairs_never_in_training_and_always_in_only():
    rng = random.Random(1)
    pairs = set()
    for _ in range(5000):
        objects = sample_objects(rng, two_object_prob=0.5, held_out="exclude")
        assert 1 <= len(objects) <= 2
        if len(objects) == 2:
            assert objects[0].position != objects[1].position
            assert objects[0].size == "large" or objects[1].size == "small"  # large drawn first
        for o in objects:
            assert (o.colour, o.shape) not in HELD_OUT_PAIRS
            pairs.add((o.colour, o.shape))
    assert len(pairs) == 48 - 6  # every other pair does appear
    for _ in range(500):
        objects = sample_objects(rng, two_object_prob=0.5, held_out="only")
        assert len(objects) == 1 and (objects[0].colour, objects[0].shape) in HELD_OUT_PAIRS


# --------------------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("background", ["white", "black", "grey"])
def test_render_size_mode(resolution, background):
    img = render(sample_objects(random.Random(2), 1.0), resolution, background, random.Random(3))
    assert img.size == (resolution, resolution) and img.mode == "RGB"
    assert tuple(np.asarray(img)[0, 0]) == {"white": (255,) * 3, "black": (0,) * 3, "grey": (128,) * 3}[background]


def test_dominant_colour_is_the_named_colour_within_jitter():
    rng = random.Random(4)
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            for background in ("white", "black"):
                img = np.asarray(render([ShapeObject(colour, shape, "large", "centre")], 64, background, rng))
                values, counts = np.unique(img.reshape(-1, 3), axis=0, return_counts=True)
                order = np.argsort(-counts)
                # Most common pixel is the background; the next one is the shape's flat fill.
                assert tuple(values[order[0]]) == ((255,) * 3 if background == "white" else (0,) * 3)
                fill = values[order[1]].astype(int)
                assert np.abs(fill - np.array(rgb)).max() <= 12, (colour, shape, fill)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", SIZES)
def test_geometry_bounding_box_and_position(shape, size):
    res = 64
    for position, (fx, fy) in POSITIONS.items():
        img = np.asarray(render([ShapeObject("blue", shape, size, position)], res, "white"))
        ys, xs = np.nonzero((img < 200).any(axis=2))  # pixels at least half covered
        w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        assert abs(max(w, h) - SIZES[size] * res) <= 1.5
        assert abs((xs.min() + xs.max() + 1) / 2 - fx * res) <= 1.0
        assert abs((ys.min() + ys.max() + 1) / 2 - fy * res) <= 1.0
        if shape == "diamond":
            assert abs(w / h - 0.7) < 0.08


def test_render_is_deterministic_for_a_seed():
    objects = [ShapeObject("green", "star", "large", "left"), ShapeObject("pink", "cross", "small", "right")]
    a = render(objects, 32, "black", random.Random(7)).tobytes()
    assert a == render(objects, 32, "black", random.Random(7)).tobytes()
    assert a != render(objects, 32, "black", random.Random(8)).tobytes()
    assert render(objects, 32).tobytes() == render(objects, 32).tobytes()


# -------------------------------------------------------------------------------------------- evaluation


def test_classifier_save_load_round_trip(tmp_path):
    model = train_classifier(steps=3, batch=8, log=None)
    save_classifier(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "attribute_classifier.json",
        "attribute_classifier.safetensors",
    ]
    loaded = load_classifier(tmp_path)
    x = torch.rand(5, 3, 32, 32) * 2 - 1  # a non-64 size goes through the resize path too
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert set(a) == {"colour", "shape", "size", "position"}
    assert a["colour"].shape == (5, 8) and a["shape"].shape == (5, 6)
    assert a["size"].shape == (5, 2) and a["position"].shape == (5, 5)
    for k in a:
        assert torch.equal(a[k], b[k])


class PixelReader(torch.nn.Module):
    """An instrument with known answers for testing `evaluate`: colour, size and position read straight off a
    single-object render's pixels, exact within the spec's jitter (which the rendering tests above check).
    Shape is not read (always the first shape). The trained classifier's own learning is a slow test."""

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {a: [] for a in ATTRIBUTES}
        palette = np.array([COLOURS[c] for c in VOCAB["colour"]], dtype=float)
        for image in images:
            x = ((image.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy().astype(float)
            res = x.shape[0]
            distance = np.abs(x - x[0, 0]).max(axis=2)  # from the background (no object reaches a corner)
            ys, xs = np.nonzero(distance > distance.max() / 2)  # pixels at least half covered
            fill = np.median(x[distance > 0.9 * distance.max()], axis=0)
            centre = np.array([xs.min() + xs.max() + 1, ys.min() + ys.max() + 1]) / (2 * res)
            extent = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) / res
            out["colour"].append(int(np.argmin(((palette - fill) ** 2).sum(1))))
            out["position"].append(
                min(range(len(POSITIONS)), key=lambda k: np.abs(centre - POSITIONS[VOCAB["position"][k]]).sum())
            )
            out["size"].append(min(range(len(SIZES)), key=lambda k: abs(extent - SIZES[VOCAB["size"][k]])))
            out["shape"].append(0)
        return {a: torch.tensor(v) for a, v in out.items()}


@pytest.fixture(scope="module")
def quick_classifier() -> PixelReader:
    return PixelReader()


def _renderer(jitter: bool, recolour: str | None = None):
    def generate(captions: list[str], seeds: list[int]) -> torch.Tensor:
        images = []
        for text, seed in zip(captions, seeds):
            objects = parse_caption(text)
            if recolour:
                objects = [ShapeObject(recolour, o.shape, o.size, o.position) for o in objects]
            images.append(render(objects, 32, "white", random.Random(seed + 99) if jitter else None))
        return to_tensor(images)

    return generate


def test_evaluate_scores_real_renders_high(quick_classifier):
    report = evaluate(
        _renderer(jitter=True), n_per_caption=2, n_seen_captions=60, classifier=quick_classifier, log=None
    )
    assert report["resolution"] == 32
    for source in ("generated", "real"):
        assert set(report[source]) == {"seen", "held_out"}
        for group in report[source].values():
            # An exact instrument on renders of the captions: every image is scored right.
            assert group["colour"] == group["position"] == group["size"] == 1.0
            assert group["diversity"] > 0.01  # jittered renders differ between seeds
    assert report["generated"]["seen"]["n_images"] == 120 and report["generated"]["held_out"]["n_images"] == 120
    assert set(report["generated"]["held_out"]["by_pair"]) == {f"{c} {s}" for c, s in HELD_OUT_PAIRS}
    assert report["chance"]["colour"] == 1 / 8 and report["chance"]["all"] == pytest.approx(1 / 480)
    text = format_report(report)
    assert "generated held_out" in text and "chance" in text


def test_evaluate_detects_wrong_colour_and_collapse(quick_classifier):
    # A generator that ignores colour and the seed: right colour only for the red captions, diversity 0.
    report = evaluate(
        _renderer(jitter=False, recolour="red"),
        n_per_caption=2,
        classifier=quick_classifier,
        include_held_out=False,
        log=None,
    )
    assert set(report["generated"]) == {"seen"} and report["generated"]["seen"]["n_images"] == 2 * 420
    red = [o for o in single_object_combinations("exclude") if o.colour == "red"]
    assert len(red) == 50 and report["generated"]["seen"]["colour"] == pytest.approx(50 / 420, abs=1e-6)
    assert report["real"]["seen"]["colour"] == 1.0
    assert report["generated"]["seen"]["position"] == report["generated"]["seen"]["size"] == 1.0
    assert report["generated"]["seen"]["diversity"] == pytest.approx(0.0, abs=1e-9)
    assert report["real"]["seen"]["diversity"] > 0.01


def test_evaluate_rejects_bad_generator_output(quick_classifier):
    with pytest.raises(ValueError, match="shape"):
        evaluate(
            lambda caps, seeds: torch.zeros(len(caps), 3, 32, 16),
            n_per_caption=1,
            n_seen_captions=2,
            classifier=quick_classifier,
            include_held_out=False,
            log=None,
        )
