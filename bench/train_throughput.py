"""Training throughput of the shipped configuration: images/s at 32 and 64 px, fp32 and bf16, in one run.

    python bench/train_throughput.py [--threads 1] [--batch 32] [--steps 20]

Synthetic batches (random pixels, random caption vectors) so the number is the model's cost alone;
ratios (bf16/fp32, 64/32 px) are measured side by side because these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ganvas.core.datasets.folders import CaptionedImages
from ganvas.core.training.trainer import Trainer, TrainOptions


def measure(resolution: int, batch: int, steps: int, bf16: bool, threads: int, preset: str, tmp: str) -> float:
    n = 256
    data = CaptionedImages(
        torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8),
        [f"caption {i}" for i in range(64)],
        torch.arange(n) % 64,
    )
    opts = TrainOptions(
        data="synthetic",
        out=f"{tmp}/bench-{resolution}-{bf16}",
        resolution=resolution,
        steps=10**9,
        batch=batch,
        preset=preset,
        threads=threads,
        bf16=bf16,
        progress=False,
        cache_dir=f"{tmp}/cache",
    )
    trainer = Trainer(opts, dataset=data, log=lambda *_: None)
    for _ in range(3):  # warm-up (allocator, oneDNN kernels)
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return steps * batch / (time.perf_counter() - start)


def main():
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--preset", default="small")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for res in (32, 64):
            for bf16 in (False, True):
                rate = measure(res, args.batch, args.steps, bf16, args.threads, args.preset, tmp)
                results[f"{res}px_{'bf16' if bf16 else 'fp32'}"] = round(rate, 1)
                print(f"{res} px {'bf16' if bf16 else 'fp32'}: {rate:7.1f} images/s", flush=True)
    results["bf16_speedup_32px"] = round(results["32px_bf16"] / results["32px_fp32"], 2)
    results["cost_64px_vs_32px"] = round(results["32px_fp32"] / results["64px_fp32"], 2)
    print(json.dumps({"threads": args.threads, "batch": args.batch, "preset": args.preset, **results}))


if __name__ == "__main__":
    main()
