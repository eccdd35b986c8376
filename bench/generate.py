"""Generation speed of the shipped GAN, against a diffusion baseline of similar size, in one run.

    python bench/generate.py [--model shapes] [--threads 1] [--size 256] [--json] [--out FILE]

GAN: the full pipeline (request, plugins, noise, generator, PIL conversion, PNG metadata) with the
prompt embedding cached, as a warm server or a --prompts batch sees it: latency at batch 1 and
throughput at batch 64 (each image computed alone, the pipeline's exact-seed default; also the
batched mode). Diffusion baseline: a diffusers UNet2DConditionModel with random weights, sized to the
generator's parameter count, cross-attention on the same 384-d sentence vector, 25 DDIM steps, same
resolution, no classifier-free guidance (which would double its cost). Text encoding is excluded from
both. Weights do not change speed, so random weights are a fair stand-in.

The GAN must be >= 25x faster per image; the script prints both ratios and exits 1 if either is short.
Needs `pip install diffusers` for the baseline; without it the baseline is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

REQUIRED_SPEEDUP = 25.0
PROMPT = "a large red circle in the centre"


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- GAN ----------------------------------------------------------------------------------------------------


def load_gan(model: str | None):
    """The shipped model through the normal plugin path; a random default-config generator if none is
    shipped yet (speed does not depend on the weights)."""
    from ganvas.core.errors import ModelNotFound
    from ganvas.core.hookspecs import hookimpl
    from ganvas.core.pipeline import Pipeline
    from ganvas.core.plugin_manager import GanvasPlugins
    from ganvas.core.requests import default_model_name

    plugins = GanvasPlugins(entry_points=False)  # built-ins only: measure ganvas, not whatever is installed
    try:
        return Pipeline.load(model, plugins=plugins), None
    except ModelNotFound:
        if model is not None:
            raise

    class RandomModel:
        @hookimpl
        def ganvas_register_models(self, register):
            def build():
                from ganvas.core.model.config import ModelConfig
                from ganvas.core.model.networks import Generator

                torch.manual_seed(0)
                return Generator(ModelConfig())

            register("random-default-config", build)

    plugins.register(RandomModel(), "bench-random-model")
    note = (
        f"model {default_model_name()!r} is not shipped yet: timing a randomly initialised generator with the "
        f"default ModelConfig instead"
    )
    return Pipeline.load("random-default-config", plugins=plugins), note


def bench_gan(pipe, repeat: int, size: int | None = None) -> dict:
    pipe(PROMPT, n=2, seed=0, size=size)  # warm-up: text encoder + upsampler load, prompt cache, first calls
    seeds = iter(range(10_000, 20_000))
    latency = median_time(lambda: pipe(PROMPT, n=1, seed=next(seeds), size=size), repeat)
    batch64 = median_time(lambda: pipe(PROMPT, n=64, seed=next(seeds), size=size), 3)
    exact, pipe.exact_seeds = pipe.exact_seeds, False
    try:
        batched = median_time(lambda: pipe(PROMPT, n=64, seed=next(seeds), size=size), 3)
    finally:
        pipe.exact_seeds = exact
    G = pipe.model.generator
    z = torch.randn(1, pipe.info.z_dim)
    text = pipe.encode([PROMPT])
    with torch.inference_mode():
        G(z, text)
        forward = median_time(lambda: G(z, text), repeat)
    report = {
        "model": pipe.name,
        "resolution": pipe.resolution,
        "size": size or pipe.resolution,
        "params": count_parameters(G),
        "latency_batch1_s": latency,
        "throughput_batch64_img_s": 64 / batch64,
        "throughput_batch64_batched_img_s": 64 / batched,
        "generator_forward_batch1_s": forward,
    }
    if size is not None and size > pipe.resolution:
        up = pipe.load_upsampler()
        x = torch.zeros(1, up.info.channels, pipe.resolution, pipe.resolution).contiguous(
            memory_format=torch.channels_last
        )
        with torch.inference_mode():
            up.module(x)
            alone = median_time(lambda: up.module(x), repeat)
        report["upsampler"] = {
            "name": up.info.name,
            "hash": up.info.hash,
            "scale": up.info.scale,
            "params": count_parameters(up.module),
            "forward_batch1_s": alone,
        }
    return report


# --- diffusion baseline -------------------------------------------------------------------------------------


def make_unet(width: int, resolution: int):
    from diffusers import UNet2DConditionModel

    return (
        UNet2DConditionModel(
            sample_size=resolution,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(width, 2 * width, 2 * width),
            # Attention only at the two lower resolutions: the cheapest sensible layout, so the baseline
            # gets its best chance (full-resolution attention measured ~3x slower here).
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=384,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        .eval()
        .requires_grad_(False)
    )


def sized_unet(target_params: int, resolution: int):
    """The UNet width (multiple of 8) whose parameter count is closest to the GAN generator's."""
    best = None
    for width in range(8, 257, 8):
        unet = make_unet(width, resolution)
        params = count_parameters(unet)
        if best is None or abs(params - target_params) < abs(best[1] - target_params):
            best = (unet, params, width)
        if params > target_params:
            break
    return best


def bench_diffusion(target_params: int, resolution: int, steps: int, batch: int) -> dict:
    from diffusers import DDIMScheduler

    unet, params, width = sized_unet(target_params, resolution)
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    text = torch.nn.functional.normalize(torch.randn(1, 1, 384), dim=-1)

    def sample(n: int):
        scheduler.set_timesteps(steps)
        x = torch.randn(n, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
        cond = text.expand(n, -1, -1)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                eps = unet(x, t, encoder_hidden_states=cond).sample
                x = scheduler.step(eps, t, x).prev_sample
        return x

    with torch.inference_mode():
        unet(torch.randn(1, 3, resolution, resolution), 10, encoder_hidden_states=text)  # warm-up
    per_image_b1 = median_time(lambda: sample(1), 2)
    per_image_bn = median_time(lambda: sample(batch), 1) / batch
    return {
        "params": params,
        "width": width,
        "steps": steps,
        "sampler": "DDIM",
        "guidance": "none",
        "seconds_per_image_batch1": per_image_b1,
        f"seconds_per_image_batch{batch}": per_image_bn,
        "best_seconds_per_image": min(per_image_b1, per_image_bn),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model name or checkpoint folder (default: the shipped default)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, see FINDINGS.md)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs for batch-1 medians")
    parser.add_argument("--steps", type=int, default=25, help="diffusion sampling steps")
    parser.add_argument("--diffusion-batch", type=int, default=8, help="batch for the diffusion throughput run")
    parser.add_argument("--skip-diffusion", action="store_true")
    parser.add_argument(
        "--size",
        type=int,
        help="output side through the pipeline (above native: the upsampler, "
        "e.g. 256); the diffusion baseline stays at the model's native resolution",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    parser.add_argument("--out", help="also write the JSON report to this file (e.g. bench/results/x.json)")
    args = parser.parse_args(argv)

    from ganvas.core.pipeline import configure_threads

    configure_threads(args.threads)
    say = (lambda *a: None) if args.json else print
    pipe, note = load_gan(args.model)
    if note:
        say(f"note: {note}")
    report = {
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    gan = report["gan"] = bench_gan(pipe, args.repeat, args.size)
    say(f"GAN {gan['model']} ({gan['resolution']} px, {gan['params'] / 1e6:.2f} M params, {args.threads} thread(s))")
    if "upsampler" in gan:
        up = gan["upsampler"]
        say(
            f"  output {gan['size']} px through upsampler {up['name']} (x{up['scale']}, {up['params'] / 1e3:.0f} k params, "
            f"forward alone {up['forward_batch1_s'] * 1e3:.2f} ms)"
        )
    say(
        f"  latency, batch 1 (full pipeline): {gan['latency_batch1_s'] * 1e3:.2f} ms"
        f"   (generator forward alone {gan['generator_forward_batch1_s'] * 1e3:.2f} ms)"
    )
    say(
        f"  throughput, batch 64: {gan['throughput_batch64_img_s']:.0f} img/s exact seeds, "
        f"{gan['throughput_batch64_batched_img_s']:.0f} img/s batched"
    )

    status = 0
    if args.skip_diffusion:
        say("diffusion baseline: skipped (--skip-diffusion)")
    else:
        try:
            import diffusers  # noqa: F401
        except ImportError:
            say("diffusion baseline: skipped, diffusers is not installed (pip install diffusers)")
            report["diffusion"] = None
        else:
            diff = report["diffusion"] = bench_diffusion(
                gan["params"], gan["resolution"], args.steps, args.diffusion_batch
            )
            say(
                f"diffusion baseline: UNet2DConditionModel {diff['params'] / 1e6:.2f} M params (width {diff['width']}), "
                f"{args.steps} DDIM steps, {gan['resolution']} px, random weights"
            )
            say(
                f"  per image: {diff['seconds_per_image_batch1'] * 1e3:.0f} ms at batch 1, "
                f"{diff[f'seconds_per_image_batch{args.diffusion_batch}'] * 1e3:.0f} ms at batch {args.diffusion_batch}"
            )
            ratio_latency = diff["seconds_per_image_batch1"] / gan["latency_batch1_s"]
            ratio_throughput = gan["throughput_batch64_img_s"] * diff["best_seconds_per_image"]
            report["speedup"] = {
                "batch1_latency": ratio_latency,
                "throughput": ratio_throughput,
                "required": REQUIRED_SPEEDUP,
            }
            ok = min(ratio_latency, ratio_throughput) >= REQUIRED_SPEEDUP
            say(
                f"speed-up per image: {ratio_latency:.0f}x at batch 1, {ratio_throughput:.0f}x best-vs-best "
                f"throughput (required >= {REQUIRED_SPEEDUP:.0f}x): {'PASS' if ok else 'FAIL'}"
            )
            status = 0 if ok else 1
    print(json.dumps(report, indent=None if not args.json else 2))
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(json.dumps(report, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
