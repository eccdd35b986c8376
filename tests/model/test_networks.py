"""core/model: generator and discriminator shapes at every resolution, config checks, augmentation ops."""

import pytest
import torch

from ganvas.core.model.config import PRESETS, ModelConfig
from ganvas.core.model.networks import Discriminator, Generator

torch.set_num_threads(1)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_generator_and_discriminator_work_at_every_supported_resolution(resolution):
    cfg = ModelConfig(resolution=resolution, g_channels=8, d_channels=8, cond_dim=32)
    g, d = Generator(cfg), Discriminator(cfg)
    images = g(torch.randn(2, cfg.z_dim), torch.randn(2, cfg.text_dim))
    assert images.shape == (2, 3, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    matched, mismatched = d(images, torch.randn(2, cfg.text_dim), torch.randn(2, cfg.text_dim))
    assert matched.shape == mismatched.shape == (2,)


def test_unsupported_resolution_and_unknown_config_keys_are_refused():
    with pytest.raises(ValueError, match="resolution"):
        ModelConfig(resolution=48)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"resolution": 32, "wings": 2})


def test_augment_ops_are_selectable_and_unknown_ones_named():
    from ganvas.core.model.augment import diff_augment

    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(diff_augment(x, ops=""), x)
    cut = diff_augment(x, ops="cutout", generator=torch.Generator().manual_seed(0))
    assert (cut == 0).any() and cut.shape == x.shape
    with pytest.raises(ValueError, match="colour"):
        diff_augment(x, ops="translation,colour")


def test_checkpoints_from_before_the_rename_of_the_first_layer_still_load():
    """0.1 called the first layer `seed`; its weights (shipped models, users' checkpoints) load into `to_4x4`."""
    cfg = ModelConfig(resolution=32, **PRESETS["tiny"])
    torch.manual_seed(0)
    new = Generator(cfg).eval()
    old_names = {k.replace("to_4x4.", "seed.", 1): v for k, v in new.state_dict().items()}
    assert "seed.weight" in old_names and not any(k.startswith("to_4x4.") for k in old_names)
    loaded = Generator(cfg).eval()
    loaded.load_state_dict(old_names)
    z, text = torch.randn(2, cfg.z_dim), torch.randn(2, cfg.text_dim)
    assert torch.equal(loaded(z, text), new(z, text))
    assert set(Generator.upgrade_state_dict(old_names)) == set(new.state_dict())
