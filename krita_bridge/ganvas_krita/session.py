"""The docker's model, without Qt: seeds, layer names, the session's history of results."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from .client import MAX_SEED, ClientError, GeneratedImage, GenerateParams

SEED_DRAW_LIMIT = 2**31 - 1  # drawn seeds stay short enough to read and type back
LAYER_PROMPT_CHARS = 60

_rng = random.SystemRandom()


def random_seed() -> int:
    return _rng.randint(0, SEED_DRAW_LIMIT)


def parse_seed(text: str, n: int = 1) -> int:
    """The seed field's text as an int; a ClientError naming the problem otherwise."""
    value = (text or "").strip()
    if not value.isdigit():
        raise ClientError("invalid", f"the seed must be a whole number (0..{MAX_SEED}), got {value!r}", param="seed")
    seed = int(value)
    if seed > MAX_SEED - (n - 1):
        raise ClientError(
            "invalid", f"seed {seed} is too large: seed + count - 1 must stay <= {MAX_SEED}", param="seed"
        )
    return seed


def layer_name(prompt: str, seed: int | None) -> str:
    """'ganvas: a red circle (seed 7)'; long prompts are shortened with an ellipsis."""
    text = " ".join(prompt.split())
    if len(text) > LAYER_PROMPT_CHARS:
        text = text[: LAYER_PROMPT_CHARS - 1].rstrip() + "\u2026"
    return f"ganvas: {text}" + (f" (seed {seed})" if seed is not None else "")


def seeds_label(images: list[GeneratedImage]) -> str:
    seeds = [im.seed for im in images if im.seed is not None]
    if not seeds:
        return "seeds unknown"
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds {seeds[0]}\u2013{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


@dataclass
class Batch:
    """One answered request: its parameters, images and round-trip time."""

    params: GenerateParams
    images: list[GeneratedImage]
    elapsed_s: float
    live: bool = False
    created: float = field(default_factory=time.time)

    def label(self) -> str:
        prompt = " ".join(self.params.prompt.split())
        if len(prompt) > 40:
            prompt = prompt[:39] + "\u2026"
        live = "  \u00b7 live" if self.live else ""
        return (
            f"{time.strftime('%H:%M:%S', time.localtime(self.created))}  {prompt}  ({seeds_label(self.images)}){live}"
        )

    def summary(self) -> str:
        count = len(self.images)
        return (
            f"{count} image{'s' if count != 1 else ''} in {self.elapsed_s * 1000:.0f} ms "
            f"\u00b7 {seeds_label(self.images)}"
        )


class History:
    """The session's batches, newest last, bounded three ways: `limit` batches in all, `live_limit` live
    previews (live mode answers every pause in typing; the oldest previews go first), and `max_bytes`
    of PNG data (large sizes are megabytes per image). A live answer to exactly the request of the
    previous live batch (a repeated debounce) replaces it instead of piling up."""

    def __init__(self, limit: int = 100, live_limit: int = 40, max_bytes: int = 256 * 2**20):
        self.limit, self.live_limit, self.max_bytes = limit, live_limit, max_bytes
        self.batches: list[Batch] = []

    def add(self, batch: Batch) -> Batch:
        last = self.batches[-1] if self.batches else None
        if batch.live and last is not None and last.live and last.params == batch.params:
            self.batches[-1] = batch
        else:
            self.batches.append(batch)
        live = [b for b in self.batches if b.live]
        for old in live[: max(0, len(live) - self.live_limit)]:
            self.batches.remove(old)
        del self.batches[: -self.limit]
        while len(self.batches) > 1 and self.nbytes() > self.max_bytes:
            del self.batches[0]
        return batch

    def nbytes(self) -> int:
        return sum(len(image.png) for batch in self.batches for image in batch.images)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Batch:
        return self.batches[index]
