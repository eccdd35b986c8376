"""`ganvas watch` as a real process on real files (started as `python -m ganvas.core.hosts.watch`, the same
click command that `ganvas watch` runs).

Default suite: one watcher process meets a slowly written file, a renamed-in file, malformed JSON,
binary junk, an empty file, a file over the prompt limit (10,001 lines), a name collision with an
existing output and a file that was there before it started; then SIGTERM stops it cleanly.
Slow suite: a 10,000-line file all the way through, and the crash-safety trials (SIGKILL at random
points of multi-image jobs, restart, check that every prompt's images exist exactly once and every
input ended in done/ or failed/).
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganvas.core.hosts.watch.outputs import png_complete


def watch_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANVAS_")}
    env.update({"GANVAS_PLUGINS": "", "GANVAS_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return env


class WatchProcess:
    """`python -m ganvas.core.hosts.watch INBOX --out OUTBOX ...` with its log in a file."""

    def __init__(self, inbox: Path, outbox: Path, model: Path, *args: str, log: Path, env: dict | None = None):
        self.log = log
        self.log_fh = open(log, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ganvas.core.hosts.watch",
                str(inbox),
                "--out",
                str(outbox),
                "--model",
                str(model),
                *args,
            ],
            stdout=self.log_fh,
            stderr=subprocess.STDOUT,
            env={**watch_env(), **(env or {})},
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ganvas watch: watching " in self.text():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"watcher exited with {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.01)
        raise AssertionError(f"watcher not ready after {timeout} s:\n{self.text()}")

    def wait(self, timeout: float = 180) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.log_fh.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait()


def wait_for(condition, timeout: float = 60.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def drop(inbox: Path, name: str, data: bytes) -> None:
    """Write under a temporary name, then rename into place (the way careful writers deliver)."""
    tmp = inbox / f".{name}.part"
    tmp.write_bytes(data)
    os.rename(tmp, inbox / name)


def where(inbox: Path, name: str) -> str | None:
    for folder in ("done", "failed"):
        if (inbox / folder / name).exists():
            return folder
    return None


def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".png" and not p.name.startswith("."))


# --- default suite: one watcher, many kinds of input ---------------------------------------------------------------


def test_watch_process_handles_real_world_files(tmp_path, tiny_checkpoint):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    (outbox / "collide").mkdir(parents=True)
    (outbox / "collide" / "keep.txt").write_text("an earlier job's output")
    (inbox / "before.txt").write_text("a red circle\n")  # present before the watcher starts
    (inbox / "collide.txt").write_text("a blue square\n")
    watcher = WatchProcess(
        inbox, outbox, tiny_checkpoint, "--quiet-period", "0.3", "--rescan", "2", log=tmp_path / "watch.log"
    )
    try:
        watcher.wait_ready()
        # A slow writer: 12 prompts in 24 chunks, 0.1 s apart (less than the quiet period), lines split.
        text = "".join(f"a small green star number {i}\n" for i in range(12))
        with open(inbox / "slow.txt", "w") as fh:
            for k in range(0, len(text), len(text) // 24 + 1):
                fh.write(text[k : k + len(text) // 24 + 1])
                fh.flush()
                time.sleep(0.1)
        drop(inbox, "renamed.json", json.dumps({"prompt": "a yellow triangle", "n": 3, "seed": 11}).encode())
        (inbox / "malformed.json").write_text('[\n  {"prompt": "a red circle"},\n  {"prompt": "no closing quote}\n]')
        (inbox / "junk.txt").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)) + b"\x00")
        (inbox / "empty.txt").touch()
        (inbox / "huge.txt").write_text("".join(f"prompt {i % 50}\n" for i in range(10_001)))
        (inbox / "ignored.pdf").write_bytes(b"%PDF-1.4")
        names = [
            "before.txt",
            "collide.txt",
            "slow.txt",
            "renamed.json",
            "malformed.json",
            "junk.txt",
            "empty.txt",
            "huge.txt",
        ]
        assert wait_for(lambda: all(where(inbox, n) for n in names), timeout=90), (
            sorted(p.name for p in inbox.rglob("*")),
            watcher.text(),
        )
    finally:
        watcher.proc.send_signal(signal.SIGTERM)
        code = watcher.wait(30)
    log = watcher.text()
    assert code == 0, log
    assert {n: where(inbox, n) for n in names} == {
        "before.txt": "done",
        "collide.txt": "done",
        "slow.txt": "done",
        "renamed.json": "done",
        "malformed.json": "failed",
        "junk.txt": "failed",
        "empty.txt": "failed",
        "huge.txt": "failed",
    }
    # the slow file was read once, complete
    slow = json.loads((outbox / "slow" / "manifest.json").read_text())
    assert [p["prompt"] for p in slow["prompts"]] == [f"a small green star number {i}" for i in range(12)]
    assert not (outbox / "slow-1").exists() and len(pngs(outbox / "slow")) == 12
    assert pngs(outbox / "renamed") == ["000_11.png", "000_12.png", "000_13.png"]
    # the collision: a new folder, the old one untouched
    assert sorted(os.listdir(outbox / "collide")) == ["keep.txt"]
    assert len(pngs(outbox / "collide-1")) == 1
    errors = {
        n: json.loads((inbox / "failed" / (Path(n).stem + ".error.json")).read_text())
        for n in ("malformed.json", "junk.txt", "empty.txt", "huge.txt")
    }
    assert errors["malformed.json"]["line"] == 3 and errors["malformed.json"]["kind"] == "json"
    assert "invalid JSON at line 3" in errors["malformed.json"]["message"]
    assert errors["junk.txt"]["kind"] == "binary" and "binary data (NUL byte)" in errors["junk.txt"]["message"]
    assert errors["empty.txt"]["kind"] == "empty"
    assert errors["huge.txt"]["kind"] == "too_many_prompts" and "10001 prompts" in errors["huge.txt"]["message"]
    assert (inbox / "ignored.pdf").exists()
    assert not list((inbox / "processing").iterdir())
    assert not any(p.name.startswith(".") for p in outbox.rglob("*"))  # no temporaries left
    # one log line per job, and a clean stop
    for name in names:
        assert f" {name}: " in log, name
    assert "stopping (signal 15)" in log and "Traceback" not in log
    status = subprocess.run(
        [sys.executable, "-m", "ganvas.core.hosts.watch", str(inbox), "--status"],
        capture_output=True,
        text=True,
        env=watch_env(),
        timeout=60,
    )
    assert status.returncode == 0
    assert "done        4" in status.stdout and "failed      4" in status.stdout and "queued      0" in status.stdout


# --- slow suite ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ten_thousand_line_file_goes_through(tmp_path, tiny_checkpoint):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    drop(
        inbox,
        "big.txt",
        "".join(
            f"a {c} circle, number {i % 100}\n" for i, c in zip(range(10_000), ["red", "blue", "green", "grey"] * 2500)
        ).encode(),
    )
    started = time.perf_counter()
    watcher = WatchProcess(
        inbox, outbox, tiny_checkpoint, "--once", "--quiet-period", "0.1", log=tmp_path / "watch.log"
    )
    assert watcher.wait(600) == 0, watcher.text()
    seconds = time.perf_counter() - started
    files = pngs(outbox / "big")
    manifest = json.loads((outbox / "big" / "manifest.json").read_text())
    assert len(files) == 10_000 and manifest["images"] == 10_000 and len(manifest["prompts"]) == 10_000
    assert files[0].startswith("0000_") and files[-1].startswith("9999_")
    assert (inbox / "done" / "big.txt").exists()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    print(
        f"\n10,000-line file: {seconds:.1f} s end to end including start-up ({10_000 / seconds:.0f} prompts/s), "
        f"peak RSS of the watcher {peak:.0f} MiB"
    )
    assert peak < 2048  # images go to disk one prompt at a time; nothing grows with the file


JOBS = {
    # 12 items x 8 images, half with fixed seeds (their pixels are compared across trials), one named
    "a.json": json.dumps(
        [
            {
                "prompt": f"a red circle, size {i}",
                "n": 8,
                **({"seed": 100 * i} if i % 2 else {}),
                **({"name": "named"} if i == 4 else {}),
            }
            for i in range(12)
        ],
        indent=1,
    ),
    # 60 one-image prompts
    "b.txt": "".join(f"a blue square number {i}\n" for i in range(60)),
    # 6 items x 4 images with one bad item: the job fails, its 5 good prompts are still made
    "c.json": json.dumps(
        [
            {"prompt": f"a green star {i}", "n": 4, "seed": 7 + i} if i != 3 else {"prompt": "bad", "n": 0}
            for i in range(6)
        ]
    ),
}
EXPECTED = {"a": 96, "b": 60, "c": 20}
FINAL = {"a.json": "done", "b.txt": "done", "c.json": "failed"}


def fill_inbox(inbox: Path) -> None:
    inbox.mkdir(parents=True)
    for name, text in JOBS.items():
        drop(inbox, name, text.encode())


def count_pngs(outbox: Path) -> int:
    total = 0
    for folder in ("a", "b", "c"):
        try:
            total += sum(1 for e in os.scandir(outbox / folder) if e.name.endswith(".png") and e.name[0] != ".")
        except FileNotFoundError:
            pass
    return total


def verify_exactly_once(inbox: Path, outbox: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every input in done/ or failed/, every prompt's images exactly once, complete and listed."""
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == []
    assert list((inbox / "processing").iterdir()) == []
    assert {n: where(inbox, n) for n in JOBS} == FINAL
    assert sorted(os.listdir(inbox / "done")) == ["a.json", "b.txt"]
    assert sorted(os.listdir(inbox / "failed")) == ["c.error.json", "c.json"]
    assert sorted(os.listdir(outbox)) == ["a", "b", "c"]  # one folder per job: nothing was redone elsewhere
    fixed = {}
    for folder, count in EXPECTED.items():
        manifest = json.loads((outbox / folder / "manifest.json").read_text())
        listed = [f for p in manifest["prompts"] for f in p["files"]]
        assert len(listed) == len(set(listed)) == count
        assert sorted(os.listdir(outbox / folder)) == sorted(listed + ["manifest.json"])  # no extras, no temps
        prompts = [p["index"] for p in manifest["prompts"]]
        assert len(prompts) == len(set(prompts))
        for p in manifest["prompts"]:
            assert p["seeds"] == list(range(p["seed"], p["seed"] + p["n"]))
            for name in p["files"]:
                path = outbox / folder / name
                assert png_complete(path), path
                if folder != "b" and "seed" in json.loads(JOBS[folder + ".json"])[p["index"]]:
                    with Image.open(path) as im:
                        fixed[f"{folder}/{name}"] = np.asarray(im.convert("RGB"))
    return fixed


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_checkpoint) -> dict[str, np.ndarray]:
    """A run without a kill: its fixed-seed images are what every interrupted run must reproduce."""
    base = tmp_path_factory.mktemp("reference")
    fill_inbox(base / "in")
    ref = WatchProcess(
        base / "in", base / "out", tiny_checkpoint, "--once", "--quiet-period", "0.1", log=base / "watch.log"
    )
    assert ref.wait() == 1, ref.text()  # 1: c.json failed (on purpose)
    return verify_exactly_once(base / "in", base / "out")


def restart_and_verify(inbox: Path, outbox: Path, model: Path, log: Path, reference: dict) -> str:
    restart = WatchProcess(inbox, outbox, model, "--once", "--quiet-period", "0.1", log=log)
    assert restart.wait() in (0, 1), restart.text()  # 1 when c.json failed in this run, not before the kill
    fixed = verify_exactly_once(inbox, outbox)
    assert fixed.keys() == reference.keys()
    assert all(np.array_equal(fixed[k], reference[k]) for k in reference), "pixels differ from the uninterrupted run"
    return restart.text()


# Every window between two writes of a job's life; ":n" = the n-th time (jobs run a.json, b.txt, c.json).
CRASH_POINTS = [
    "claimed-file",
    "claimed",
    "output-chosen",
    "image",
    "image:50",
    "image:120",
    "manifest",
    "manifest:3",
    "terminal-record",
    "terminal-record:3",
    "error-file",
    "moved",
    "moved:3",
]


@pytest.mark.slow
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_at_every_crash_point(point, tmp_path, tiny_checkpoint, reference):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    fill_inbox(inbox)
    crashing = WatchProcess(
        inbox,
        outbox,
        tiny_checkpoint,
        "--once",
        "--quiet-period",
        "0.1",
        log=tmp_path / "watch.log",
        env={"GANVAS_WATCH_CRASH_AT": point},
    )
    assert crashing.wait() == -signal.SIGKILL, crashing.text()
    restart_and_verify(inbox, outbox, tiny_checkpoint, tmp_path / "watch.log", reference)


@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_repeats_nothing(tmp_path, tiny_checkpoint, reference):
    trials = int(os.environ.get("GANVAS_WATCH_TRIALS", "20"))
    rng = random.Random(int(os.environ.get("GANVAS_WATCH_SEED", "8")))
    total = sum(EXPECTED.values())

    results = []
    for trial in range(trials):
        base = tmp_path / f"trial{trial:02d}"
        inbox, outbox = base / "in", base / "out"
        fill_inbox(inbox)
        mode = ["--poll", "0.2"] if trial % 2 else []
        watcher = WatchProcess(inbox, outbox, tiny_checkpoint, "--quiet-period", "0.1", *mode, log=base / "watch.log")
        watcher.wait_ready()
        if trial % 4 == 0:  # early: claim, parse, output-folder and first-image windows
            point = ("seconds", round(rng.uniform(0, 0.4), 3))
            time.sleep(point[1])
        elif trial % 4 == 2:  # finishing: manifest written, journal record, error file and move under way
            point = ("manifest", rng.choice(sorted(EXPECTED)))
            wait_for(lambda: (outbox / point[1] / "manifest.json").exists(), timeout=120, interval=0.001)
        else:  # mid-job: after a random number of images
            point = ("images", rng.randrange(1, total))
            deadline = time.monotonic() + 120
            while count_pngs(outbox) < point[1] and time.monotonic() < deadline:
                time.sleep(0.002)
        watcher.kill()
        at_kill = {
            "pngs": count_pngs(outbox),
            "processing": len(os.listdir(inbox / "processing")),
            "settled": sum(1 for n in JOBS if where(inbox, n)),
        }
        log = restart_and_verify(inbox, outbox, tiny_checkpoint, base / "watch.log", reference)
        results.append(
            {
                "trial": trial,
                "kill": point,
                **at_kill,
                "resumed": log.count("resuming "),
                "moves finished": log.count("finished moving "),
            }
        )

    mid_job = [r for r in results if 0 < r["pngs"] < total]
    summary = (
        f"\n{trials} SIGKILL trials: all passed (every input in done/ or failed/, {total} images exactly once, "
        f"fixed-seed pixels identical to the uninterrupted run); {len(mid_job)} kills landed while jobs ran, "
        f"{sum(1 for r in results if r['pngs'] == 0)} before the first image, "
        f"{sum(1 for r in results if r['pngs'] == total)} after the last; "
        f"{sum(r['resumed'] for r in results)} jobs resumed, {sum(r['moves finished'] for r in results)} "
        f"moves finished on restart"
    )
    print(summary)
    for r in results:
        print("  ", json.dumps(r))
    report = tmp_path.parent / "watch-crash-trials.json"
    report.write_text(json.dumps({"summary": summary, "trials": results}, indent=1))
    assert len(mid_job) >= trials // 2  # the trials must actually have hit running jobs


# --- red-team regressions that need a real process ------------------------------------------------------------


@pytest.mark.slow
def test_once_exits_non_zero_when_a_job_cannot_finish(tmp_path, tiny_checkpoint):
    """A full outbox (a file-size limit the PNGs exceed, the journal does not): --once says which job did not
    finish and why, and exits 1; the next start finishes it."""
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    (inbox / "full.txt").write_text("a red circle\n")
    command = [
        sys.executable,
        "-m",
        "ganvas.core.hosts.watch",
        str(inbox),
        "--out",
        str(outbox),
        "--model",
        str(tiny_checkpoint),
        "--once",
        "--quiet-period",
        "0.1",
    ]

    def small_files():  # EFBIG past 1500 bytes; Python ignores SIGXFSZ, so writes fail instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))

    full = subprocess.run(
        command, capture_output=True, text=True, env=watch_env(), timeout=180, preexec_fn=small_files
    )  # log on a pipe: the limit does not apply to pipes
    assert full.returncode == 1, full.stderr
    assert "not finished: full.txt" in full.stderr and "File too large" in full.stderr, full.stderr
    assert "nothing to do" not in full.stderr and "Traceback" not in full.stderr
    assert len(os.listdir(inbox / "processing")) == 1 and not os.listdir(inbox / "done")
    again = subprocess.run(command, capture_output=True, text=True, env=watch_env(), timeout=180)
    assert again.returncode == 0, again.stderr
    assert (inbox / "done" / "full.txt").exists() and len(pngs(outbox / "full")) == 1
