"""core/training: a run writes stats, samples and a loadable model; exact resume; torchrun; negatives."""

import json
import os
import subprocess
import sys

import pytest
import torch

from ganvas.core.io import checkpoint
from ganvas.core.pipeline import Pipeline
from ganvas.core.training.trainer import Trainer, TrainOptions

torch.set_num_threads(1)


def _tiny_options(tmp_path, data, steps, name="run", **kw):
    return TrainOptions(
        data=str(data),
        out=str(tmp_path / name),
        resolution=32,
        steps=steps,
        batch=4,
        preset="tiny",
        threads=1,
        log_every=2,
        sample_every=4,
        checkpoint_every=3,
        progress=False,
        cache_dir=str(tmp_path / "cache"),
        **kw,
    )


def test_training_writes_stats_samples_plot_and_a_loadable_model(tmp_path, messy_imagefolder):
    result = Trainer(_tiny_options(tmp_path, messy_imagefolder, 4)).run()
    run = tmp_path / "run"
    assert result["step"] == 4 and result["images_seen"] == 16
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4] and "seed_pixel_std" in stats[-1]
    assert (run / "samples.png").exists() and (run / "loss.png").exists()
    assert "corrupt.png" in (run / "skipped.txt").read_text()
    g, data = checkpoint.load_generator(run / "model")
    assert data["trained"]["images_seen"] == 16 and (run / "model" / "README.md").exists()
    assert data["trained"]["styles"] == ["noto", "twemoji"]  # what hosts offer in their style box
    assert Pipeline.load(run / "model").info.styles == ("noto", "twemoji")
    # styled captions -> the model says how a style enters its prompt, so hosts' style box works on it
    assert data["prompt_template"] == "{prompt}; {style} style"
    assert Pipeline.load(run / "model")("fox", seed=0, style="noto").request.prompt == "fox; noto style"


def test_resume_continues_exactly_the_same_curve(tmp_path, messy_imagefolder):
    straight = Trainer(_tiny_options(tmp_path, messy_imagefolder, 6, name="straight"))
    straight.run()
    first = Trainer(_tiny_options(tmp_path, messy_imagefolder, 3, name="resumed"))
    first.run()
    second = Trainer(_tiny_options(tmp_path, messy_imagefolder, 6, name="resumed", resume=True))
    assert second.step == 3
    second.run()
    for a, b in zip(straight.G_ema.state_dict().values(), second.G_ema.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.D.state_dict().values(), second.D.state_dict().values()):
        assert torch.equal(a, b)
    assert second.images_seen == straight.images_seen == 24


def _torchrun_train(tmp_path, data, run, *args):
    """`ganvas train` as 2 real processes under torchrun (gloo, CPU), tiny model; fails with its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANVAS_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "ganvas",
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--resolution",
        "32",
        "--batch",
        "2",
        "--preset",
        "tiny",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_mode_seeking_pairs_noises_per_caption_and_spreads_the_images(tmp_path, messy_imagefolder):
    def seed_spread(weight):
        torch.manual_seed(0)
        trainer = Trainer(
            _tiny_options(tmp_path, messy_imagefolder, 1, name=f"ms{weight}", mode_seeking=weight, lr_g=1e-3)
        )
        seen = []
        forward = trainer.G.forward
        trainer.G.forward = lambda z, text: seen.append(text.clone()) or forward(z, text)
        for _ in range(8):
            stats = trainer.train_step()
        g_text = seen[-1]  # the last G step's captions: second half repeats the first
        if weight:
            assert torch.equal(g_text[2:4], g_text[:2]) and 0 < stats["mode_seeking"] < float("inf")
        with torch.no_grad():
            images = forward(torch.randn(16, trainer.config.z_dim), trainer.text[:1].expand(16, -1))
        return float(images.std(0).mean())

    spread_with, spread_without = seed_spread(20.0), seed_spread(0.0)
    assert spread_with > 1.5 * spread_without, (spread_with, spread_without)


@pytest.mark.slow
def test_two_processes_under_torchrun_train_in_lockstep(tmp_path, messy_imagefolder):
    run = tmp_path / "ddp"
    _torchrun_train(tmp_path, messy_imagefolder, run, "--steps", "3", "--checkpoint-every", "3")
    info = json.loads((run / "training_state.json").read_text())["info"]
    assert info["step"] == 3 and info["images_seen"] == 3 * 2 * 2  # both processes' images count
    g, data = checkpoint.load_generator(run / "model")
    assert data["trained"]["processes"] == 2


def test_hard_negatives_pick_the_most_similar_other_caption(tmp_path, messy_imagefolder):
    trainer = Trainer(_tiny_options(tmp_path, messy_imagefolder, 1, hard_negatives=1.0))
    caps = torch.tensor([0, 1, 2, 3, 0])
    mis = trainer._mismatched_captions(caps)
    assert (mis != caps).all()
    t = trainer.text
    for row, cap in enumerate(caps.tolist()):
        others = [c for c in range(4) if c != cap and c in caps.tolist()]
        best = max(others, key=lambda c: float(t[cap] @ t[c]))
        assert mis[row].item() == best


@pytest.mark.slow
def test_processes_stop_together_when_time_is_up(tmp_path, messy_imagefolder):
    """--max-minutes under torchrun: every process must stop at the same step (no all-reduce deadlock)."""
    run = tmp_path / "ddp-time"
    _torchrun_train(tmp_path, messy_imagefolder, run, "--steps", "1000", "--max-minutes", "0.002")
    info = json.loads((run / "training_state.json").read_text())["info"]
    assert 1 <= info["step"] < 1000


def test_init_starts_from_a_trained_generator_and_warmup_trains_only_the_critic(tmp_path, messy_imagefolder):
    Trainer(_tiny_options(tmp_path, messy_imagefolder, 4, name="first")).run()
    shipped, _ = checkpoint.load_generator(tmp_path / "first" / "model")
    warm = Trainer(
        _tiny_options(
            tmp_path, messy_imagefolder, 2, name="warm", init=str(tmp_path / "first" / "model"), d_warmup_steps=2
        )
    )
    d_before = {k: v.clone() for k, v in warm.D.state_dict().items()}
    warm.run()
    # Two critic-only steps: G (and its EMA) are still the trained model's weights, D has moved.
    for key, value in shipped.state_dict().items():
        assert torch.equal(warm.G.state_dict()[key], value) and torch.equal(warm.G_ema.state_dict()[key], value), key
    assert any(not torch.equal(d_before[k], v) for k, v in warm.D.state_dict().items())
    stats = [json.loads(line) for line in (tmp_path / "warm" / "stats.jsonl").read_text().splitlines()]
    assert [s["loss_g"] for s in stats] == [0.0]
    assert checkpoint.read_config(tmp_path / "warm" / "model")["trained"]["options"]["init"].endswith("model")
    # After the warm-up G trains as usual.
    moving = Trainer(
        _tiny_options(tmp_path, messy_imagefolder, 2, name="moving", init=str(tmp_path / "first" / "model"))
    )
    moving.run()
    assert any(not torch.equal(moving.G.state_dict()[k], v) for k, v in shipped.state_dict().items())


def test_init_refuses_a_generator_of_another_shape(tmp_path, messy_imagefolder):
    import dataclasses

    Trainer(_tiny_options(tmp_path, messy_imagefolder, 1, name="first")).run()
    other = _tiny_options(tmp_path, messy_imagefolder, 1, name="other", init=str(tmp_path / "first" / "model"))
    with pytest.raises(checkpoint.CheckpointError, match="differs from this run's"):
        Trainer(dataclasses.replace(other, preset="small"))
