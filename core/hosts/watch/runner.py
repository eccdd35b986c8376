"""Running one parsed job through the pipeline and writing its images and manifest.

Output: OUTBOX/<job>/<index>_<seed>.png (or <index>_<name>_<seed>.png when a JSON item has a `name`)
plus manifest.json, written last, so a folder with a manifest is complete. Names are a pure function
of the job (index, seed), and an item without a seed gets one derived from the job's `seed_base`
(kept in the journal): a job resumed after a crash therefore writes exactly the files it had not
written yet, never a second copy. When the folder already has a manifest (the job runs again because
its input changed after the claim), an entry that differs from the manifest's is made again and files
the manifest lists but the new run does not are removed.

A job's `model` may name a registered model only; checkpoint paths need the watcher's
--allow-model-paths (a job file must not make the watcher load any folder on the machine).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganvas.core.errors import GanvasError, ModelNotFound
from ganvas.core.hosts.watch.faults import crash_point
from ganvas.core.hosts.watch.jobs import Entry, ParsedJob, Problem
from ganvas.core.hosts.watch.outputs import image_name, png_complete, write_json, write_png
from ganvas.core.requests import GenerationRequest

log = logging.getLogger("ganvas.watch")

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "ganvas.watch.manifest"
RETRIES = 2  # transient failures (out of memory on the device) get this many more tries


def _path_like(name: str) -> bool:
    return "/" in name or "\\" in name or name.startswith((".", "~")) or os.path.isabs(name)


def derive_seed(seed_base: int, index: int) -> int:
    """A random-looking seed per item, reproducible from the job's seed_base (2**32 range)."""
    return int.from_bytes(hashlib.sha256(f"{seed_base}:{index}".encode()).digest()[:4], "big")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Pipelines:
    """Loaded pipelines by model spec (the watcher's --model for items that name none)."""

    def __init__(self, default_model: str | None = None, allow_model_paths: bool = False):
        self.default_model = default_model
        self.allow_model_paths = allow_model_paths
        self._loaded: dict[str | None, Any] = {}
        self._registered: list[str] | None = None

    def model_problem(self, model: str | None) -> str | None:
        """Why a job may not use `model` (None: it may): registered names only, unless paths are allowed."""
        if model is None or self.allow_model_paths:
            return None
        if self._registered is None:
            from ganvas.core.plugin_manager import get_plugin_manager

            self._registered = sorted(get_plugin_manager().models())
        registered = self._registered
        if model in registered and not _path_like(model):
            return None
        names = ", ".join(registered) or "none"
        if _path_like(model):
            return (
                f"model {model!r} is a path; a job may name a registered model only (registered: {names}); "
                f"to allow paths, run the watcher with --allow-model-paths"
            )
        return f"unknown model {model!r}: not a registered name (registered: {names})"

    def get(self, model: str | None = None):
        from ganvas.core.pipeline import Pipeline

        if model not in self._loaded:
            self._loaded[model] = Pipeline.load(model if model is not None else self.default_model)
        return self._loaded[model]

    def warm_up(self) -> Any:
        """Load the default model and its text encoder now, so the first job is not the slow one."""
        pipe = self.get(None)
        pipe.encode(["warm up"])
        return pipe

    def model_key(self) -> str:
        info = self.get(None).info
        return f"{info.name}:{info.hash}"

    def request_model(self, entry_model: str | None) -> str:
        return entry_model if entry_model is not None else (self.default_model or self.get(None).name)


@dataclass
class JobContext:
    job_id: str
    name: str  # the input's original file name
    seed_base: int
    out_dir: Path
    attempt: int = 1
    sha256: str | None = None


@dataclass
class RunOutcome:
    prompts: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    written: int = 0
    reused: int = 0
    interrupted: bool = False
    manifest: Path | None = None

    @property
    def images(self) -> int:
        return sum(len(p["files"]) for p in self.prompts)


def run_job(ctx: JobContext, job: ParsedJob, pipelines: Pipelines, stop: threading.Event | None = None) -> RunOutcome:
    started, created = time.perf_counter(), _now()
    outcome = RunOutcome(problems=list(job.problems))
    width = max(3, len(str(max(job.count - 1, 0))))
    spent = {"generate": 0.0, "write": 0.0}
    previous = _previous_prompts(ctx.out_dir / MANIFEST)
    for entry in job.entries:
        if stop is not None and stop.is_set():
            outcome.interrupted = True
            return outcome
        record = _run_entry(ctx, entry, width, pipelines, outcome, spent, previous.get(entry.index))
        if record is not None:
            outcome.prompts.append(record)
    _remove_leftovers(ctx.out_dir, previous, outcome)
    pipe = pipelines.get(None)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "job": ctx.job_id,
        "source": ctx.name,
        "sha256": ctx.sha256,
        "model": {"name": pipe.info.name, "hash": pipe.info.hash},
        "attempt": ctx.attempt,
        "created": created,
        "finished": _now(),
        "timings": {"total": round(time.perf_counter() - started, 4), **{k: round(v, 4) for k, v in spent.items()}},
        "images": outcome.images,
        "images_written": outcome.written,
        "images_reused": outcome.reused,
        "prompts": outcome.prompts,
        "errors": [p.to_dict() for p in sorted(outcome.problems, key=lambda p: (p.index is None, p.index))],
    }
    outcome.manifest = write_json(ctx.out_dir / MANIFEST, manifest)
    crash_point("manifest")
    return outcome


# What makes an entry's images; an entry that differs in one of them from the manifest's is made again.
SAME_IMAGES = ("prompt", "n", "seed", "truncation", "name", "model", "style", "size", "files")


def _previous_prompts(manifest: Path) -> dict[int, dict[str, Any]]:
    """index -> prompt record of the manifest an earlier run of this job left (empty if none)."""
    try:
        prompts = json.loads(manifest.read_text(encoding="utf-8")).get("prompts", [])
        return {p["index"]: p for p in prompts if isinstance(p, dict) and isinstance(p.get("index"), int)}
    except (OSError, ValueError, AttributeError):
        return {}


def _remove_leftovers(out_dir: Path, previous: dict[int, dict[str, Any]], outcome: RunOutcome) -> None:
    """Images an earlier run made for lines that are gone or different now (only files its manifest lists)."""
    current = {f for p in outcome.prompts for f in p["files"]}
    for record in previous.values():
        for name in record.get("files", []):
            if isinstance(name, str) and name not in current and Path(name).name == name:
                (out_dir / name).unlink(missing_ok=True)


def _run_entry(
    ctx: JobContext,
    entry: Entry,
    width: int,
    pipelines: Pipelines,
    outcome: RunOutcome,
    spent: dict[str, float],
    previous: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    from ganvas.core.io.png import slug  # Pillow only once a job runs

    refused = pipelines.model_problem(entry.model)
    if refused:
        outcome.problems.append(Problem(entry.index, entry.line, "model", refused, entry.item))
        return None
    seed = entry.seed if entry.seed is not None else derive_seed(ctx.seed_base, entry.index)
    seeds = [seed + k for k in range(entry.n)]
    label = slug(entry.name) if entry.name else None
    files = [ctx.out_dir / image_name(entry.index, s, width, label) for s in seeds]
    record = {
        "index": entry.index,
        "line": entry.line,
        "prompt": entry.prompt,
        "n": entry.n,
        "seed": seed,
        "seeds": seeds,
        "files": [f.name for f in files],
        "truncation": entry.truncation,
    }
    for key in ("name", "model", "style", "size"):
        if getattr(entry, key) is not None:
            record[key] = getattr(entry, key)
    stale = previous is not None and any(previous.get(k) != record.get(k) for k in SAME_IMAGES)
    missing = [stale or not png_complete(f) for f in files]
    outcome.reused += missing.count(False)
    if not any(missing):
        record["resumed"] = True
        return record
    mark = time.perf_counter()
    try:
        result = _generate(entry, seed, pipelines)
    except GanvasError as exc:
        param = "model" if isinstance(exc, ModelNotFound) else getattr(exc, "param", None)
        outcome.problems.append(Problem(entry.index, entry.line, param, " ".join(str(exc).split()), entry.item))
        return None
    except Exception as exc:  # a model/plugin bug fails this prompt, never the watcher
        log.exception("%s line %d: generation failed", ctx.name, entry.line)
        outcome.problems.append(Problem(entry.index, entry.line, None, f"{type(exc).__name__}: {exc}", entry.item))
        return None
    spent["generate"] += time.perf_counter() - mark
    mark = time.perf_counter()
    for path, image, needed in zip(files, result.images, missing):
        if needed:
            write_png(path, image)
            outcome.written += 1
            crash_point("image")
    spent["write"] += time.perf_counter() - mark
    record["seconds"] = round(time.perf_counter() - mark + result.timings.get("total", 0.0), 4)
    if entry.model is not None:
        record["model_hash"] = result.model.hash
    if result.warnings:
        record["warnings"] = result.warnings
    return record


def _generate(entry: Entry, seed: int, pipelines: Pipelines):
    request = GenerationRequest(
        entry.prompt,
        entry.n,
        seed,
        entry.truncation,
        pipelines.request_model(entry.model),
        entry.style,
        entry.size,
        "watch",
    )
    for attempt in range(RETRIES + 1):
        try:
            return pipelines.get(entry.model).generate(request)
        except Exception as exc:
            # Only running out of memory is worth another try; everything else is reported at once.
            if type(exc).__name__ not in ("OutOfMemoryError", "MemoryError") or attempt == RETRIES:
                raise
            log.warning("line %d: %s; retrying in %d s", entry.line, type(exc).__name__, 2**attempt)
            _empty_device_cache()
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def _empty_device_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort only
        pass
