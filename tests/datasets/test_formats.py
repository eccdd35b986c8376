"""core/datasets/formats.py: the `--data` spec rule (NAME, NAME:PATH, a folder) and the loader calling convention."""

import json

import pytest
import torch
from PIL import Image

from ganvas.core.datasets.folders import CaptionedImages
from ganvas.core.datasets.formats import (
    BUILTIN_FORMATS,
    DatasetError,
    call_loader,
    load_builtin,
    loader_takes,
    resolve_dataset,
)

torch.set_num_threads(1)


def test_specs_name_a_format_a_format_and_path_or_a_folder(messy_imagefolder, tmp_path):
    assert (resolve_dataset("shapes", BUILTIN_FORMATS).format, resolve_dataset("shapes", BUILTIN_FORMATS).path) == (
        "shapes",
        None,
    )
    explicit = resolve_dataset(f"imagefolder:{messy_imagefolder}", BUILTIN_FORMATS)
    assert (explicit.format, explicit.path) == ("imagefolder", str(messy_imagefolder))
    assert resolve_dataset(str(messy_imagefolder), BUILTIN_FORMATS).format == "imagefolder"
    root = tmp_path / "root"
    (root / "train").mkdir(parents=True)
    (root / "train" / "metadata.jsonl").write_text("")
    assert resolve_dataset(str(root), BUILTIN_FORMATS).format == "imagefolder"  # a root of split folders
    sidecars = tmp_path / "sidecars"
    sidecars.mkdir()
    assert resolve_dataset(str(sidecars), BUILTIN_FORMATS).format == "sidecar"
    # A plugin manager's registrations work as well as plain loaders (their .value is the loader).
    registration = type("Registration", (), {"value": staticmethod(BUILTIN_FORMATS["shapes"])})()
    assert resolve_dataset("shapes", {"shapes": registration}).loader is BUILTIN_FORMATS["shapes"]


def test_an_unknown_spec_is_one_line_naming_the_formats(tmp_path):
    with pytest.raises(DatasetError) as info:
        resolve_dataset(str(tmp_path / "missing"), BUILTIN_FORMATS)
    message = str(info.value)
    assert "\n" not in message and "registered: imagefolder, shapes, sidecar" in message
    with pytest.raises(DatasetError, match="unknown dataset 'nope:x'"):
        resolve_dataset("nope:x", BUILTIN_FORMATS)


def test_the_imagefolder_format_reads_a_root_of_splits(tmp_path):
    for split, colour in (("train", "red"), ("test", "blue")):
        (tmp_path / split).mkdir()
        Image.new("RGB", (8, 8), colour).save(tmp_path / split / "a.png")
        (tmp_path / split / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": colour}) + "\n")
    assert load_builtin(str(tmp_path), 8).captions == ["red"]  # training: train/
    assert load_builtin(f"imagefolder:{tmp_path}", 8, split="test").captions == ["blue"]
    with pytest.raises(FileNotFoundError, match="unseen_concepts"):
        load_builtin(str(tmp_path), 8, split="unseen_concepts")


def test_a_loader_gets_only_the_options_it_names():
    seen = []

    def plain(path, resolution):
        seen.append(("plain", path))
        return CaptionedImages(torch.zeros(1, 3, resolution, resolution, dtype=torch.uint8), ["x"], torch.tensor([0]))

    def keyed(path, resolution, split=None, **rest):
        seen.append(("keyed", split, sorted(rest)))
        return plain(path, resolution)

    call_loader(plain, "p", 8, split="test", seed=1, channels=None)
    call_loader(keyed, "p", 8, split="test", seed=1, channels=None)  # None options are never passed
    assert seen == [("plain", "p"), ("keyed", "test", ["seed"]), ("plain", "p")]
    assert loader_takes(keyed, "anything") and not loader_takes(plain, "split")
    with pytest.raises(DatasetError, match="returned tuple, expected CaptionedImages"):
        call_loader(lambda path, resolution: (), None, 8, name="broken")
    with pytest.raises(DatasetError, match="returned 8 px images, asked for 16"):
        call_loader(lambda path, resolution: plain(path, 8), None, 16, name="small")
