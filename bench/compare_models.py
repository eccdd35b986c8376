"""Two models' generation speed through the full pipeline, interleaved in one run, as ratios.

    python bench/compare_models.py emoji64 /path/to/previous/emoji64 [--rounds 5] [--json]

A shared machine's load changes from minute to minute, so absolute img/s of two separate runs can't be
compared; here each round times both models back to back (batch-1 latency and batch-64 throughput, one
thread, the pipeline's exact-seed default), and the report gives each model's medians over rounds and
the median of the per-round ratios (new / old).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import PROMPT, median_time  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("new")
    parser.add_argument("old")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=15, help="timed batch-1 runs per round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from ganvas.core.pipeline import Pipeline, configure_threads
    from ganvas.core.plugin_manager import GanvasPlugins

    configure_threads(1)
    plugins = GanvasPlugins(entry_points=False)
    pipes = {"new": Pipeline.load(args.new, plugins=plugins), "old": Pipeline.load(args.old, plugins=plugins)}
    seeds = iter(range(10_000, 1_000_000))
    rounds = []
    for pipe in pipes.values():
        pipe(PROMPT, n=2, seed=0)  # warm-up
    for _ in range(args.rounds):
        row = {}
        for key, pipe in pipes.items():
            row[key] = {
                "latency_batch1_s": median_time(lambda: pipe(PROMPT, n=1, seed=next(seeds)), args.repeat),
                "throughput_batch64_img_s": 64 / median_time(lambda: pipe(PROMPT, n=64, seed=next(seeds)), 2),
            }
        rounds.append(row)
    report = {"threads": 1, "rounds": args.rounds}
    for key, pipe in pipes.items():
        report[key] = {
            "model": args.new if key == "new" else args.old,
            "channels": pipe.info.channels,
            "hash": pipe.info.hash,
            **{
                m: statistics.median(r[key][m] for r in rounds)
                for m in ("latency_batch1_s", "throughput_batch64_img_s")
            },
        }
    report["ratio_new_over_old"] = {
        m: statistics.median(r["new"][m] / r["old"][m] for r in rounds)
        for m in ("latency_batch1_s", "throughput_batch64_img_s")
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for key in ("new", "old"):
        r = report[key]
        print(
            f"{key}: {r['model']} ({r['channels']} channels): {r['latency_batch1_s'] * 1000:.2f} ms at batch 1, "
            f"{r['throughput_batch64_img_s']:.0f} img/s at batch 64"
        )
    ratio = report["ratio_new_over_old"]
    print(
        f"new / old: latency x{ratio['latency_batch1_s']:.2f}, throughput x{ratio['throughput_batch64_img_s']:.2f} "
        f"(median of {args.rounds} interleaved rounds)"
    )


if __name__ == "__main__":
    main()
