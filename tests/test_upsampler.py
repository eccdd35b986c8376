"""Upsamplers: checkpoint folders, the registration hook, `size` above a model's native side in the pipeline
(and so in every host), `Pipeline.upscale`, `ganvas upscale`, training/evaluation on tiny fixtures, and
(slow) the shipped upsampler's quality beside Lanczos on the emoji256a mini set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO, pixels
from PIL import Image, ImageDraw

import ganvas.core.upscaling as ups
from ganvas.core.hookspecs import hookimpl
from ganvas.core.io.checkpoint import CheckpointError, load_upsampler, save_upsampler
from ganvas.core.model.upsampler import ARCHITECTURE, Upsampler, UpsamplerConfig
from ganvas.core.pipeline import Pipeline
from ganvas.core.requests import GanvasError, InvalidRequest

PROMPT = "a large blue square"
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def fresh_upsamplers(monkeypatch):
    monkeypatch.delenv("GANVAS_UPSAMPLER", raising=False)
    ups.clear_cache()
    yield
    ups.clear_cache()


def tiny_upsampler(in_resolution=32, scale=4, seed=0, channels=4) -> Upsampler:
    """A few hundred parameters, tail initialised at random so it differs from bilinear."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = Upsampler(
            UpsamplerConfig(in_resolution=in_resolution, scale=scale, channels=channels, width=4, blocks=1)
        )
        torch.nn.init.normal_(module.tail.weight, std=0.05)
    return module.eval()


@pytest.fixture
def tiny_upsampler_folder(tmp_path) -> Path:
    return save_upsampler(tmp_path / "upsamplers" / "tiny-x4", tiny_upsampler(), {"note": "random, tests"}, "# tiny\n")


def sprite(side=32, alpha=True) -> Image.Image:
    im = Image.new("RGBA" if alpha else "RGB", (side, side), (0, 0, 0, 0) if alpha else (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.ellipse([side // 8, side // 8, side - side // 4, side - side // 4], fill=(220, 40, 30, 255))
    d.rectangle([side // 2, side // 2, side - 2, side - 3], fill=(30, 90, 200, 160))
    return im


class TinyUpsamplers:
    def __init__(self, folder):
        self.folder = folder

    @hookimpl
    def ganvas_register_upsamplers(self, register):
        register("tiny-x4", self.folder, description="tests")


# --- the network and its checkpoint folder -------------------------------------------------------------------


def test_checkpoint_round_trip_and_refusals(tmp_path, tiny_upsampler_folder):
    module, config = load_upsampler(tiny_upsampler_folder)
    assert config["architecture"] == ARCHITECTURE and (config["in_resolution"], config["out_resolution"]) == (32, 128)
    x = torch.rand(1, 4, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(module(x), tiny_upsampler()(x))
        assert module(x).shape == (1, 4, 128, 128)
    assert not list(tiny_upsampler_folder.glob("*.pt")) and not list(tiny_upsampler_folder.glob("*.bin"))
    bad = tmp_path / "bad"
    save_upsampler(bad, tiny_upsampler())
    data = json.loads((bad / "config.json").read_text())
    data["upsampler"]["width"] = 8
    (bad / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_upsampler(bad)
    data["upsampler"] = {"width": "8"}
    (bad / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="bad upsampler config"):
        load_upsampler(bad)


def test_untrained_upsampler_is_bilinear_and_keeps_transparency():
    module = Upsampler(UpsamplerConfig(in_resolution=16, width=4, blocks=1))  # tail starts at zero
    x = torch.rand(2, 4, 16, 16) * 2 - 1
    with torch.inference_mode():
        expected = torch.nn.functional.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
        assert torch.allclose(module(x), expected)
    loaded = ups.LoadedUpsampler(
        ups.UpsamplerInfo("t", "h", 16, 4, 4), module, torch.device("cpu"), __import__("threading").Lock()
    )
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    out = ups.upscale_image(loaded, clear)
    assert out.mode == "RGBA" and out.size == (64, 64) and np.asarray(out).max() == 0
    opaque = ups.upscale_image(loaded, sprite(16, alpha=False))
    assert opaque.mode == "RGB" and opaque.size == (64, 64)


def test_upsampler_folders_are_not_models(tmp_path, tiny_upsampler_folder, monkeypatch, plugins):
    monkeypatch.setenv("GANVAS_MODELS_PATH", str(tmp_path))
    assert "tiny-x4" in plugins.upsamplers() and "tiny-x4" not in plugins.models()
    assert "upsamplers" not in plugins.models()
    monkeypatch.setenv("GANVAS_MODELS_PATH", str(tiny_upsampler_folder.parent))
    assert "tiny-x4" in plugins.upsamplers() and "tiny-x4" not in plugins.models()


# --- the hook ----------------------------------------------------------------------------------------------


def test_hook_ganvas_register_upsamplers(plugins, tiny_checkpoint, tiny_upsampler_folder):
    class CodeUpsampler(torch.nn.Module):
        """A third-party upsampler from code: nearest-neighbour x2 (any nn.Module with .config)."""

        class config:
            scale, channels, in_resolution = 2, 4, 32

        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    class Upsamplers:
        @hookimpl
        def ganvas_register_upsamplers(self, register):
            register("from-code", CodeUpsampler, description="nearest x2")
            register("tiny-x4", tiny_upsampler_folder)

    assert plugins.register(Upsamplers(), "third-party")
    found = plugins.upsamplers()
    assert found["from-code"].plugin == "third-party" and found["from-code"].description == "nearest x2"
    pipe = Pipeline.load(str(tiny_checkpoint), plugins=plugins)
    assert pipe.load_upsampler().info.name == "from-code"  # first registered for the model's 32 px
    result = pipe(PROMPT, seed=2, size=64)
    native = pipe(PROMPT, seed=2).images[0]
    assert result.images[0].size == (64, 64) and result.metadata[0]["upsampler"].startswith("from-code")
    assert np.array_equal(pixels(result.images[0]), pixels(native.resize((64, 64), Image.NEAREST)))
    pipe.upsampler_name = "tiny-x4"
    assert pipe(PROMPT, seed=2, size=128).metadata[0]["upsampler"].startswith("tiny-x4")
    pipe.upsampler_name = "no-such-upsampler"
    with pytest.raises(GanvasError, match="unknown upsampler"):
        pipe(PROMPT, seed=2, size=128)


# --- the pipeline's size rule -------------------------------------------------------------------------------


@pytest.fixture
def upipe(plugins, tiny_checkpoint, tiny_upsampler_folder):
    assert plugins.register(TinyUpsamplers(tiny_upsampler_folder), "tiny-upsamplers")
    return Pipeline.load(str(tiny_checkpoint), plugins=plugins)


def test_size_above_native_uses_the_upsampler_and_never_stretches(upipe):
    native = upipe(PROMPT, seed=5).images[0]
    big = upipe(PROMPT, seed=5, size=128)
    assert big.images[0].size == (128, 128) and big.metadata[0]["upsampler"].startswith("tiny-x4")
    assert "Size: 128x128" in big.images[0].info["parameters"] and "upscale" in big.timings
    # generate(size) == upscale(generate()): the upsampler sees the native image's pixels, alone
    assert np.array_equal(pixels(big.images[0]), pixels(upipe.upscale(native)))
    assert not np.array_equal(pixels(big.images[0]), pixels(native.resize((128, 128), Image.LANCZOS)))
    # between native and one pass: upsample, then Lanczos down; beyond one pass: upsample, then resize
    assert np.array_equal(
        pixels(upipe(PROMPT, seed=5, size=50).images[0]), pixels(upipe.upscale(native).resize((50, 50), Image.LANCZOS))
    )
    assert np.array_equal(
        pixels(upipe(PROMPT, seed=5, size=200).images[0]),
        pixels(upipe.upscale(native).resize((200, 200), Image.LANCZOS)),
    )
    small = upipe(PROMPT, seed=5, size=16)
    assert "upsampler" not in small.metadata[0] and "upscale" not in small.timings
    assert np.array_equal(pixels(small.images[0]), pixels(native.resize((16, 16), Image.LANCZOS)))
    # same seed, same pixels, alone or inside a batch
    batch = upipe(PROMPT, n=3, seed=4, size=128)
    assert np.array_equal(pixels(batch.images[1]), pixels(big.images[0]))


def test_no_upsampler_refuses_instead_of_stretching(tiny_checkpoint, monkeypatch):
    from ganvas.core.plugin_manager import GanvasPlugins

    manager = GanvasPlugins(entry_points=False, env={"GANVAS_DISABLE_PLUGINS": "default_backend"})
    pipe = Pipeline.load(str(tiny_checkpoint), plugins=manager)
    with pytest.raises(InvalidRequest, match="no upsampler") as err:
        pipe(PROMPT, seed=1, size=128)
    assert err.value.param == "size"
    assert pipe(PROMPT, seed=1, size=16).images[0].size == (16, 16)  # downsizing needs none


def test_pipeline_upscale_any_image(upipe):
    rgba = upipe.upscale(sprite(32))
    assert rgba.mode == "RGBA" and rgba.size == (128, 128)
    a = np.asarray(rgba)[..., 3]
    assert a[0, 0] == 0 and a[50, 50] > 150  # transparent corner, (nearly) opaque inside
    rgb, other = upipe.upscale([sprite(32, alpha=False), sprite(20)], size=64)
    assert (rgb.mode, rgb.size, other.mode, other.size) == ("RGB", (64, 64), "RGBA", (64, 64))
    assert upipe.upscale(sprite(48)).size == (192, 192)  # own resolution x4, nothing resized to 32 first
    with pytest.raises(InvalidRequest):
        upipe.upscale(Image.new("RGB", (600, 600)))


def test_cli_upscale_and_upsamplers(tmp_path, tiny_upsampler_folder, monkeypatch):
    from ganvas.core.hosts.cli.main import main
    from ganvas.core.io.png import read_png_text

    monkeypatch.setenv("GANVAS_MODELS_PATH", str(tmp_path))
    src = tmp_path / "sprite.png"
    sprite(32).save(src)
    runner = CliRunner()
    listed = runner.invoke(main, ["upsamplers", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {"name": "tiny-x4", "in_resolution": 32, "out_resolution": 128}.items() <= [
        r for r in json.loads(listed.output) if r["name"] == "tiny-x4"
    ][0].items()
    out = runner.invoke(main, ["upscale", str(src), "--out", str(tmp_path / "out"), "--upsampler", "tiny-x4"])
    assert out.exit_code == 0, out.output
    path = Path(out.output.split()[0])
    assert path.name == "sprite-x4.png"
    with Image.open(path) as im:
        assert im.size == (128, 128) and im.mode == "RGBA"
    assert read_png_text(path)["upsampler"].startswith("tiny-x4")
    again = runner.invoke(
        main, ["upscale", str(src), "--out", str(tmp_path / "out"), "--size", "100", "--upsampler", "tiny-x4"]
    )
    assert again.exit_code == 0 and Path(again.output.split()[0]).name == "sprite-100px.png"
    bad = runner.invoke(main, ["upscale", str(src), "--upsampler", "nope"])
    assert bad.exit_code == 1 and "unknown upsampler 'nope'" in bad.output


def test_server_and_hot_folder_sizes_reach_the_pipeline():
    from ganvas.core.hosts.server.validation import parse_size
    from ganvas.core.hosts.watch.jobs import parse_job

    assert parse_size("256x256") == 256 and parse_size("auto") is None
    job = parse_job("job.json", b'[{"prompt": "fox", "size": 256}, {"prompt": "cat", "size": "128x128"}]')
    assert [e.size for e in job.entries] == [256, 128] and not job.problems


# --- training and evaluation on a tiny fixture ---------------------------------------------------------------


def make_dataset(root: Path, side=32, per_split=(12, 4)) -> Path:
    """An imagefolder of RGBA sprites (train/ and test/) with metadata.jsonl, like emoji256a's layout."""
    for split, count in zip(("train", "test"), per_split):
        folder = root / split
        folder.mkdir(parents=True)
        rows = []
        for i in range(count):
            im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
            d = ImageDraw.Draw(im)
            r = 3 + i % 5
            d.ellipse([r, r + i % 3, side - r, side - r], fill=(40 * i % 255, 200, 90, 255))
            d.line([0, i % side, side, side - i % side], fill=(10, 10, 10, 255), width=2)
            name = f"img{i:03d}_{split}.png"
            im.save(folder / name)
            rows.append({"file_name": name, "text": f"sprite {i}", "label": f"sprite {i % 4}"})
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_train_resume_and_evaluate_on_a_tiny_set(tmp_path):
    from ganvas.core.training.upsampler import UpsamplerTrainOptions, evaluate_upsampler, info_for, train_upsampler

    data = make_dataset(tmp_path / "data")
    opts = UpsamplerTrainOptions(
        data=str(data),
        out=str(tmp_path / "run"),
        hr_side=32,
        width=4,
        blocks=1,
        steps=4,
        batch=2,
        crop=4,
        val_every=2,
        checkpoint_every=2,
        val_images=4,
    )
    first = train_upsampler(opts, log=lambda m: None)
    assert first["step"] == 4 and (tmp_path / "run" / "model" / "model.safetensors").exists()
    module, config = load_upsampler(tmp_path / "run" / "model")
    assert config["trained"]["options"]["steps"] == 4 and config["out_resolution"] == 32
    opts.steps, opts.resume = 6, True
    assert train_upsampler(opts, log=lambda m: None)["step"] == 6
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4, 6]
    report = evaluate_upsampler(info_for(module), data, "test", log=lambda m: None)
    assert report["images"] == 4 and set(report["methods"]) == {"upsampler", "lanczos", "bicubic"}
    for scores in report["methods"].values():
        assert 5 < scores["psnr_rgb"] < 100 and 0 < scores["ssim_rgb"] <= 1


# The reconstruction-only recipe before the adversarial options existed (commit 1058c50): per-tensor sums of the
# upsampler after 6 steps on make_dataset, and the logged MSE of each validation window.
RECONSTRUCTION_ONLY_SUMS = {
    "body.0.conv1.bias": -0.08896438521333039,
    "body.0.conv1.weight": -1.6302206459222361,
    "body.0.conv2.bias": -0.2373255006968975,
    "body.0.conv2.weight": 1.7553258144762367,
    "head.bias": -0.1100936399307102,
    "head.weight": -0.5905086257262155,
    "tail.bias": -0.0069333674109657295,
    "tail.weight": 0.1905345437780852,
}
RECONSTRUCTION_ONLY_MSE = [0.115781769156456, 0.10913572832942009, 0.12416296824812889]


def tiny_options(tmp_path, data, out="run", **kw):
    from ganvas.core.training.upsampler import UpsamplerTrainOptions

    base = dict(
        data=str(data),
        out=str(tmp_path / out),
        hr_side=32,
        width=4,
        blocks=1,
        steps=6,
        batch=2,
        crop=4,
        val_every=2,
        checkpoint_every=2,
        val_images=4,
    )
    return UpsamplerTrainOptions(**{**base, **kw})


def test_adv_weight_zero_is_the_reconstruction_only_recipe(tmp_path):
    from safetensors.torch import load_file

    from ganvas.core.training.upsampler import train_upsampler

    data = make_dataset(tmp_path / "data")
    train_upsampler(tiny_options(tmp_path, data, adv_weight=0.0), log=lambda m: None)
    state = load_file(str(tmp_path / "run" / "training_state.safetensors"))
    sums = {k[len("model/") :]: float(v.double().sum()) for k, v in state.items() if k.startswith("model/")}
    assert sums == pytest.approx(RECONSTRUCTION_ONLY_SUMS, rel=1e-5, abs=1e-7)
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [s["mse"] for s in stats] == pytest.approx(RECONSTRUCTION_ONLY_MSE, rel=1e-5)
    assert not any(k.startswith("disc/") for k in state) and "d_loss" not in stats[0]
    assert "adversarial" not in json.loads((tmp_path / "run" / "model" / "config.json").read_text())["trained"]


def test_adversarial_fine_tune_resumes_exactly_and_keeps_its_critic_in_the_run(tmp_path):
    from safetensors.torch import load_file

    from ganvas.core.training.upsampler import train_upsampler

    data = make_dataset(tmp_path / "data")
    init = save_upsampler(tmp_path / "init", tiny_upsampler(in_resolution=8), {"note": "phase 1"})
    adv = dict(init=str(init), adv_weight=0.05, adv_start_step=1, steps=4, val_every=2, checkpoint_every=1)
    straight = train_upsampler(tiny_options(tmp_path, data, "straight", **adv), log=lambda m: None)

    class Crash(Exception):
        pass

    def crash_at_step_2(message):  # after step 2's updates, before its state is saved: resume from step 1
        if message.startswith('{"step": 2,'):
            raise Crash

    with pytest.raises(Crash):
        train_upsampler(tiny_options(tmp_path, data, "resumed", **adv), log=crash_at_step_2)
    resumed = train_upsampler(tiny_options(tmp_path, data, "resumed", resume=True, **adv), log=lambda m: None)
    assert straight["step"] == resumed["step"] == 4
    a = load_file(str(tmp_path / "straight" / "training_state.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "training_state.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("disc/") for k in a) and any(k.startswith("opt:adam_d") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    model = tmp_path / "resumed" / "model"
    with torch.device("meta"):
        expected = set(Upsampler(UpsamplerConfig(in_resolution=8, width=4, blocks=1)).state_dict())
    assert set(load_file(str(model / "model.safetensors"))) == expected
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors"]
    trained = json.loads((model / "config.json").read_text())["trained"]
    assert trained["adversarial"]["weight"] == 0.05 and trained["adversarial"]["kept"] == "last"
    assert trained["init"]["trained"] == {"note": "phase 1"} and trained["steps"] == 4
    stats = [json.loads(line) for line in (tmp_path / "resumed" / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats][-2:] == [2, 4] and "g_adv" in stats[-1] and "val_gmsd_rgb" in stats[-1]
    shipped = REPO / "models" / "upsamplers" / "upsampler-x4"
    assert not any(
        k.startswith("disc") or "parametrizations" in k for k in load_file(str(shipped / "model.safetensors"))
    )
    assert not list(shipped.glob("training_state*"))


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("adv_weight", -0.1, "--adv-weight must be a finite number >= 0"),
        ("adv_weight", float("nan"), "--adv-weight must be a finite number >= 0"),
        ("adv_start_step", -1, "--adv-start-step must be an integer >= 0"),
        ("d_lr", 0.0, "--d-lr must be a finite number > 0"),
        ("adv_loss", "wgan", "--adv-loss must be hinge or nonsaturating"),
        ("keep", "worst", "--keep must be best or last"),
        ("d_width", 0, "--d-width must be an integer in 1..256"),
    ],
)
def test_bad_adversarial_options_are_refused_by_name(tmp_path, option, value, message):
    from ganvas.core.training.upsampler import train_upsampler

    with pytest.raises(ValueError, match=message):
        train_upsampler(tiny_options(tmp_path, tmp_path / "nowhere", **{option: value}), log=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_init_must_fit_and_the_cli_names_bad_values(tmp_path):
    from ganvas.core.hosts.cli.main import main
    from ganvas.core.training.upsampler import train_upsampler

    data = make_dataset(tmp_path / "data")
    wide = save_upsampler(tmp_path / "wide", Upsampler(UpsamplerConfig(in_resolution=8, width=8, blocks=1)))
    with pytest.raises(ValueError, match="--init .*width 8.*width 4"):
        train_upsampler(tiny_options(tmp_path, data, init=str(wide)), log=lambda m: None)
    with pytest.raises(ValueError, match="--init .*not a ganvas upsampler|--init .*config.json"):
        train_upsampler(tiny_options(tmp_path, data, init=str(data)), log=lambda m: None)
    out = CliRunner().invoke(
        main, ["train-upsampler", "--data", str(data), "--out", str(tmp_path / "cli"), "--adv-weight", "-1"]
    )
    assert out.exit_code == 2 and "--adv-weight must be a finite number >= 0" in out.output, out.output


def test_measures_are_exact_on_known_images():
    from ganvas.core.training.upsampler import psnr, ssim

    a = torch.zeros(3, 16, 16)
    assert psnr(a, a + 0.1) == pytest.approx(20.0) and ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, torch.rand(3, 16, 16)) < 0.5
    from ganvas.core.training.upsampler import gmsd, gradient_ratio

    edge = torch.zeros(3, 16, 16)
    edge[:, :, 8:] = 1
    blurred = torch.nn.functional.avg_pool2d(edge[None], 3, 1, 1, count_include_pad=False)[0]
    assert gmsd(edge, edge) == 0 and gmsd(blurred, edge) > 0 and gradient_ratio(edge, edge) == 1
    assert gradient_ratio(blurred, edge) == pytest.approx(1.0)  # the same step, spread: same total variation
    assert gradient_ratio(edge + 0.1 * (torch.arange(16) % 2), edge) > 1  # false edges (a comb) add energy


# --- the shipped upsampler (slow) ----------------------------------------------------------------------------


@pytest.mark.slow
def test_shipped_upsampler_beats_lanczos_on_the_mini_set(plugins):
    from ganvas.core.training.upsampler import evaluate_upsampler

    data = SHARED / "emoji256a-mini"
    if not (data / "test" / "metadata.jsonl").exists():
        pytest.skip(f"{data} is not here (the shared data folder beside the repository)")
    chosen = ups.choose(plugins, 64)
    assert chosen is not None and chosen[0] == "upsampler-x4"
    loaded = ups.load(*chosen[:2], "cpu", chosen[2])
    lr = SHARED / "emoji64a-mini"
    report = evaluate_upsampler(loaded, data, "test", lr if lr.is_dir() else None, log=lambda m: None)
    gain = report["gain_over_lanczos_db"]
    assert gain["rgb"] >= 1.5 and gain["alpha"] >= 1.5, report
    ours, lanczos = report["methods"]["upsampler"], report["methods"]["lanczos"]
    assert ours["ssim_rgb"] > lanczos["ssim_rgb"] and ours["ssim_alpha"] > lanczos["ssim_alpha"]
    card = (REPO / "models" / "upsamplers" / "upsampler-x4" / "README.md").read_text(encoding="utf-8")
    assert "ganvas eval-upsampler" in card and "## Known limits" in card
