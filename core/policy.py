"""The request policy shared by every host (applied by the built-in plugin plugins/request_policy.py): prompt length and `n` limits, and a blocklist.

Configuration (configure() > environment > defaults):
  GANVAS_MAX_PROMPT_CHARS   default 1000 (the OpenAI Images limit for DALL-E 2)
  GANVAS_MAX_N              default 100 images per request
  GANVAS_BLOCKLIST          path to a blocklist file: one entry per line; '#' starts a comment;
                            a plain entry matches as a whole word or phrase, case-insensitively;
                            an entry written /like this/ is a regular expression (case-insensitive).
A blocklist that cannot be read refuses every request (fail closed) and says why. Regular expressions
run on the `regex` engine with a time limit (REGEX_TIME_LIMIT_S for all of them per request): an entry
like /(a|aa)+$/ can backtrack for hours on a crafted prompt, so a match that runs out of time refuses it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ganvas.core.errors import RequestRefused

DEFAULT_MAX_PROMPT_CHARS = 1000
DEFAULT_MAX_N = 100
REGEX_TIME_LIMIT_S = 0.25  # per request, all /regex/ entries together


@dataclass(frozen=True)
class BlockRule:
    pattern: re.Pattern
    source: str  # "file:line" for messages
    text: str
    timed: bool = False  # a `regex` pattern, searched with a time limit


def _compile_regex(entry: str, where: str):
    """A /regex/ entry on the `regex` engine, whose search takes a timeout (Python's re cannot be stopped)."""
    try:
        import regex  # a dependency of transformers, so always there with ganvas
    except ImportError:
        raise ValueError(f"{where}: regular-expression entries need the 'regex' package (pip install regex)") from None
    try:
        return regex.compile(entry[1:-1], regex.IGNORECASE | regex.VERSION0)
    except regex.error as exc:
        raise ValueError(f"{where}: bad regular expression {entry!r} ({exc})") from None


def parse_blocklist(lines: list[str], source: str = "blocklist") -> list[BlockRule]:
    rules = []
    for number, raw in enumerate(lines, 1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        where = f"{source}:{number}"
        if len(entry) >= 2 and entry.startswith("/") and entry.endswith("/"):
            rules.append(BlockRule(_compile_regex(entry, where), where, entry, timed=True))
        else:  # escaped words and \s+ between them: linear, no time limit needed
            pattern = re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, entry.split())) + r"(?!\w)", re.IGNORECASE)
            rules.append(BlockRule(pattern, where, entry))
    return rules


def load_blocklist(path: str | os.PathLike) -> list[BlockRule]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read blocklist ({exc})") from None
    return parse_blocklist(text.splitlines(), str(path))


class RequestPolicy:
    def __init__(
        self,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
        max_n: int = DEFAULT_MAX_N,
        blocklist: str | os.PathLike | list[str] | None = None,
        regex_time_limit_s: float = REGEX_TIME_LIMIT_S,
    ):
        self.max_prompt_chars = max_prompt_chars
        self.max_n = max_n
        self.blocklist = blocklist
        self.regex_time_limit_s = regex_time_limit_s
        self._cache: tuple[object, list[BlockRule]] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env=None) -> "RequestPolicy":
        env = os.environ if env is None else env

        def positive(name: str, default: int) -> int:
            raw = env.get(name) or str(default)
            if not raw.strip().isdigit() or int(raw) < 1:
                raise ValueError(f"{name}={raw!r} is not a positive integer")
            return int(raw)

        return cls(
            positive("GANVAS_MAX_PROMPT_CHARS", DEFAULT_MAX_PROMPT_CHARS),
            positive("GANVAS_MAX_N", DEFAULT_MAX_N),
            env.get("GANVAS_BLOCKLIST") or None,
        )

    def rules(self) -> list[BlockRule]:
        if self.blocklist is None:
            return []
        if isinstance(self.blocklist, (list, tuple)):
            key = tuple(self.blocklist)
            loader = lambda: parse_blocklist(list(self.blocklist))  # noqa: E731
        else:
            try:
                stat = os.stat(self.blocklist)
                key = (str(self.blocklist), stat.st_mtime_ns, stat.st_size)  # reload when the file changes
            except OSError:
                key = (str(self.blocklist), None)
            loader = lambda: load_blocklist(self.blocklist)  # noqa: E731
        with self._lock:
            if self._cache is None or self._cache[0] != key:
                self._cache = (key, loader())
            return self._cache[1]

    def check(self, request) -> None:
        if len(request.prompt) > self.max_prompt_chars:
            raise RequestRefused(
                f"prompt is {len(request.prompt)} characters; the limit is {self.max_prompt_chars}", param="prompt"
            )
        if request.n > self.max_n:
            raise RequestRefused(f"n={request.n} images requested; the limit is {self.max_n}", param="n")
        try:
            rules = self.rules()
        except ValueError as exc:
            raise RequestRefused(f"the blocklist is broken, so nothing is generated: {exc}") from None
        deadline = time.monotonic() + self.regex_time_limit_s
        for rule in rules:
            for text in (request.prompt, request.style or ""):
                match = self._search(rule, text, deadline)
                if match:
                    raise RequestRefused(
                        f"the prompt contains the blocked term {match.group(0)!r} "
                        f"(blocklist entry {rule.text!r} at {rule.source})",
                        param="prompt",
                    )

    def _search(self, rule: BlockRule, text: str, deadline: float):
        if not rule.timed:
            return rule.pattern.search(text)
        try:
            return rule.pattern.search(text, timeout=max(0.001, deadline - time.monotonic()))
        except TimeoutError:  # fail closed: a match that cannot finish must not let the prompt through
            raise RequestRefused(
                f"blocklist entry {rule.text!r} at {rule.source} ran out of time "
                f"({self.regex_time_limit_s:g} s) on this prompt; simplify that regular "
                f"expression"
            ) from None


_configured: RequestPolicy | None = None


def configure(**options) -> RequestPolicy:
    """Set the policy in code (a host's own config file); configure() with no options returns to env."""
    global _configured
    _configured = RequestPolicy(**options) if options else None
    return current_policy()


_env_policy: tuple[tuple, RequestPolicy] | None = None


def current_policy() -> RequestPolicy:
    global _env_policy
    if _configured is not None:
        return _configured
    key = tuple(os.environ.get(k) for k in ("GANVAS_MAX_PROMPT_CHARS", "GANVAS_MAX_N", "GANVAS_BLOCKLIST"))
    if _env_policy is None or _env_policy[0] != key:
        _env_policy = (key, RequestPolicy.from_env())
    return _env_policy[1]
