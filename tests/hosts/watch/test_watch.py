"""The hot folder (core/watch/): job parsing, stability, journal, claim/recovery, outputs, observer
fallback, and the watcher in a thread with the real pipeline (tiny checkpoint) on real files.

Subprocess tests of `ganvas watch` (slow writers, SIGKILL trials) live in test_watch_e2e.py.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ganvas.core.errors import GanvasError
from ganvas.core.hosts.watch.cli import watch_command
from ganvas.core.hosts.watch.jobs import JobError, Limits, is_job_name, parse_job, read_limited
from ganvas.core.hosts.watch.journal import JobHistory, Journal
from ganvas.core.hosts.watch.layout import AlreadyWatching, Inbox, WatchLock, free_name
from ganvas.core.hosts.watch.loop import WatchConfig, Watcher, check_folders
from ganvas.core.hosts.watch.observer import EventSink, start_observer, stop_observer
from ganvas.core.hosts.watch.outputs import PNG_END, clean_temps, png_complete, write_json
from ganvas.core.hosts.watch.processor import JobProcessor
from ganvas.core.hosts.watch.runner import Pipelines, derive_seed
from ganvas.core.hosts.watch.stability import StabilityTracker
from ganvas.core.hosts.watch.status import watch_status
from ganvas.core.io.png import read_png_text

# --- job files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, ok",
    [
        ("prompts.txt", True),
        ("JOB.JSON", True),
        ("a b.txt", True),
        (".hidden.txt", False),
        ("~lock.txt", False),
        ("x.txt.part", False),
        ("x.txt.tmp", False),
        ("x.json.crdownload", False),
        ("x.txt~", False),
        (".DS_Store", False),
        ("Thumbs.db", False),
        ("image.png", False),
        ("notes.md", False),
        ("noext", False),
    ],
)
def test_job_names(name, ok):
    assert is_job_name(name) is ok


def test_txt_job_skips_blank_and_comment_lines_and_names_bad_lines():
    data = "\ufeff# header\na red circle\n\n  a blue square  \r\n".encode() + b"caf\xe9\nlast one"
    job = parse_job("x.txt", data)
    assert [(e.index, e.line, e.prompt) for e in job.entries] == [
        (0, 2, "a red circle"),
        (1, 4, "a blue square"),
        (3, 6, "last one"),
    ]
    [problem] = job.problems
    assert (problem.index, problem.line) == (2, 5)
    assert str(problem) == "line 5: not UTF-8 text (byte 0xe9 at column 4)"


def test_json_job_items_keep_their_lines_and_fields():
    text = """[
  {"prompt": "a red circle", "n": 2, "seed": 7, "truncation": 0.8, "style": "flat", "name": "reds"},
  {"prompt": "a blue square",
   "n": 0},
  {"promt": "typo"},
  "just text",
  {"n": 1},
  {"prompt": "big", "size": 4},
  {"prompt": "ok", "model": 3}
]"""
    job = parse_job("x.json", text.encode())
    [good] = job.entries
    assert (good.index, good.line, good.n, good.seed, good.truncation, good.style, good.name) == (
        0,
        2,
        2,
        7,
        0.8,
        "flat",
        "reds",
    )
    found = [(p.index, p.line, p.field) for p in job.problems]
    assert found == [(1, 3, "n"), (2, 5, "promt"), (3, 6, None), (4, 7, "prompt"), (5, 8, "size"), (6, 9, "model")]
    assert str(job.problems[0]) == "item 1 (line 3), field 'n': n must be a positive integer, got 0"
    assert "unknown field 'promt'" in job.problems[1].message
    assert job.count == 7


def test_json_single_object_is_one_job():
    job = parse_job("x.json", b'  {"prompt": "a green star", "n": 3}')
    assert [(e.prompt, e.n, e.line) for e in job.entries] == [("a green star", 3, 1)]


@pytest.mark.parametrize(
    "name, data, kind, message",
    [
        ("x.txt", b"", "empty", "empty file (0 bytes): no prompts"),
        (
            "x.txt",
            b"# only a comment\n\n",
            "no_prompts",
            "no prompts (one prompt per line; blank and # lines are skipped)",
        ),
        ("x.json", b"[]", "no_prompts", "no prompts"),
        ("x.txt", b"ok\n\x89PNG\r\n\x1a\n\x00\x00", "binary", "binary data (NUL byte) at line 4"),
        ("x.json", b'{"prompt": "a",\n "n": 2,,}', "json", "invalid JSON at line 2 column 9: Expecting property name"),
        ("x.json", b'[{"prompt": "a"},]', "json", "invalid JSON at line 1 column 18"),
        ("x.json", b'{"prompt": "bad\n"}', "json", "invalid JSON at line 1 column 16: Invalid control character"),
        ("x.json", b'"a red circle"', "json", "a JSON job must be an object or a list of objects"),
        ("x.json", b'[{"prompt": "a"}] extra', "json", "invalid JSON at line 1 column 19: Extra data"),
        ("x.json", b'\xff{}', "encoding", "not UTF-8 text"),
    ],
)
def test_whole_file_errors_name_the_problem(name, data, kind, message):
    with pytest.raises(JobError) as info:
        parse_job(name, data)
    assert info.value.kind == kind
    assert info.value.message.startswith(message)


def test_limits_on_prompts_and_bytes(tmp_path):
    limits = Limits(max_bytes=1000, max_prompts=5)
    txt = "\n".join(f"prompt {i}" for i in range(7)).encode()
    with pytest.raises(JobError, match=r"7 prompts in one file; the limit is 5 \(--max-prompts\)"):
        parse_job("x.txt", txt, limits)
    assert len(parse_job("x.txt", b"# c\n" + b"\n".join(b"p" for _ in range(5)), limits).entries) == 5
    with pytest.raises(JobError, match="6 prompts"):
        parse_job("x.json", json.dumps([{"prompt": "p"}] * 6).encode(), limits)
    big = tmp_path / "big.txt"
    big.write_bytes(b"a red circle\n" * 100)
    with pytest.raises(JobError, match="larger than the limit of 1000 bytes") as info:
        read_limited(big, limits)
    assert info.value.kind == "too_large"


# --- stability ---------------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_stability_waits_for_quiet_and_restarts_on_change(tmp_path):
    clock = Clock()
    tracker = StabilityTracker(quiet=2.0, clock=clock)
    path = tmp_path / "job.txt"
    path.write_text("a red")
    tracker.touch(path)
    clock.now += 1.5
    assert tracker.ready() == []
    with open(path, "a") as fh:  # the writer is still going
        fh.write(" circle\n")
    tracker.touch(path)
    clock.now += 1.5
    assert tracker.ready() == []  # 1.5 s since the last change
    assert tracker.next_due() == pytest.approx(0.5)
    clock.now += 0.6
    assert tracker.ready() == [path] and tracker.next_due() == 0
    tracker.discard(path)
    assert tracker.next_due() is None


def test_stability_notices_change_without_event_and_drops_vanished(tmp_path):
    clock = Clock()
    tracker = StabilityTracker(quiet=1.0, clock=clock)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("x")
    b.write_text("y")
    tracker.touch(a)
    tracker.touch(b)
    clock.now += 2
    a.write_text("xx")  # changed, but no event: the confirming re-stat catches it
    b.unlink()
    assert tracker.ready() == []
    assert tracker.paths() == [a]
    clock.now += 1
    assert tracker.ready() == [a]


def test_zero_byte_file_waits_longer(tmp_path):
    clock = Clock()
    tracker = StabilityTracker(quiet=1.0, clock=clock)
    path = tmp_path / "placeholder.txt"
    path.touch()
    tracker.touch(path)
    clock.now += 5
    assert tracker.ready() == []
    clock.now += 5
    assert tracker.ready() == [path]


# --- journal, layout, outputs --------------------------------------------------------------------------------


def test_journal_survives_a_torn_last_line(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append("claimed", "j1", file="a.txt")
    journal.close()
    with open(path, "ab") as fh:
        fh.write(b'{"event": "done", "job": "j1", "de')  # SIGKILL mid-write
    journal = Journal(path)
    journal.append("failed", "j1", dest="failed/a.txt")
    records = list(journal.records())
    assert [r["event"] for r in records] == ["claimed", "failed"]
    assert "unreadable journal record skipped" in caplog.text
    history = JobHistory(records)
    assert history.jobs["j1"]["terminal"] == "failed" and history.attempts("j1") == 1


def test_free_names_never_overwrite(tmp_path):
    (tmp_path / "a.txt").touch()
    (tmp_path / "a-1.error.json").touch()
    assert free_name(tmp_path, "b.txt") == tmp_path / "b.txt"
    assert free_name(tmp_path, "a.txt") == tmp_path / "a-1.txt"
    companions = lambda c: [Path(c).stem + ".error.json"]  # noqa: E731
    assert free_name(tmp_path, "a.txt", companions=companions) == tmp_path / "a-2.txt"
    (tmp_path / "job.v2").mkdir()
    assert free_name(tmp_path, "job.v2", split_ext=False) == tmp_path / "job.v2-1"


def test_claim_is_a_rename_that_carries_the_job_id(tmp_path):
    inbox = Inbox(tmp_path)
    inbox.ensure()
    (tmp_path / "a.txt").write_text("x")
    claimed = inbox.claim(tmp_path / "a.txt", "20260101T000000-abcdef")
    assert claimed == inbox.processing / "20260101T000000-abcdef__a.txt" and claimed.read_text() == "x"
    assert Inbox.split_claimed(claimed) == ("20260101T000000-abcdef", "a.txt")
    assert Inbox.split_claimed(inbox.processing / "by-hand.txt") == (None, "by-hand.txt")
    assert inbox.claim(tmp_path / "a.txt", "20260101T000000-000000") is None  # already taken


def test_outputs_are_atomic_and_incomplete_pngs_are_detected(tmp_path):
    write_json(tmp_path / "m.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    good = tmp_path / "good.png"
    good.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 50 + PNG_END)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:-5])
    assert png_complete(good) and not png_complete(cut) and not png_complete(tmp_path / "missing.png")
    (tmp_path / ".000_7.png.123.tmp").write_bytes(b"half")
    assert clean_temps(tmp_path) == 1 and not (tmp_path / ".000_7.png.123.tmp").exists()


def test_lock_allows_one_watcher_per_inbox(tmp_path):
    first, second = WatchLock(tmp_path / "watch.lock"), WatchLock(tmp_path / "watch.lock")
    first.acquire()
    try:
        assert first.owner() == str(os.getpid())
        with pytest.raises(AlreadyWatching, match=f"pid {os.getpid()}"):
            second.acquire()
    finally:
        first.release()
    assert second.owner() is None
    second.acquire()
    second.release()


def test_outbox_must_not_be_the_inbox(tmp_path):
    with pytest.raises(Exception, match="outside the inbox"):
        check_folders(tmp_path, tmp_path)
    with pytest.raises(Exception, match="outside the inbox"):
        check_folders(tmp_path, tmp_path / "done")
    check_folders(tmp_path / "in", tmp_path / "out")


def test_derived_seeds_are_stable_and_spread():
    assert derive_seed(42, 0) == derive_seed(42, 0)
    seeds = {derive_seed(42, i) for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**32 for s in seeds)


# --- observer ------------------------------------------------------------------------------------------------


def wait_for(condition, timeout=20.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def test_native_observer_reports_created_and_renamed_files(tmp_path):
    sink = EventSink(tmp_path, is_job_name)
    observer, kind = start_observer(sink)
    try:
        assert kind.startswith("native")
        (tmp_path / "direct.txt").write_text("a")
        (tmp_path / "up.txt.part").write_text("b")
        os.rename(tmp_path / "up.txt.part", tmp_path / "up.txt")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "deep.txt").write_text("c")
        seen: set[str] = set()
        assert wait_for(lambda: seen.update(p.name for p in sink.drain()) or {"direct.txt", "up.txt"} <= seen)
        assert "up.txt.part" not in seen and "deep.txt" not in seen
    finally:
        stop_observer(observer)


def test_inotify_limit_falls_back_to_polling(tmp_path, caplog):
    class Exhausted:  # stands in for watchdog's Observer when inotify has no watches left
        def schedule(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

        def stop(self):
            pass

        def is_alive(self):
            return False

    sink = EventSink(tmp_path, is_job_name)
    observer, kind = start_observer(sink, native_factory=Exhausted)
    try:
        assert kind == "polling every 1 s"
        assert "max_user_watches" in caplog.text
        (tmp_path / "late.txt").write_text("a")
        assert wait_for(lambda: any(p.name == "late.txt" for p in sink.drain()), timeout=10)
    finally:
        stop_observer(observer)


# --- the watcher with the real pipeline ------------------------------------------------------------------------


class Running:
    """A Watcher in a thread, stopped and joined on exit."""

    def __init__(self, inbox: Path, outbox: Path, model: Path, **options):
        options.setdefault("quiet", 0.1)
        options.setdefault("rescan", 0.5)
        self.config = WatchConfig(inbox, outbox, str(model), **options)
        self.stop = threading.Event()
        self.watcher = Watcher(self.config, self.stop)
        self.counts = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.counts = self.watcher.run()
        except BaseException as exc:  # surfaced by __exit__
            self.error = exc

    def __enter__(self):
        self.thread.start()
        assert wait_for(lambda: self.watcher.ready_event.is_set() or self.error, timeout=60), "watcher did not start"
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error and not exc[0]:
            raise self.error


def dirs(tmp_path):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    return inbox, outbox


def settled(inbox: Path, names: list[str]) -> bool:
    return all((inbox / "done" / n).exists() or (inbox / "failed" / n).exists() for n in names)


def test_watcher_turns_files_into_images_with_metadata(tmp_path, tiny_checkpoint, plugins, caplog):
    caplog.set_level("INFO", logger="ganvas.watch")
    inbox, outbox = dirs(tmp_path)
    (inbox / "early.txt").write_text("a red circle\n# skipped\na blue square\n")  # before start: startup scan
    with Running(inbox, outbox, tiny_checkpoint):
        tmp = inbox / ".writing.json"
        tmp.write_text(
            json.dumps([{"prompt": "a green star", "n": 2, "seed": 40, "truncation": 0.7, "name": "Green Stars"}])
        )
        os.rename(tmp, inbox / "late.json")  # arrives by rename, like most careful writers
        assert wait_for(lambda: settled(inbox, ["early.txt", "late.json"]))
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["early.txt", "late.json"]
    assert not list((inbox / "processing").iterdir()) and not list((inbox / "failed").iterdir())
    early = sorted(p.name for p in (outbox / "early").iterdir())
    assert len(early) == 3 and early[-1] == "manifest.json" and early[0].startswith("000_")
    manifest = json.loads((outbox / "early" / "manifest.json").read_text())
    assert [p["prompt"] for p in manifest["prompts"]] == ["a red circle", "a blue square"]
    assert [p["line"] for p in manifest["prompts"]] == [1, 3]
    assert manifest["model"]["name"] == "tiny" and manifest["errors"] == [] and manifest["images"] == 2
    assert sorted(p.name for p in (outbox / "late").iterdir()) == [
        "000_green-stars_40.png",
        "000_green-stars_41.png",
        "manifest.json",
    ]
    text = read_png_text(outbox / "late" / "000_green-stars_41.png")
    record = json.loads(text["ganvas"])
    assert record["request"]["host"] == "watch" and record["seed"] == 41 and record["request"]["truncation"] == 0.7
    assert text["Description"] == "a green star" and "Seed: 41" in text["parameters"]
    assert "done early.txt: 2 prompts, 2 images" in caplog.text and "done late.json: 1 prompt, 2 images" in caplog.text


def test_bad_lines_fail_the_job_but_good_ones_are_made(tmp_path, tiny_checkpoint, plugins):
    from ganvas.core import policy as request_policy

    request_policy.configure(max_n=3)
    inbox, outbox = dirs(tmp_path)
    (inbox / "mixed.json").write_text(
        json.dumps(
            [
                {"prompt": "a red circle", "seed": 1},
                {"prompt": "too many", "n": 5},
                {"prompt": "a blue square", "model": "no-such-model"},
                {"prompt": "a green star", "n": 2, "seed": 9},
            ],
            indent=1,
        )
    )
    with Running(inbox, outbox, tiny_checkpoint):
        assert wait_for(lambda: settled(inbox, ["mixed.json"]))
    report = json.loads((inbox / "failed" / "mixed.error.json").read_text())
    assert report["kind"] == "bad_prompts" and report["images_written"] == 3 and report["prompts_ok"] == 2
    assert [(p["index"], p["field"]) for p in report["problems"]] == [(1, "n"), (2, "model")]
    assert "limit is 3" in report["problems"][0]["message"]
    assert "unknown model 'no-such-model'" in report["problems"][1]["message"]
    assert report["message"].startswith("2 of 4 prompts failed; item 1 (line 6), field 'n': request refused")
    assert sorted(p.name for p in (outbox / "mixed").glob("*.png")) == ["000_1.png", "003_10.png", "003_9.png"]


def test_name_collision_gets_a_new_folder_and_duplicates_are_skipped(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    (outbox / "job").mkdir(parents=True)
    (outbox / "job" / "mine.png").write_bytes(b"someone else's")
    (inbox / "job.txt").write_text("a red circle\n")
    with Running(inbox, outbox, tiny_checkpoint):
        assert wait_for(lambda: settled(inbox, ["job.txt"]))
        (inbox / "job.txt").write_text("a red circle\n")  # the same content again
        assert wait_for(lambda: (inbox / "done" / "job-1.txt").exists())
    assert (outbox / "job" / "mine.png").read_bytes() == b"someone else's"
    assert len(list((outbox / "job-1").glob("*.png"))) == 1
    assert not (outbox / "job-2").exists()  # the duplicate made nothing
    assert watch_status(inbox)["duplicates"] == 1
    (inbox / "job.txt").write_text("a red circle\n")
    with Running(inbox, outbox, tiny_checkpoint, duplicates="process"):
        assert wait_for(lambda: (inbox / "done" / "job-2.txt").exists())
    assert len(list((outbox / "job-2").glob("*.png"))) == 1
    shutil.rmtree(outbox / "job-1")
    shutil.rmtree(outbox / "job-2")
    (inbox / "job.txt").write_text("a red circle\n")
    with Running(inbox, outbox, tiny_checkpoint):  # the earlier outputs are gone: not a duplicate any more
        assert wait_for(lambda: (inbox / "done" / "job-3.txt").exists())
    assert len(list((outbox / "job-1").glob("*.png"))) == 1


def test_whole_file_failures_go_to_failed_with_an_error_file(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    (inbox / "bad.json").write_text('[{"prompt": "a"},\n {"prompt": }]')
    (inbox / "junk.txt").write_bytes(os.urandom(64) + b"\x00")
    (inbox / "many.txt").write_text("p\n" * 11)
    (inbox / "notes.md").write_text("ignored")
    with Running(inbox, outbox, tiny_checkpoint, max_prompts=10):
        assert wait_for(lambda: settled(inbox, ["bad.json", "junk.txt", "many.txt"]))
    errors = {p.name: json.loads(p.read_text()) for p in (inbox / "failed").glob("*.error.json")}
    assert errors["bad.error.json"]["line"] == 2 and errors["bad.error.json"]["kind"] == "json"
    assert errors["bad.error.json"]["message"] == "invalid JSON at line 2 column 13: Expecting value"
    assert errors["junk.error.json"]["kind"] == "binary"
    assert errors["many.error.json"]["kind"] == "too_many_prompts"
    assert (inbox / "notes.md").exists()  # unknown extensions are left alone
    assert not outbox.exists() or not any(outbox.iterdir())


def test_stopped_job_resumes_without_repeating_images(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    (inbox / "long.txt").write_text("".join(f"prompt number {i}\n" for i in range(30)))
    pipelines = Pipelines(str(tiny_checkpoint))
    processor = JobProcessor(Inbox(inbox), outbox, pipelines)
    real_get = pipelines.get
    calls = []

    def get_then_stop(model=None):  # stop after ten prompts, as SIGTERM would
        calls.append(model)
        if len(calls) == 10:
            processor.stop.set()
        return real_get(model)

    pipelines.get = get_then_stop
    assert processor.take(inbox / "long.txt") == "interrupted"
    processor.close()
    made = sorted(p.name for p in (outbox / "long").glob("*.png"))
    before = {p.name: p.stat().st_mtime_ns for p in (outbox / "long").glob("*.png")}
    assert 0 < len(made) < 30 and len(list((inbox / "processing").iterdir())) == 1
    processor = JobProcessor(Inbox(inbox), outbox, Pipelines(str(tiny_checkpoint)))
    [(name, outcome)] = processor.recover()
    processor.close()
    assert (name, outcome) == ("long.txt", "done")
    pngs = sorted(p.name for p in (outbox / "long").glob("*.png"))
    assert len(pngs) == 30 and len({n.split("_")[0] for n in pngs}) == 30
    assert all((outbox / "long" / n).stat().st_mtime_ns == t for n, t in before.items())  # not rewritten
    manifest = json.loads((outbox / "long" / "manifest.json").read_text())
    assert manifest["images_reused"] == len(made) and manifest["images_written"] == 30 - len(made)
    assert not (outbox / "long-1").exists()


def test_recovery_finishes_a_move_cut_short(tmp_path, tiny_checkpoint, plugins, monkeypatch):
    inbox, outbox = dirs(tmp_path)
    (inbox / "a.txt").write_text("a red circle\n")
    (inbox / "b.txt").write_bytes(b"\x00")
    processor = JobProcessor(Inbox(inbox), outbox, Pipelines(str(tiny_checkpoint)))

    def crash(self, src, dest):
        raise KeyboardInterrupt  # the process dies between the journal record and the move

    monkeypatch.setattr(Inbox, "move", crash)
    for name in ("a.txt", "b.txt"):
        with pytest.raises(KeyboardInterrupt):
            processor.take(inbox / name)
    processor.close()
    monkeypatch.undo()
    assert len(list((inbox / "processing").iterdir())) == 2
    (inbox / "failed" / "b.error.json").unlink()  # as if the crash came before the error file too
    processor = JobProcessor(Inbox(inbox), outbox, Pipelines(str(tiny_checkpoint)))
    assert sorted(processor.recover()) == [("a.txt", "done"), ("b.txt", "failed")]
    assert (inbox / "done" / "a.txt").exists() and (inbox / "failed" / "b.txt").exists()
    assert json.loads((inbox / "failed" / "b.error.json").read_text())["kind"] == "binary"
    assert len(list((outbox / "a").glob("*.png"))) == 1


def test_a_job_that_keeps_killing_the_watcher_is_given_up(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    box = Inbox(inbox)
    box.ensure()
    source = box.processing / "20260101T000000-abcdef__poison.txt"
    source.write_text("a red circle\n")
    journal = Journal(box.journal_path)
    journal.append(
        "claimed", "20260101T000000-abcdef", file="poison.txt", path="processing/" + source.name, seed_base=1
    )
    journal.append("resumed", "20260101T000000-abcdef")
    journal.append("resumed", "20260101T000000-abcdef")
    journal.close()
    processor = JobProcessor(box, outbox, Pipelines(str(tiny_checkpoint)))
    assert processor.recover() == [("poison.txt", "failed")]
    report = json.loads((inbox / "failed" / "poison.error.json").read_text())
    assert report["kind"] == "interrupted" and "gave up after 3 attempts" in report["message"]


def test_a_file_left_in_processing_by_hand_is_claimed_and_run(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    Inbox(inbox).ensure()
    (inbox / "processing" / "manual.txt").write_text("a red circle\n")
    processor = JobProcessor(Inbox(inbox), outbox, Pipelines(str(tiny_checkpoint)))
    assert processor.recover() == [("manual.txt", "done")]
    assert (inbox / "done" / "manual.txt").exists()


def test_slow_writer_is_read_once_complete(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    lines = [f"a red circle number {i}\n" for i in range(12)]
    with Running(inbox, outbox, tiny_checkpoint, quiet=0.4):
        with open(inbox / "slow.txt", "w") as fh:
            for line in lines:  # pauses shorter than the quiet period
                fh.write(line)
                fh.flush()
                time.sleep(0.1)
        assert wait_for(lambda: settled(inbox, ["slow.txt"]))
    manifest = json.loads((outbox / "slow" / "manifest.json").read_text())
    assert len(manifest["prompts"]) == 12 and not (outbox / "slow-1").exists()


def test_polling_mode_and_status(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    with Running(inbox, outbox, tiny_checkpoint, poll=0.1, rescan=60) as running:
        assert running.watcher.observer_kind == "polling every 0.1 s"
        status = watch_status(inbox)
        assert status["watcher"] == str(os.getpid()) and status["done"] == 0
        with pytest.raises(AlreadyWatching):
            Watcher(WatchConfig(inbox, tmp_path / "out2", str(tiny_checkpoint))).run()
        (inbox / "polled.txt").write_text("a blue square\n")
        assert wait_for(lambda: settled(inbox, ["polled.txt"]))
    (inbox / "queued.txt").write_text("later\n")
    status = watch_status(inbox)
    assert (status["watcher"], status["queued"], status["processing"], status["done"], status["failed"]) == (
        None,
        1,
        0,
        1,
        0,
    )


# --- command line ----------------------------------------------------------------------------------------------


def test_plugin_adds_the_watch_command(plugins):
    assert plugins.pm.has_plugin("commands")  # the built-in that adds the hosts' commands
    group = click.Group()
    plugins.register_commands(group)
    assert group.commands["watch"] is watch_command


def test_cli_once_and_status(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    (inbox / "good.txt").write_text("a red circle\n")
    runner = CliRunner()
    result = runner.invoke(
        watch_command,
        [str(inbox), "--out", str(outbox), "--model", str(tiny_checkpoint), "--once", "--quiet-period", "0.1"],
    )
    assert result.exit_code == 0, result.output
    assert (inbox / "done" / "good.txt").exists()
    (inbox / "bad.json").write_text("{")
    result = runner.invoke(
        watch_command,
        [str(inbox), "--out", str(outbox), "--model", str(tiny_checkpoint), "--once", "--quiet-period", "0.1"],
    )
    assert result.exit_code == 1 and "1 job(s) failed" in result.output
    result = runner.invoke(watch_command, [str(inbox), "--status"])
    assert result.exit_code == 0
    assert "done        1" in result.output and "failed      1" in result.output and "not running" in result.output
    result = runner.invoke(watch_command, [str(inbox)])
    assert result.exit_code == 2 and "--out OUTBOX is required" in result.output
    result = runner.invoke(watch_command, [str(inbox), "--out", str(inbox)])
    assert result.exit_code == 1 and "outside the inbox" in result.output


# --- red-team regressions ----------------------------------------------------------------------------------


class LogLines(logging.Handler):
    """The watcher's log lines (the CLI turns propagation off, so caplog cannot be relied on here)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def watch_log():
    logger = logging.getLogger("ganvas.watch")
    handler, level = LogLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def once(inbox: Path, outbox: Path, model: Path, *extra: str):
    return CliRunner().invoke(
        watch_command,
        [str(inbox), "--out", str(outbox), "--model", str(model), "--once", "--quiet-period", "0.05", *extra],
    )


BIG_INT = b"7" * 5000


@pytest.mark.parametrize(
    "data, message",
    [
        (
            b'[{"prompt": "a", "seed": 1},\n {"prompt": "b", "seed": ' + BIG_INT + b"}]",
            "invalid JSON at line 2: a number with 5000 digits (the limit is 4300)",
        ),
        (b'{"prompt": "a",\n "seed": ' + BIG_INT + b"}", "invalid JSON at line 2: a number with 5000 digits"),
        (b"[" * 200_000, "invalid JSON at line 1: nested too deeply"),
        (b'{"prompt": ' + b"[" * 200_000 + b"}", "invalid JSON at line 1: nested too deeply"),
    ],
)
def test_json_that_json_itself_rejects_fails_at_once_with_the_real_reason(
    tmp_path, tiny_checkpoint, plugins, data, message
):
    with pytest.raises(JobError) as info:
        parse_job("x.json", data)
    assert info.value.kind == "json" and info.value.message.startswith(message)
    inbox, outbox = dirs(tmp_path)
    (inbox / "x.json").write_bytes(data)
    processor = JobProcessor(Inbox(inbox), outbox, Pipelines(str(tiny_checkpoint)))
    assert processor.take(inbox / "x.json") == "failed"  # the first time, not after three restarts
    processor.close()
    report = json.loads((inbox / "failed" / "x.error.json").read_text())
    assert report["kind"] == "json" and report["message"].startswith(message) and report["attempts"] == 1
    assert not list((inbox / "processing").iterdir())


def test_unclaimable_file_is_reported_once_and_once_exits_non_zero(tmp_path, tiny_checkpoint, plugins, watch_log):
    inbox, outbox = dirs(tmp_path)
    name = "x" * 232 + ".txt"  # 236 bytes: fine in the inbox, too long as processing/<job id>__<name>
    (inbox / name).write_text("a red circle\n")
    with Running(inbox, outbox, tiny_checkpoint, quiet=0.05, rescan=0.1):
        time.sleep(1.5)  # a dozen rescans
    assert (inbox / name).exists()
    assert watch_log.count("cannot claim") == 1, watch_log.text
    assert "File name too long" in watch_log.text and name in watch_log.text
    result = once(inbox, outbox, tiny_checkpoint)
    assert result.exit_code == 1, result.output
    assert f"not claimed: {name}" in result.output and "File name too long" in result.output
    assert "nothing to do" not in result.output
    assert (inbox / name).exists()


def test_claim_refused_by_permissions_is_reported(tmp_path, tiny_checkpoint, plugins, monkeypatch):
    inbox, outbox = dirs(tmp_path)
    (inbox / "theirs.txt").write_text("a red circle\n")
    (inbox / "mine.txt").write_text("a blue square\n")
    real_rename = os.rename

    def sticky_rename(src, dst, *args, **kwargs):  # a sticky shared inbox: someone else's file cannot be moved
        if Path(src).name == "theirs.txt":
            raise PermissionError(errno.EPERM, "Operation not permitted", str(src))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", sticky_rename)
    result = once(inbox, outbox, tiny_checkpoint)
    assert result.exit_code == 1, result.output
    assert "not claimed: theirs.txt" in result.output and "Operation not permitted" in result.output
    assert (inbox / "theirs.txt").exists() and (inbox / "done" / "mine.txt").exists()


def test_io_error_during_a_job_is_retried_while_running(tmp_path, tiny_checkpoint, plugins, watch_log):
    inbox, outbox = dirs(tmp_path)
    away = tmp_path / "out-away"
    with Running(inbox, outbox, tiny_checkpoint):
        os.rename(outbox, away)  # the outbox's share went away; its path is now a plain file
        outbox.write_text("not a folder")
        (inbox / "job.txt").write_text("a red circle\n")
        assert wait_for(lambda: watch_log.count("did not finish") >= 2, timeout=30), watch_log.text
        assert (inbox / "processing").exists() and len(list((inbox / "processing").iterdir())) == 1
        outbox.unlink()
        os.rename(away, outbox)  # back again: the next retry finishes the job without a restart
        assert wait_for(lambda: settled(inbox, ["job.txt"]), timeout=30), watch_log.text
    assert (inbox / "done" / "job.txt").exists() and len(list((outbox / "job").glob("*.png"))) == 1
    assert "Not a directory" in watch_log.text and "retry in" in watch_log.text


def test_a_job_stalled_by_io_errors_is_resumed_not_given_up_as_interrupted(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    box = Inbox(inbox)
    box.ensure()
    job = "20260101T000000-abcdef"
    (box.processing / f"{job}__full.txt").write_text("a red circle\n")
    journal = Journal(box.journal_path)
    journal.append("claimed", job, file="full.txt", path=f"processing/{job}__full.txt", seed_base=1)
    for _ in range(3):  # three runs, each ended by a full disk (retried once), none by a crash
        journal.append("stalled", job, error="No space left on device")
        journal.append("retried", job)
        journal.append("stalled", job, error="No space left on device")
        journal.append("resumed", job)
    journal.append("stalled", job, error="No space left on device")
    journal.close()
    processor = JobProcessor(box, outbox, Pipelines(str(tiny_checkpoint)))
    assert processor.recover() == [("full.txt", "done")]
    processor.close()


def test_symlink_in_processing_is_refused_without_reading_its_target(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    box = Inbox(inbox)
    box.ensure()
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret prompt\n")
    (box.processing / "evil.txt").symlink_to(secret)
    (box.processing / "20260101T000000-abcdef__evil2.txt").symlink_to(secret)
    processor = JobProcessor(box, outbox, Pipelines(str(tiny_checkpoint)))
    assert sorted(processor.recover()) == [("evil.txt", "failed"), ("evil2.txt", "failed")]
    processor.close()
    for name in ("evil", "evil2"):
        assert (inbox / "failed" / f"{name}.txt").is_symlink()  # the link moved, not its target
        report = json.loads((inbox / "failed" / f"{name}.error.json").read_text())
        assert report["kind"] == "symlink" and "symbolic link" in report["message"]
    assert secret.read_text() == "the secret prompt\n"
    assert not outbox.exists() or not any(outbox.iterdir())


def test_inbox_folders_that_are_symlinks_are_refused(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (inbox / "done").symlink_to(elsewhere)
    (inbox / "a.txt").write_text("a red circle\n")
    with pytest.raises(GanvasError, match=r"done is a symbolic link"):
        Watcher(WatchConfig(inbox, outbox, str(tiny_checkpoint), once=True, quiet=0.05)).run()
    result = once(inbox, outbox, tiny_checkpoint)
    assert result.exit_code == 1 and "done is a symbolic link" in result.output
    assert (inbox / "a.txt").exists() and not any(elsewhere.iterdir())
    # done/ swapped for a link while the watcher runs: the input is not moved out of the inbox
    (inbox / "done").unlink()
    processor = JobProcessor(Inbox(inbox), outbox, Pipelines(str(tiny_checkpoint)))
    (inbox / "done").rmdir()
    (inbox / "done").symlink_to(elsewhere)
    assert processor.take(inbox / "a.txt") == "stalled"
    processor.close()
    assert not any(elsewhere.iterdir()) and len(list((inbox / "processing").iterdir())) == 1
    assert "symbolic link" in next(iter(processor.stalled.values()))[1]


def test_jobs_name_registered_models_only_unless_paths_are_allowed(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    job = json.dumps(
        [{"prompt": "a red circle", "model": str(tiny_checkpoint)}, {"prompt": "a blue square", "model": "tests"}]
    )  # a folder in the working directory
    (inbox / "paths.json").write_text(job)
    processor = JobProcessor(Inbox(inbox), outbox, Pipelines(str(tiny_checkpoint)))
    assert processor.take(inbox / "paths.json") == "failed"
    processor.close()
    report = json.loads((inbox / "failed" / "paths.error.json").read_text())
    assert [(p["index"], p["field"]) for p in report["problems"]] == [(0, "model"), (1, "model")]
    assert "--allow-model-paths" in report["problems"][0]["message"]
    assert "not a registered name" in report["problems"][1]["message"]
    assert report["images_written"] == 0
    registered = sorted(plugins.models())
    assert registered and Pipelines(str(tiny_checkpoint)).model_problem(registered[0]) is None
    (inbox / "paths.json").write_text(job[: job.index(", {")] + "]")
    processor = JobProcessor(Inbox(inbox), outbox, Pipelines(str(tiny_checkpoint), allow_model_paths=True))
    assert processor.take(inbox / "paths.json") == "done"
    processor.close()


def test_lines_written_after_the_claim_are_not_lost(tmp_path, tiny_checkpoint, plugins, watch_log):
    inbox, outbox = dirs(tmp_path)
    first = "".join(f"a red circle number {i}\n" for i in range(40))
    with Running(inbox, outbox, tiny_checkpoint, quiet=0.3):
        with open(inbox / "paused.txt", "w") as fh:
            fh.write(first + "a blue sq")  # ends in the middle of a line
            fh.flush()
            # the writer pauses longer than the quiet period: the job is claimed and starts
            assert wait_for(lambda: (outbox / "paused").exists() and any((outbox / "paused").glob("*.png")))
            fh.write("uare\na green star\n")
        assert wait_for(lambda: settled(inbox, ["paused.txt"]), timeout=60)
    assert (inbox / "done" / "paused.txt").read_text() == first + "a blue square\na green star\n"
    manifest = json.loads((outbox / "paused" / "manifest.json").read_text())
    assert [p["prompt"] for p in manifest["prompts"]][-2:] == ["a blue square", "a green star"]
    assert len(manifest["prompts"]) == 42 and manifest["images"] == 42
    assert sorted(p.name for p in (outbox / "paused").glob("*.png")) == sorted(
        f for p in manifest["prompts"] for f in p["files"]
    )
    blue = outbox / "paused" / manifest["prompts"][40]["files"][0]
    assert read_png_text(blue)["Description"] == "a blue square"  # not the image of "a blue sq"
    assert "changed after it was claimed" in watch_log.text


def test_journal_is_compacted_and_history_stays_small(tmp_path, tiny_checkpoint, plugins):
    inbox, outbox = dirs(tmp_path)
    box = Inbox(inbox)
    box.ensure()
    journal = Journal(box.journal_path)
    for i in range(20_000):  # finished jobs: only their duplicate keys matter any more
        job = f"20260101T000000-{i:06x}"
        journal.append("claimed", job, file=f"j{i}.txt", path=f"processing/{job}__j{i}.txt", seed_base=i)
        journal.append("output", job, dir=f"j{i}")
        event = "duplicate" if i % 10 == 1 else "done"
        journal.append(event, job, dest=f"done/j{i}.txt", dir=f"j{i}", key=f"{i:064x}", sha256="0" * 64)
    live = "20260102T000000-aaaaaa"  # killed mid-job: everything about it must survive
    (box.processing / f"{live}__live.txt").write_text("a red circle\n")
    journal.append("claimed", live, file="live.txt", path=f"processing/{live}__live.txt", seed_base=5)
    journal.append("resumed", live)
    journal.close()
    before = box.journal_path.stat().st_size
    stale = box.journal_path.with_name(f".{box.journal_path.name}.123-0badcafe.tmp")  # a compaction cut short
    stale.write_bytes(b"half")
    processor = JobProcessor(box, outbox, Pipelines(str(tiny_checkpoint)))
    after = box.journal_path.stat().st_size
    assert not list(box.journal_path.parent.glob("*.tmp"))  # the stale one removed, the new one renamed
    assert after < before / 3, (before, after)
    assert set(processor.history.jobs) == {live} and processor.history.attempts(live) == 2
    assert len(processor.history.done_keys) == 18_000
    assert watch_status(inbox)["duplicates"] == 2000
    assert processor.recover() == [("live.txt", "done")]
    assert processor.history.jobs == {}  # a finished job is not kept in memory
    processor.close()
    processor = JobProcessor(box, outbox, Pipelines(str(tiny_checkpoint)))
    (inbox / "again.txt").write_text("a red circle\n")
    assert processor.take(inbox / "again.txt") == "duplicate"  # keys survive compaction and restarts
    processor.close()
    assert len(processor.history.done_keys) == 18_001 and watch_status(inbox)["duplicates"] == 2001
    # while running: compacted again whenever the journal doubled
    small, small_out = tmp_path / "small", tmp_path / "small-out"
    small.mkdir()
    processor = JobProcessor(Inbox(small), small_out, Pipelines(str(tiny_checkpoint)), compact_bytes=1)
    for i in range(3):
        (small / f"s{i}.txt").write_text(f"a red circle number {i}\n")
        assert processor.take(small / f"s{i}.txt") == "done"
    processor.close()
    events = [r["event"] for r in Journal(Inbox(small).journal_path).records()]
    assert "claimed" not in events and "output" not in events and events.count("done") == 3, events
    assert len(JobProcessor(Inbox(small), small_out, Pipelines(str(tiny_checkpoint))).history.done_keys) == 3


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_bom_text_files_are_read(encoding):
    text = "# prompts\na red circle\ncafé au lait\n"
    bom = {"utf-16-le": "\ufeff", "utf-16-be": "\ufeff"}.get(encoding, "")
    data = (bom + text).encode(encoding)
    job = parse_job("x.txt", data)
    assert [(e.line, e.prompt) for e in job.entries] == [(2, "a red circle"), (3, "café au lait")]
    job = parse_job("x.json", (bom + '[{"prompt": "a red circle"},\n {"prompt": "café"}]').encode(encoding))
    assert [(e.line, e.prompt) for e in job.entries] == [(1, "a red circle"), (2, "café")]
    with pytest.raises(JobError, match="binary"):  # still binary without a BOM
        parse_job("x.txt", "a red circle\n".encode("utf-16-le"))
