"""core/io/checkpoint: round trips, and broken, foreign or mistyped checkpoints refused with one line naming the file."""

import json
from pathlib import Path

import pytest
import torch

from ganvas.core.io import checkpoint
from ganvas.core.model.config import ModelConfig
from ganvas.core.model.networks import Generator
from ganvas.core.model.upsampler import UpsamplerConfig

torch.set_num_threads(1)


def _save_tiny(tmp_path, text_encoder="minilm"):
    cfg = ModelConfig(resolution=32, g_channels=8, d_channels=8, cond_dim=32, text_encoder=text_encoder)
    return checkpoint.save_model(tmp_path / "ckpt", Generator(cfg), {"steps": 0}, card="# tiny\n")


def test_checkpoint_round_trip_is_exact(tmp_path):
    cfg = ModelConfig(resolution=32, g_channels=8, d_channels=8, cond_dim=32)
    g = Generator(cfg)
    folder = checkpoint.save_model(tmp_path / "m", g, {"steps": 3})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded, data = checkpoint.load_generator(folder)
    assert data["format"] == "ganvas.checkpoint" and data["text_encoder"] == {"name": "minilm", "dim": 384}
    z, t = torch.randn(3, cfg.z_dim), torch.randn(3, 384)
    assert torch.equal(loaded(z, t), g.eval()(z, t))


def test_truncated_weights_are_reported_with_the_file_name(tmp_path):
    folder = _save_tiny(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match="model.safetensors"):
        checkpoint.load_generator(folder)


def test_a_pickle_or_foreign_file_is_refused_without_being_executed(tmp_path):
    folder = _save_tiny(tmp_path)
    marker = tmp_path / "executed"
    import pickle

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(checkpoint.CheckpointError, match="model.safetensors"):
        checkpoint.load_generator(folder)
    assert not marker.exists()
    (folder / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(checkpoint.CheckpointError, match="not a ganvas checkpoint"):
        checkpoint.load_generator(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(checkpoint.CheckpointError, match="config.json"):
        checkpoint.load_generator(folder)


def test_a_checkpoint_for_another_text_encoder_is_refused_naming_both(tmp_path):
    folder = _save_tiny(tmp_path, text_encoder="clip-b32")
    with pytest.raises(checkpoint.CheckpointError, match="clip-b32.*minilm"):
        checkpoint.load_generator(folder, expected_text_encoder="minilm")


# --- config.json and weights that do not fit: one line naming the file and the field/tensor -----------------


def _edit_config(folder, **changes):
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data["generator"].update(changes)
    path.write_text(json.dumps(data))  # json.dumps writes NaN as NaN, which json.loads reads back


@pytest.mark.parametrize(
    "field, value",
    [
        ("z_dim", "64"),
        ("z_dim", 64.5),
        ("z_dim", float("nan")),
        ("g_channels", True),
        ("max_mult", None),
        ("cond_dim", [32]),
        ("resolution", "32"),
        ("text_encoder", 5),
        ("text_encoder", False),
    ],
)
def test_mistyped_config_values_name_the_file_and_the_field(tmp_path, field, value):
    folder = _save_tiny(tmp_path)
    _edit_config(folder, **{field: value})
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load_generator(folder)
    message = str(caught.value)
    assert str(folder / "config.json") in message and "generator" in message and f"'{field}'" in message
    assert "\n" not in message


@pytest.mark.parametrize("config, kind", [(ModelConfig, "model config"), (UpsamplerConfig, "upsampler config")])
def test_every_config_field_is_type_checked_so_new_fields_are_covered(config, kind):
    """Generic over the dataclass (one TypedConfig.from_dict for both configs): a field added to ModelConfig
    or UpsamplerConfig later is checked without new code."""
    from dataclasses import fields

    good = config().to_dict()
    for f in fields(config):
        wrong = "text" if not isinstance(good[f.name], str) else 7
        with pytest.raises(ValueError, match=f"'{f.name}'"):
            config.from_dict({**good, f.name: wrong})
        with pytest.raises(ValueError, match=f"'{f.name}'"):
            config.from_dict({**good, f.name: True})
        with pytest.raises(ValueError, match=f"'{f.name}'") as caught:
            config.from_dict({**good, f.name: 64.5})
        assert "\n" not in str(caught.value)
    assert config.from_dict(good) == config()
    with pytest.raises(ValueError, match=f"object of {kind} keys"):
        config.from_dict(["resolution", 32])
    with pytest.raises(ValueError, match=f"unknown {kind} keys \\['extra'\\]"):
        config.from_dict({**good, "extra": 1})


def test_weights_that_do_not_fit_the_config_name_the_tensor_and_both_shapes(tmp_path):
    folder = _save_tiny(tmp_path)
    _edit_config(folder, z_dim=32)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load_generator(folder)
    message = str(caught.value)
    assert message.startswith(str(folder / "model.safetensors")) and "\n" not in message
    assert "'mapping.0.weight'" in message and "[32, 448]" in message and "[32, 416]" in message


def test_oversized_config_is_refused_without_building_the_model(tmp_path):
    """A crafted config.json (g_channels 10^6: terabytes of weights) is compared with the file's tensor
    shapes before anything is allocated."""
    folder = _save_tiny(tmp_path)
    _edit_config(folder, g_channels=1_000_000, d_channels=1_000_000)
    with pytest.raises(checkpoint.CheckpointError, match="model.safetensors.*do not fit"):
        checkpoint.load_generator(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_nan_or_inf_are_refused_naming_the_tensor(tmp_path, bad):
    from safetensors.torch import load_file, save_file

    folder = _save_tiny(tmp_path)
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    state["to_rgb.weight"][0, 0, 0, 0] = bad
    save_file(state, str(weights))
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load_generator(folder)
    message = str(caught.value)
    assert message.startswith(str(weights)) and "'to_rgb.weight'" in message and "\n" not in message
