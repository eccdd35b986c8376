"""What a painter waits for in the Krita docker: the plugin's client round trip to `ganvas serve`.

    python bench/krita_client.py [--model NAME|DIR] [--calls 50] [--n 1 4] [--size 0]

Starts the real command (`ganvas serve`, port 0), waits for "ready", then times the docker's own
client (krita_bridge/ganvas_krita/client.py: one HTTP call, base64 + PNG check) one call after
another, as Generate and live mode make them. Prints p50/p90 per batch size, and the live-mode
latency after the last keystroke (the docker's 300 ms debounce + p50). Without --model it uses a
random-weight checkpoint of the default configuration (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["a large red circle in the centre", "a small blue square on the left", "a green triangle at the top"]
LIVE_DELAY_MS = 300  # krita_bridge/ganvas_krita/panel.py


def random_checkpoint(folder: Path) -> Path:
    from ganvas.core.io.checkpoint import save_model
    from ganvas.core.model.config import ModelConfig
    from ganvas.core.model.networks import Generator

    return save_model(folder / "bench", Generator(ModelConfig()), trained={"note": "random weights, for timing"})


def start_server(model: str, log: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", GANVAS_THREADS="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ganvas.core.hosts.cli.main",
            "serve",
            "--port",
            "0",
            "--model",
            model,
            "--access-log",
            "off",
            "--store",
            str(log.parent / "store"),
        ],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "ready at http://" in line:
                return proc, line.split("ready at ", 1)[1].split()[0]
        if proc.poll() is not None:
            sys.exit(f"server exited: {log.read_text(errors='replace')}")
        time.sleep(0.1)
    proc.kill()
    sys.exit("server not ready after 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="registered name or checkpoint folder [default: random weights]")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--size", type=int, default=0, help="output side (0 = native)")
    args = parser.parse_args()

    from ganvas.krita_bridge.ganvas_krita.client import GanvasClient, GenerateParams

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(random_checkpoint(Path(tmp)))
        proc, url = start_server(model, Path(tmp) / "serve.log")
        try:
            client = GanvasClient(url)
            info = client.models()
            print(f"server {url}, models {info}")
            for n in args.n:
                times = []
                for i in range(args.calls + 3):
                    params = GenerateParams(PROMPTS[i % len(PROMPTS)], n=n, seed=i, size=args.size or None)
                    images, elapsed = client.generate(params)
                    assert len(images) == n
                    if i >= 3:  # the first calls warm the prompt cache and the connection path
                        times.append(elapsed * 1000)
                times.sort()
                p50, p90 = statistics.median(times), times[int(0.9 * (len(times) - 1))]
                print(
                    f"n={n}: round trip p50 {p50:.1f} ms, p90 {p90:.1f} ms over {len(times)} calls; "
                    f"live mode shows results {LIVE_DELAY_MS + p50:.0f} ms after the last keystroke"
                )
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
