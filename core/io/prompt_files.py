"""Limits on a prompts file, shared by `ganvas generate --prompts FILE` and the hot folder (one file = one job)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_PROMPTS = 10_000


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_prompts: int = DEFAULT_MAX_PROMPTS
