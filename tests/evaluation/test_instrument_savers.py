"""The instrument savers (save_evaluator, save_classifier) go through the one atomic writer: a save that fails
part-way leaves the previous instrument loadable and no temporary file behind."""

from __future__ import annotations

import pytest
import torch

from ganvas.core.evaluation.evaluator import (
    CONFIG,
    WEIGHTS,
    ContrastiveEvaluator,
    EvaluatorConfig,
    load_evaluator,
    save_evaluator,
)
from ganvas.core.evaluation.shapes import AttributeClassifier, load_classifier, save_classifier
from ganvas.core.io import atomic, checkpoint


class DiskFull(OSError):
    pass


def _half_written_save_file(tensors, filename, metadata=None):
    with open(filename, "wb") as fh:
        fh.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{")  # the start of a safetensors header, then the disk is full
    raise DiskFull("no space left on device")


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _fail_fsync(fd):
    raise DiskFull("fsync: input/output error")


def _evaluator(seed: int) -> ContrastiveEvaluator:
    torch.manual_seed(seed)
    return ContrastiveEvaluator(EvaluatorConfig(resolution=32, text_dim=8, width=4, embed_dim=8)).eval()


@pytest.mark.parametrize("failure", ["weights", "config"])
def test_save_evaluator_is_atomic(tmp_path, monkeypatch, failure):
    save_evaluator(_evaluator(0), tmp_path, {"run": "old"})
    before = _snapshot(tmp_path)
    assert set(before) == {WEIGHTS, CONFIG}
    if failure == "weights":
        monkeypatch.setattr(checkpoint, "save_file", _half_written_save_file)
    else:
        monkeypatch.setattr(atomic.os, "fsync", _fail_fsync)  # config.json written, then the disk fails
    with pytest.raises(DiskFull):
        save_evaluator(_evaluator(1), tmp_path, {"run": "new"})
    assert _snapshot(tmp_path) == before  # the old files, byte for byte, and nothing else
    monkeypatch.undo()
    old = load_evaluator(tmp_path)
    expected = _evaluator(0).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in old.state_dict().items())


@pytest.mark.parametrize("failure", ["weights", "config"])
def test_save_classifier_is_atomic(tmp_path, monkeypatch, failure):
    torch.manual_seed(0)
    save_classifier(AttributeClassifier(width=4, hidden=8), tmp_path)
    before = _snapshot(tmp_path)
    if failure == "weights":
        monkeypatch.setattr(checkpoint, "save_file", _half_written_save_file)
    else:
        monkeypatch.setattr(atomic.os, "fsync", _fail_fsync)
    torch.manual_seed(1)
    with pytest.raises(DiskFull):
        save_classifier(AttributeClassifier(width=4, hidden=8), tmp_path)
    assert _snapshot(tmp_path) == before
    monkeypatch.undo()
    assert isinstance(load_classifier(tmp_path), AttributeClassifier)
