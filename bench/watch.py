"""Hot-folder throughput: prompts/s end to end for N one-line jobs dropped into a running `ganvas watch`.

    python bench/watch.py [--model shapes] [--jobs 200] [--quiet-period 2] [--poll SECONDS] [--json]

A real watcher process (`python -m ganvas.core.hosts.watch`, as `ganvas watch` runs it) is started and
warmed up; then N one-line .txt jobs (distinct prompts, each written to a temporary name and renamed
in) are dropped at once, and the clock runs until all N inputs are in done/. Reported:
  end to end     N / (last input in done/ - first drop): what a user sees, quiet period included
  processing     N / (last done - first claim): the watcher's own rate once files are stable
  single job     drop-to-done latency of one job into an idle watcher (median of 5)
Every job also writes a PNG with full metadata, a manifest, three journal records and two renames.
Without the shipped model a random 32 px checkpoint is used (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "grey"]
SHAPES = ["circle", "square", "triangle", "star", "cross"]
PLACES = ["on the left", "on the right", "at the top", "at the bottom", "in the centre"]


def prompts(n: int) -> list[str]:
    combos = [f"a {c} {s} {p}" for c in COLOURS for s in SHAPES for p in PLACES]
    return [combos[i % len(combos)] + ("" if i < len(combos) else f", take {i // len(combos)}") for i in range(n)]


def model_path(model: str | None, work: Path) -> str:
    if model:
        return model
    from ganvas.core.plugin_manager import GanvasPlugins
    from ganvas.core.requests import default_model_name

    if default_model_name() in GanvasPlugins(entry_points=False).models():
        return default_model_name()
    from ganvas.core.io.checkpoint import save_model
    from ganvas.core.model.config import ModelConfig
    from ganvas.core.model.networks import Generator

    print(f"(model {default_model_name()!r} not found: using a random 32 px checkpoint)", file=sys.stderr)
    return str(
        save_model(work / "random32", Generator(ModelConfig(resolution=32, g_channels=8, d_channels=8, cond_dim=32)))
    )


def drop(inbox: Path, name: str, text: str) -> None:
    tmp = inbox / f".{name}.part"
    tmp.write_text(text)
    os.rename(tmp, inbox / name)


def wait_done(inbox: Path, names: list[str], timeout: float) -> tuple[float | None, float]:
    """(time the first input left the inbox, time the last reached done/)."""
    done_dir = inbox / "done"
    remaining, first_claim = set(names), None
    deadline = time.perf_counter() + timeout
    while remaining and time.perf_counter() < deadline:
        if first_claim is None and any(not (inbox / n).exists() for n in names):
            first_claim = time.perf_counter()
        remaining -= {n for n in remaining if (done_dir / n).exists()}
        time.sleep(0.002)
    if remaining:
        raise SystemExit(f"timed out with {len(remaining)} jobs not done (see {inbox})")
    return first_claim, time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="registered model name or checkpoint folder")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--quiet-period", type=float, default=2.0, help="the watcher's quiet period (its default: 2)")
    parser.add_argument("--poll", type=float, help="run the watcher with --poll SECONDS")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ganvas-bench-watch-"))
    inbox, outbox = work / "in", work / "out"
    inbox.mkdir()
    model = model_path(args.model, work)
    env = {
        **os.environ,
        "GANVAS_THREADS": os.environ.get("GANVAS_THREADS", "1"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    log = open(work / "watch.log", "wb")
    cmd = [
        sys.executable,
        "-m",
        "ganvas.core.hosts.watch",
        str(inbox),
        "--out",
        str(outbox),
        "--model",
        model,
        "--quiet-period",
        str(args.quiet_period),
    ] + (["--poll", str(args.poll)] if args.poll else [])
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while "ganvas watch: watching " not in (work / "watch.log").read_text(errors="replace"):
            if proc.poll() is not None:
                raise SystemExit((work / "watch.log").read_text())
            time.sleep(0.01)
        startup = time.perf_counter() - started

        latencies = []
        for k in range(5):  # one job at a time into an idle watcher
            t0 = time.perf_counter()
            drop(inbox, f"single-{k}.txt", f"a red circle, single job {k}\n")
            latencies.append(wait_done(inbox, [f"single-{k}.txt"], 60)[1] - t0)

        names = [f"job-{i:04d}.txt" for i in range(args.jobs)]
        t0 = time.perf_counter()
        for name, prompt in zip(names, prompts(args.jobs)):
            drop(inbox, name, prompt + "\n")
        dropped = time.perf_counter() - t0
        first_claim, last_done = wait_done(inbox, names, 60 + args.jobs * 2.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()

    images = sum(1 for n in names for _ in (outbox / Path(n).stem).glob("*.png"))
    manifests = [json.loads((outbox / Path(n).stem / "manifest.json").read_text()) for n in names]
    job_seconds = [m["timings"]["total"] for m in manifests]
    result = {
        "jobs": args.jobs,
        "images": images,
        "quiet_period_s": args.quiet_period,
        "observer": "poll" if args.poll else "native",
        "end_to_end_prompts_per_s": round(args.jobs / (last_done - t0), 1),
        "end_to_end_s": round(last_done - t0, 2),
        "processing_prompts_per_s": round(args.jobs / (last_done - first_claim), 1),
        "processing_s": round(last_done - first_claim, 2),
        "drop_s": round(dropped, 3),
        "per_job_generate_and_write_ms_median": round(1000 * statistics.median(job_seconds), 1),
        "single_job_latency_s_median": round(statistics.median(latencies), 3),
        "watcher_startup_s": round(startup, 1),
        "model": model,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": env["GANVAS_THREADS"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"ganvas watch, {args.jobs} one-line jobs dropped at once ({result['observer']} events, "
        f"quiet period {args.quiet_period:g} s, model {Path(model).name}):"
    )
    print(
        f"  end to end   {result['end_to_end_prompts_per_s']:8.1f} prompts/s  ({result['end_to_end_s']} s, "
        f"quiet period included)"
    )
    print(
        f"  processing   {result['processing_prompts_per_s']:8.1f} prompts/s  ({result['processing_s']} s from the "
        f"first claim to the last done)"
    )
    print(
        f"  per job      {result['per_job_generate_and_write_ms_median']:8.1f} ms median inside the job "
        f"(generate + write PNG + manifest)"
    )
    print(f"  single job   {result['single_job_latency_s_median']:8.3f} s drop-to-done latency (median of 5)")
    print(f"  start-up     {result['watcher_startup_s']:8.1f} s (model + text encoder load)")
    if images != args.jobs:
        raise SystemExit(f"expected {args.jobs} images, found {images}")


if __name__ == "__main__":
    main()
