"""Load test of `ganvas serve` on loopback: concurrent clients against a real server subprocess.

    python bench/serve.py [--clients 32] [--duration 30] [--n 1] [--format b64_json] [--model NAME|DIR]
                          [--workers 2] [--max-queue 16] [--threads 1] [--json]

Starts the real command (`ganvas serve`, port 0, its own image store), waits for its "ready" line,
warms it under load for a few seconds, measures its RSS, then runs `--clients` threads for
`--duration` seconds, each on its own keep-alive connection, posting one generation after another.
A 429 is deliberate backpressure: the client waits the server's retry-after-ms (as the official SDK
does) and counts it. Anything else that is not a 200 is an error, and the script exits 1.

Reports requests/s, images/s, latency p50/p90/p99 of successful requests, 429 count, errors, and
the server's RSS before and after (growth = after - before, plus after a second idle check).
Without --model it uses the shipped model if one is registered, else a random-weight generator of
the default configuration (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROMPTS = [
    "a large red circle in the centre",
    "a small blue square on the left",
    "a green triangle at the top",
    "a yellow star on the right",
    "two purple circles",
    "an orange square at the bottom",
    "a large blue triangle",
    "a small red star in the centre",
]


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil  # not Linux: fall back to psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def serve_argv() -> list[str]:
    return [sys.executable, "-m", "ganvas.core.hosts.cli.main", "serve"]  # the real command line


def pick_model(requested: str | None, scratch: Path) -> tuple[str, dict]:
    """(--model value, extra env). A random default-config checkpoint when nothing is registered."""
    if requested:
        return requested, {}
    from ganvas.core.plugin_manager import GanvasPlugins
    from ganvas.core.requests import default_model_name

    name = default_model_name()
    if name in GanvasPlugins(entry_points=False).models():
        return name, {}
    import torch

    from ganvas.core.io.checkpoint import save_model
    from ganvas.core.model.config import ModelConfig
    from ganvas.core.model.networks import Generator

    torch.manual_seed(0)
    folder = save_model(
        scratch / "models" / "bench-random",
        Generator(ModelConfig()).eval(),
        trained={"note": "random weights for bench/serve.py"},
        card="# bench\n\nRandom weights.\n",
    )
    print(f"no model {name!r} registered: using a random default-config generator ({folder})", file=sys.stderr)
    return "bench-random", {"GANVAS_MODELS_PATH": str(folder.parent)}


class Server:
    def __init__(self, args, scratch: Path):
        model, env_extra = pick_model(args.model, scratch)
        env = {**os.environ, **env_extra, "OMP_NUM_THREADS": str(args.threads)}
        self.log = scratch / "serve.log"
        self._fh = open(self.log, "wb")
        cmd = [
            *serve_argv(),
            "--port",
            "0",
            "--model",
            model,
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
            "--max-queue",
            str(args.max_queue),
            "--store",
            str(scratch / "store"),
            "--access-log",
            "off",
        ]
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=env)
        self.host, self.port, self.ready_line = "127.0.0.1", 0, ""
        deadline = time.monotonic() + 300
        while not self.port:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start:\n{self.log.read_text(errors='replace')}")
            for line in self.log.read_text(errors="replace").splitlines():
                if "ready at http://" in line:
                    self.ready_line = line
                    self.port = int(line.split("ready at http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
            time.sleep(0.1)

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(60)
        finally:
            self._fh.close()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.images = self.rejected = 0
        self.errors: list[str] = []

    def ok(self, latency: float, images: int) -> None:
        with self.lock:
            self.latencies.append(latency)
            self.images += images


def client_loop(server: Server, stats: Stats, deadline: float, n: int, fmt: str, seed: int) -> None:
    rng = random.Random(seed)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    while time.monotonic() < deadline:
        body = json.dumps({"prompt": rng.choice(PROMPTS), "n": n, "response_format": fmt, "seed": rng.randrange(2**31)})
        start = time.perf_counter()
        try:
            conn.request("POST", "/v1/images/generations", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            with stats.lock:
                stats.errors.append(f"{type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
            continue
        elapsed = time.perf_counter() - start
        if resp.status == 200:
            stats.ok(elapsed, len(json.loads(data)["data"]))
        elif resp.status == 429:
            with stats.lock:
                stats.rejected += 1
            wait_ms = int(resp.getheader("retry-after-ms") or 1000 * int(resp.getheader("retry-after") or 1))
            time.sleep(min(wait_ms, 1000) / 1000)
        else:
            with stats.lock:
                stats.errors.append(f"HTTP {resp.status}: {data[:200]!r}")
    conn.close()


def run_load(server: Server, clients: int, seconds: float, n: int, fmt: str, seed: int) -> tuple[Stats, float]:
    stats = Stats()
    start = time.monotonic()
    deadline = start + seconds
    threads = [
        threading.Thread(target=client_loop, args=(server, stats, deadline, n, fmt, seed * 1000 + i))
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats, time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the RSS baseline")
    parser.add_argument("--n", type=int, default=1, help="images per request")
    parser.add_argument("--format", choices=["b64_json", "url"], default="b64_json")
    parser.add_argument("--model", default=None, help="registered name or checkpoint folder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ganvas-bench-serve-") as tmp:
        server = Server(args, Path(tmp))
        try:
            run_load(server, args.clients, args.warmup, args.n, args.format, seed=1)
            time.sleep(1)
            rss_before = rss_mb(server.proc.pid)
            stats, elapsed = run_load(server, args.clients, args.duration, args.n, args.format, seed=2)
            time.sleep(1)
            rss_after = rss_mb(server.proc.pid)
            again, _ = run_load(server, args.clients, min(args.duration, 10.0), args.n, args.format, seed=3)
            time.sleep(1)
            rss_again = rss_mb(server.proc.pid)
        finally:
            exit_code = server.stop()
        lat_ms = [x * 1000 for x in stats.latencies]
        report = {
            "clients": args.clients,
            "duration_s": round(elapsed, 1),
            "n": args.n,
            "format": args.format,
            "workers": args.workers,
            "max_queue": args.max_queue,
            "threads": args.threads,
            "requests_ok": len(lat_ms),
            "requests_per_s": round(len(lat_ms) / elapsed, 1),
            "images_per_s": round(stats.images / elapsed, 1),
            "latency_ms": {
                "p50": round(percentile(lat_ms, 0.5), 1),
                "p90": round(percentile(lat_ms, 0.9), 1),
                "p99": round(percentile(lat_ms, 0.99), 1),
                "mean": round(statistics.fmean(lat_ms), 1) if lat_ms else None,
            },
            "rejected_429": stats.rejected,
            "errors": len(stats.errors) + len(again.errors),
            "error_samples": (stats.errors + again.errors)[:5],
            "rss_mb": {
                "before": round(rss_before, 1),
                "after": round(rss_after, 1),
                "after_another_10s": round(rss_again, 1),
                "growth": round(rss_after - rss_before, 1),
            },
            "server_exit_code": exit_code,
            "server": server.ready_line.split("ganvas serve: ", 1)[-1],
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
                "python": platform.python_version(),
            },
        }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        lat = report["latency_ms"]
        rss = report["rss_mb"]
        print(
            f"ganvas serve load test: {args.clients} clients x {report['duration_s']} s, n={args.n}, {args.format}, "
            f"{args.workers} workers, queue {args.max_queue}, {args.threads} torch thread(s)"
        )
        print(
            f"  {report['requests_per_s']} requests/s ({report['images_per_s']} images/s), {report['requests_ok']} ok"
        )
        print(f"  latency p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms")
        print(f"  429 (deliberate backpressure): {report['rejected_429']}; errors: {report['errors']}")
        print(
            f"  server RSS: {rss['before']} MB before, {rss['after']} MB after (growth {rss['growth']} MB), "
            f"{rss['after_another_10s']} MB after 10 s more"
        )
        print(f"  server exit code after SIGTERM: {exit_code}; machine: {report['machine']}")
        for sample in report["error_samples"]:
            print(f"  error: {sample}")
    return 1 if report["errors"] or exit_code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
