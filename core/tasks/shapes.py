"""The procedural "shapes" task (see SHAPES.md): vocabulary, captions, parsing, rendering, sampling.

Pure Python + Pillow: it is the data source for fast conditioning checks, so it must be cheap to render
and exact about what each caption means.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 215, 30),
    "green": (40, 170, 60),
    "cyan": (30, 200, 220),
    "blue": (40, 80, 230),
    "purple": (140, 60, 200),
    "pink": (245, 130, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
SIZES: dict[str, float] = {"small": 0.30, "large": 0.55}  # bounding-box side / image side
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.27, 0.50),
    "right": (0.73, 0.50),
    "top": (0.50, 0.27),
    "bottom": (0.50, 0.73),
    "centre": (0.50, 0.50),
}
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
SYNONYMS: dict[str, str] = {
    "little": "small",
    "tiny": "small",
    "big": "large",
    "center": "centre",
    "middle": "centre",
    "violet": "purple",
    "plus": "cross",
}
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("orange", "circle"),
        ("yellow", "cross"),
        ("green", "triangle"),
        ("blue", "diamond"),
        ("purple", "square"),
    }
)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
}

# Jitter limits allowed by the spec; a renderer with an rng varies each object within them.
COLOUR_JITTER = 12
POSITION_JITTER = 0.03
SIZE_JITTER = 0.08
ROTATION_JITTER = 0.12

_SUPERSAMPLE = 4  # draw at 4x and box-filter down: exact area antialiasing, and still fast
_SYNONYMS_OF: dict[str, tuple[str, ...]] = {}
for _syn, _canon in SYNONYMS.items():
    _SYNONYMS_OF[_canon] = _SYNONYMS_OF.get(_canon, ()) + (_syn,)
_SYNONYM_PROB = 0.25


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    size: str
    position: str

    def __post_init__(self) -> None:
        # Fail at construction, not deep inside a render or a training step.
        for value, vocab, what in (
            (self.colour, COLOURS, "colour"),
            (self.shape, SHAPES, "shape"),
            (self.size, SIZES, "size"),
            (self.position, POSITIONS, "position"),
        ):
            if value not in vocab:
                raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(vocab)}")

    @property
    def held_out(self) -> bool:
        return (self.colour, self.shape) in HELD_OUT_PAIRS


def _draw_order(objects: Sequence[ShapeObject]) -> list[ShapeObject]:
    # Large objects first so a small one on top stays visible; stable, so equal sizes keep their order.
    return sorted(objects, key=lambda o: o.size != "large")


# ---------------------------------------------------------------------------------------------- captions


def _word(word: str, rng: random.Random | None) -> str:
    if rng is not None and word in _SYNONYMS_OF and rng.random() < _SYNONYM_PROB:
        return rng.choice(_SYNONYMS_OF[word])
    return word


def caption(objects: Sequence[ShapeObject], rng: random.Random | None = None) -> str:
    """Canonical caption; with an rng, some words are swapped for synonyms so training sees them."""
    if not 1 <= len(objects) <= 2:
        raise ValueError(f"a shapes caption names 1 or 2 objects, got {len(objects)}")
    phrases = []
    for o in _draw_order(objects):
        prep, the, pos = POSITION_PHRASES[o.position].split()
        words = ["a", _word(o.size, rng), _word(o.colour, rng), _word(o.shape, rng), prep, the, _word(pos, rng)]
        phrases.append(" ".join(words))
    return " and ".join(phrases)


def _canonical(word: str) -> str:
    return SYNONYMS.get(word, word)


def _role(word: str) -> str | None:
    w = _canonical(word)
    for vocab, role in ((SIZES, "size"), (COLOURS, "colour"), (SHAPES, "shape"), (POSITIONS, "position")):
        if w in vocab:
            return role
    return None


def _parse_phrase(words: list[str], text: str) -> ShapeObject:
    phrase = " ".join(words)
    if len(words) != 7:
        raise ValueError(f"cannot parse {phrase!r} in {text!r}: expected 'a <size> <colour> <shape> <position phrase>'")
    if words[0] != "a":
        raise ValueError(f"expected 'a' at the start of {phrase!r}, got {words[0]!r}")
    values = {}
    for word, role in zip(words[1:4], ("size", "colour", "shape")):
        found = _role(word)
        if found is None:
            raise ValueError(f"unknown word {word!r} in {phrase!r} (expected a {role})")
        if found != role:
            raise ValueError(f"expected a {role} in {phrase!r}, got the {found} {word!r}")
        values[role] = _canonical(word)
    position = _canonical(words[6])
    if position not in POSITIONS:
        raise ValueError(f"unknown position {words[6]!r} in {phrase!r}; expected one of {', '.join(POSITIONS)}")
    expected = POSITION_PHRASES[position]
    if " ".join(words[4:6]) != " ".join(expected.split()[:2]):
        raise ValueError(f"bad position phrase {' '.join(words[4:])!r} in {phrase!r}; expected {expected!r}")
    return ShapeObject(values["colour"], values["shape"], values["size"], position)


def parse_caption(text: str) -> list[ShapeObject]:
    """Objects named by a caption, in caption order. Raises ValueError naming the problem."""
    words = text.strip().lower().rstrip(".").split()
    if not words:
        raise ValueError("empty caption")
    phrases: list[list[str]] = [[]]
    for w in words:
        if w == "and":
            phrases.append([])
        else:
            phrases[-1].append(w)
    if len(phrases) > 2:
        raise ValueError(f"a shapes caption names at most 2 objects: {text!r}")
    objects = [_parse_phrase(p, text) for p in phrases]
    if len(objects) == 2 and objects[0].position == objects[1].position:
        raise ValueError(f"two objects at the same position {objects[0].position!r} in {text!r}")
    return objects


# --------------------------------------------------------------------------------------------- rendering


def _normalised(points: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    # Scale so the bounding box's longer side is 1 and centre the bounding box on the origin: "size" and
    # "position" in the spec are about the bounding box, whatever the shape.
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    side = max(max(xs) - min(xs), max(ys) - min(ys))
    return tuple(((x - cx) / side, (y - cy) / side) for x, y in points)


def _star(points: int = 5, inner: float = 0.42) -> list[tuple[float, float]]:
    out = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + k * math.pi / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


_t = 1 / 6  # cross arm half-thickness: arms are 1/3 of the box
_POLYGONS: dict[str, tuple[tuple[float, float], ...]] = {
    "square": _normalised([(-1, -1), (1, -1), (1, 1), (-1, 1)]),
    "triangle": _normalised([(0, -math.sqrt(3) / 2), (0.5, 0), (-0.5, 0)]),  # equilateral, pointing up
    "star": _normalised(_star()),
    "cross": _normalised(
        [
            (-_t, -0.5),
            (_t, -0.5),
            (_t, -_t),
            (0.5, -_t),
            (0.5, _t),
            (_t, _t),
            (_t, 0.5),
            (-_t, 0.5),
            (-_t, _t),
            (-0.5, _t),
            (-0.5, -_t),
            (-_t, -_t),
        ]
    ),
    "diamond": _normalised([(0, -0.5), (0.35, 0), (0, 0.5), (-0.35, 0)]),  # 0.7 as wide as tall
}


def _draw(draw: ImageDraw.ImageDraw, o: ShapeObject, side: int, rng: random.Random | None) -> None:
    colour = COLOURS[o.colour]
    (x, y), size, angle = POSITIONS[o.position], SIZES[o.size], 0.0
    if rng is not None:
        j = COLOUR_JITTER
        colour = tuple(min(255, max(0, c + rng.randint(-j, j))) for c in colour)
        x += rng.uniform(-POSITION_JITTER, POSITION_JITTER)
        y += rng.uniform(-POSITION_JITTER, POSITION_JITTER)
        size *= 1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER)
        angle = rng.uniform(-ROTATION_JITTER, ROTATION_JITTER)  # drawn even for circles: same rng stream
    cx, cy, s = x * side, y * side, size * side
    if o.shape == "circle":
        draw.ellipse((cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2), fill=colour)
        return
    c, si = math.cos(angle) * s, math.sin(angle) * s
    draw.polygon([(cx + px * c - py * si, cy + px * si + py * c) for px, py in _POLYGONS[o.shape]], fill=colour)


def render(
    objects: Sequence[ShapeObject],
    resolution: int = 64,
    background: str = "white",
    rng: random.Random | None = None,
) -> Image.Image:
    """An RGB image of the objects; with an rng, colours/positions/sizes/angles are jittered within spec."""
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; expected one of {', '.join(BACKGROUNDS)}")
    side = resolution * _SUPERSAMPLE
    img = Image.new("RGB", (side, side), BACKGROUNDS[background])
    draw = ImageDraw.Draw(img)
    for o in _draw_order(objects):
        _draw(draw, o, side, rng)
    return img.reduce(_SUPERSAMPLE)  # box filter: each output pixel is the mean of its 4x4 block


# ---------------------------------------------------------------------------------------------- sampling

_HELD_OUT_MODES = ("include", "exclude", "only")


def _check_mode(held_out: str) -> None:
    if held_out not in _HELD_OUT_MODES:
        raise ValueError(f"held_out must be one of {_HELD_OUT_MODES}, got {held_out!r}")


def single_object_combinations(held_out: str = "include") -> list[ShapeObject]:
    """All 480 single objects ("include"), the 420 training ones ("exclude") or the 60 held-out ones ("only")."""
    _check_mode(held_out)
    out = []
    for colour in COLOURS:
        for shape in SHAPES:
            is_held = (colour, shape) in HELD_OUT_PAIRS
            if (held_out == "exclude" and is_held) or (held_out == "only" and not is_held):
                continue
            out.extend(ShapeObject(colour, shape, size, pos) for size in SIZES for pos in POSITIONS)
    return out


_TRAIN_PAIRS = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]
_ALL_PAIRS = [(c, s) for c in COLOURS for s in SHAPES]
_HELD_PAIRS = sorted(HELD_OUT_PAIRS)
_OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def sample_objects(rng: random.Random, two_object_prob: float = 0.25, held_out: str = "exclude") -> list[ShapeObject]:
    """A random scene of 1-2 objects. "exclude" never yields a held-out pair (training), "only" yields
    single held-out objects (composition test), "include" samples from everything."""
    _check_mode(held_out)
    pairs = {"exclude": _TRAIN_PAIRS, "include": _ALL_PAIRS, "only": _HELD_PAIRS}[held_out]
    colour, shape = rng.choice(pairs)
    first = ShapeObject(colour, shape, rng.choice(tuple(SIZES)), rng.choice(tuple(POSITIONS)))
    if held_out == "only" or rng.random() >= two_object_prob:
        return [first]
    colour, shape = rng.choice(pairs)
    size = rng.choice(tuple(SIZES))
    if first.size == "large" == size:
        # Two large objects would mostly hide one another unless they sit at opposite sides.
        if first.position == "centre":
            size = "small"
            position = rng.choice([p for p in POSITIONS if p != "centre"])
        else:
            position = _OPPOSITE[first.position]
    else:
        position = rng.choice([p for p in POSITIONS if p != first.position])
    return _draw_order([first, ShapeObject(colour, shape, size, position)])
