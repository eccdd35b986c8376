"""core/datasets: messy image folders (bad files skipped and listed), caption sidecars, the shapes pool."""

from pathlib import Path

import torch
from PIL import Image

from ganvas.core.datasets.folders import load_dataset, make_shapes

torch.set_num_threads(1)


def test_imagefolder_skips_bad_files_and_lists_them(messy_imagefolder):
    data = load_dataset(str(messy_imagefolder), 32)
    assert len(data) == 13 and data.images.shape == (13, 3, 32, 32) and data.images.dtype == torch.uint8
    skipped = {Path(p).name.split(":")[0] for p, _ in data.skipped}
    assert {"corrupt.png", "empty.png", "missing.png", "metadata.jsonl"} <= skipped
    alpha = data.images[12]
    assert int(alpha.min()) == 255  # transparent pixels composited on white
    assert len(data.captions) == 5
    assert data.styles == ["noto", "twemoji"]  # metadata "style" words, most frequent first


def test_sidecar_folder_reads_txt_captions(tmp_path):
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (64, 48), colour).save(tmp_path / f"{i}.jpg")
        (tmp_path / f"{i}.txt").write_text(f"colour {i}\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "orphan.png")
    data = load_dataset(str(tmp_path), 32)
    assert len(data) == 2 and data.captions == ["colour 0", "colour 1"]
    assert any("orphan.png" in p for p, _ in data.skipped)


def test_shapes_pool_is_deterministic_and_never_shows_held_out_pairs():
    from ganvas.core.tasks.shapes import HELD_OUT_PAIRS, parse_caption

    a = make_shapes(32, size=300, seed=5)
    b = make_shapes(32, size=300, seed=5, workers=2)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    for text in a.captions:
        assert not any((o.colour, o.shape) in HELD_OUT_PAIRS for o in parse_caption(text))
