"""Core: model shapes, checkpoints (good and broken), datasets (messy folders), training and exact resume."""
import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganvas.core.io import checkpoint
from ganvas.core.model.config import ModelConfig
from ganvas.core.datasets.folders import load_dataset, make_shapes
from ganvas.core.model.networks import Discriminator, Generator
from ganvas.core.pipeline import Pipeline
from ganvas.core.text.encoder import EmbeddingCache, get_text_encoder
from ganvas.core.training.trainer import TrainOptions, Trainer

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


def test_real_text_encoder_gives_normalised_sentence_vectors_and_token_states():
    emb = get_text_encoder().encode(["a large red circle in the centre", "a small blue star on the left"],
                                    with_tokens=True)
    assert emb.sentence.shape == (2, 384)
    assert torch.allclose(emb.sentence.norm(dim=1), torch.ones(2), atol=1e-5)
    assert emb.tokens.shape[0] == 2 and emb.tokens.shape[2] == 384
    assert emb.mask.shape == emb.tokens.shape[:2]
    # Different captions, different vectors; the same caption, the same vector.
    assert (emb.sentence[0] @ emb.sentence[1]) < 0.95
    again = get_text_encoder().encode(["a large red circle in the centre"]).sentence
    assert torch.allclose(again[0], emb.sentence[0], atol=1e-5)


def test_embedding_cache_encodes_each_caption_once_and_survives_a_restart(tmp_path):
    calls = []

    class CountingEncoder:
        def encode(self, texts):
            calls.append(list(texts))
            return get_text_encoder().encode(texts)

    cache = EmbeddingCache(tmp_path, encoder=CountingEncoder())
    first = cache.lookup(["a red circle", "a blue square", "a red circle"])
    assert first.shape == (3, 384) and torch.equal(first[0], first[2])
    assert calls == [["a blue square", "a red circle"]]
    fresh = EmbeddingCache(tmp_path, encoder=CountingEncoder())
    assert torch.equal(fresh.lookup(["a blue square"])[0], first[1])
    assert len(calls) == 1  # read from disk, not re-encoded


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


@pytest.fixture
def messy_imagefolder(tmp_path):
    """An imagefolder with RGBA, non-square, corrupt, missing and zero-byte entries."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(12):
        arr = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)  # non-square: centre-cropped
        Image.fromarray(arr).save(folder / f"img{i}.png")
        rows.append({"file_name": f"img{i}.png", "text": f"caption number {i % 4}",
                     "style": ["noto", "twemoji", "noto"][i % 3]})
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red -> white
    rgba.save(folder / "alpha.png")
    rows.append({"file_name": "alpha.png", "text": "a transparent image"})
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    rows.append({"file_name": "corrupt.png", "text": "broken"})
    (folder / "empty.png").write_bytes(b"")
    rows.append({"file_name": "empty.png", "text": "empty"})
    rows.append({"file_name": "missing.png", "text": "not there"})
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


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


def _tiny_options(tmp_path, data, steps, name="run", **kw):
    return TrainOptions(data=str(data), out=str(tmp_path / name), resolution=32, steps=steps, batch=4,
                        preset="tiny", threads=1, log_every=2, sample_every=4, checkpoint_every=3,
                        progress=False, cache_dir=str(tmp_path / "cache"), **kw)


def test_training_writes_stats_samples_plot_and_a_loadable_model(tmp_path, messy_imagefolder):
    result = Trainer(_tiny_options(tmp_path, messy_imagefolder, 4)).run()
    run = tmp_path / "run"
    assert result["step"] == 4 and result["images_seen"] == 16
    stats = [json.loads(l) for l in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4] and "seed_pixel_std" in stats[-1]
    assert (run / "samples.png").exists() and (run / "loss.png").exists()
    assert "corrupt.png" in (run / "skipped.txt").read_text()
    g, data = checkpoint.load_generator(run / "model")
    assert data["trained"]["images_seen"] == 16 and (run / "model" / "README.md").exists()
    assert data["trained"]["styles"] == ["noto", "twemoji"]  # what hosts offer in their style box
    assert Pipeline.load(run / "model").info.styles == ("noto", "twemoji")


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
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "ganvas", "train", "--data", str(data), "--out", str(run),
           "--resolution", "32", "--batch", "2", "--preset", "tiny", "--threads", "1",
           "--device", "cpu", "--no-progress", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_mode_seeking_pairs_noises_per_caption_and_spreads_the_images(tmp_path, messy_imagefolder):
    def seed_spread(weight):
        torch.manual_seed(0)
        trainer = Trainer(_tiny_options(tmp_path, messy_imagefolder, 1, name=f"ms{weight}", mode_seeking=weight,
                                        lr_g=1e-3))
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


def test_augment_ops_are_selectable_and_unknown_ones_named():
    from ganvas.core.model.augment import diff_augment

    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(diff_augment(x, ops=""), x)
    cut = diff_augment(x, ops="cutout", generator=torch.Generator().manual_seed(0))
    assert (cut == 0).any() and cut.shape == x.shape
    with pytest.raises(ValueError, match="colour"):
        diff_augment(x, ops="translation,colour")


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


# --- config.json and weights that do not fit: one line naming the file and the field/tensor -----------------

def _edit_config(folder, **changes):
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data["generator"].update(changes)
    path.write_text(json.dumps(data))  # json.dumps writes NaN as NaN, which json.loads reads back


@pytest.mark.parametrize("field, value", [
    ("z_dim", "64"), ("z_dim", 64.5), ("z_dim", float("nan")), ("g_channels", True), ("max_mult", None),
    ("cond_dim", [32]), ("resolution", "32"), ("text_encoder", 5), ("text_encoder", False)])
def test_mistyped_config_values_name_the_file_and_the_field(tmp_path, field, value):
    folder = _save_tiny(tmp_path)
    _edit_config(folder, **{field: value})
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load_generator(folder)
    message = str(caught.value)
    assert str(folder / "config.json") in message and "generator" in message and f"'{field}'" in message
    assert "\n" not in message


def test_every_config_field_is_type_checked_so_new_fields_are_covered():
    """Generic over the dataclass: a field added to ModelConfig later is checked without new code."""
    from dataclasses import fields

    good = ModelConfig().to_dict()
    for f in fields(ModelConfig):
        wrong = "text" if not isinstance(good[f.name], str) else 7
        with pytest.raises(ValueError, match=f"'{f.name}'"):
            ModelConfig.from_dict({**good, f.name: wrong})
        with pytest.raises(ValueError, match=f"'{f.name}'"):
            ModelConfig.from_dict({**good, f.name: True})
    assert ModelConfig.from_dict(good) == ModelConfig()
    with pytest.raises(ValueError, match="object"):
        ModelConfig.from_dict(["resolution", 32])


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


def test_pipeline_interpolate_checks_the_frame_count_before_building_frames(tmp_path):
    """Pipeline.interpolate(steps=10^9) is refused by the request policy before the frame list exists.
    Run in a process with a capped address space: the old order raised MemoryError there."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import save_tiny_checkpoint
        from ganvas.core.pipeline import Pipeline
        from ganvas.core.plugin_manager import GanvasPlugins
        from ganvas.core.requests import RequestRefused
        from pathlib import Path

        pipe = Pipeline.load(str(save_tiny_checkpoint(Path({str(tmp_path)!r}) / "tiny")),
                             plugins=GanvasPlugins(entry_points=False, env={{}}))
        for frames in (None, [3]):
            try:
                pipe.interpolate(["a red apple", "a green apple"], steps=10 ** 9, seed=1, frames=frames)
            except RequestRefused as exc:
                print(exc)
    """)
    cap = 3 << 30  # the process needs ~1.3 GB; the old frame list alone needed 8 GB
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["request refused by request_policy: n=1000000001 images requested; "
                                        "the limit is 100"] * 2
