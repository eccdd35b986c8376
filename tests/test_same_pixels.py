"""The same request gives the same pixels as main did before the tree was reorganised (issue 13).

The PNGs in tests/data/pixels were made by scripts/pixel_references.py from main at commit 7ce1adb; every case
is regenerated here through the public API and compared pixel for pixel (metadata may change, pixels not).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganvas import Pipeline

REFERENCES = Path(__file__).parent / "data" / "pixels"
CASES = json.loads((REFERENCES / "manifest.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_same_request_gives_the_reference_pixels(case):
    expected = Image.open(REFERENCES / case["file"])
    image = Pipeline.load(case["model"])(
        case["prompt"], n=1, seed=case["seed"], truncation=case["truncation"], style=case["style"], size=case["size"]
    ).images[0]
    assert (image.mode, image.size) == (expected.mode, expected.size)
    diff = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(expected, dtype=np.int16))
    assert diff.max() == 0, f"{case['file']}: {int((diff > 0).sum())} channel values differ, max by {diff.max()}"
