"""Job files: which names are jobs, and parsing `*.txt` / `*.json` into entries with per-line errors.

A `.txt` job is one prompt per line (blank lines and `#` comments skipped). A `.json` job is an object
or a list of objects with `prompt` and optional `n`, `seed`, `model`, `truncation`, `style`, `size`
(a side in pixels, 256, or "256x256"; above the model's side its upsampler makes it), `name`. Each prompt-bearing line or list item gets an `index` (its position among them), bad ones
included, so output file names stay tied to the source whatever else is wrong with the file.

A problem with one line/item is a `Problem` (the rest of the job still runs); a problem with the
whole file (binary, not JSON, too large, too many prompts, no prompts) raises `JobError`.
Text is UTF-8 (a BOM is allowed); a file that starts with a UTF-16 or UTF-32 BOM (Windows Notepad,
PowerShell redirection) is decoded from that first.
Torch-free: this runs before any model is loaded.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from typing import Any

from ganvas.core.errors import InvalidRequest
from ganvas.core.io.prompt_files import DEFAULT_MAX_BYTES, DEFAULT_MAX_PROMPTS, Limits  # noqa: F401 (re-exported)
from ganvas.core.requests import DEFAULT_TRUNCATION, GenerationRequest

JOB_SUFFIXES = (".txt", ".json")
# Names that writers use while a file is still being produced, and OS/desktop litter.
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", ".swx", ".filepart")
JUNK_NAMES = {"thumbs.db", "desktop.ini", "icon\r"}

JSON_FIELDS = ("prompt", "n", "seed", "model", "truncation", "style", "size", "name")
JSON_DEPTH = 500  # a JSON job nested deeper than json can decode is reported as nested "more than" this

# Longest first: the UTF-32-LE BOM starts with the UTF-16-LE one.
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def is_job_name(name: str) -> bool:
    """True for `*.txt` / `*.json` names that are not hidden, temporary or OS junk."""
    lower = name.lower()
    if not name or name[0] in ".~" or lower in JUNK_NAMES:
        return False
    if lower.endswith(TEMP_SUFFIXES) or lower.endswith("~"):
        return False
    return lower.endswith(JOB_SUFFIXES)


class JobError(Exception):
    """The whole file is unusable. `line`/`field` locate the problem when one place is at fault."""

    def __init__(self, message: str, line: int | None = None, field: str | None = None, kind: str = "invalid_job"):
        super().__init__(message)
        self.message = message
        self.line = line
        self.field = field
        self.kind = kind

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "line": self.line, "field": self.field, "kind": self.kind}


@dataclass
class Problem:
    """One bad line (txt) or item (json); the other entries of the job still run."""

    index: int | None
    line: int | None
    field: str | None
    message: str
    item: bool = False  # a JSON list item (named "item N (line L)"), not a text line

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "line": self.line, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        where = f"item {self.index} (line {self.line})" if self.item else f"line {self.line}"
        return f"{where}{f', field {self.field!r}' if self.field else ''}: {self.message}"


@dataclass
class Entry:
    index: int
    line: int
    prompt: str
    n: int = 1
    seed: int | None = None
    model: str | None = None
    truncation: float = DEFAULT_TRUNCATION
    style: str | None = None
    size: int | None = None
    name: str | None = None
    item: bool = False  # from a JSON list (problems are named "item N (line L)")


@dataclass
class ParsedJob:
    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Prompt-bearing lines/items, good and bad: the range of `index`."""
        return len(self.entries) + len(self.problems)


def read_limited(path, limits: Limits) -> bytes:
    """The file's bytes, refusing files over the size limit without reading them whole."""
    return read_job(path, limits)[0]


def read_job(path, limits: Limits) -> tuple[bytes, tuple[int, int]]:
    """(bytes, (size, mtime_ns) before reading) of a regular file, never following a symlink.

    The signature lets the caller notice a writer that kept writing after the claim.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block
    try:
        fd = os.open(path, flags)
    except OSError:
        if os.path.islink(path):  # ELOOP (Linux), EMLINK (FreeBSD)
            raise JobError("is a symbolic link; refused (its target was not read)", kind="symlink") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise JobError("not a regular file", kind="unreadable")
        data = fh.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise JobError(f"file is larger than the limit of {limits.max_bytes} bytes (--max-bytes)", kind="too_large")
    return data, (st.st_size, st.st_mtime_ns)


def parse_job(name: str, data: bytes, limits: Limits = Limits()) -> ParsedJob:
    """Parse by extension. Raises JobError for a whole-file problem."""
    if not data:
        raise JobError("empty file (0 bytes): no prompts", kind="empty")
    if len(data) > limits.max_bytes:
        raise JobError(f"file is larger than the limit of {limits.max_bytes} bytes (--max-bytes)", kind="too_large")
    data = _from_bom(data)
    nul = data.find(b"\x00")
    if nul >= 0:  # checked first: a binary file should be called binary, not "not UTF-8" or "bad JSON"
        line = data.count(b"\n", 0, nul) + 1
        raise JobError(
            f"binary data (NUL byte) at line {line}; expected a text job (.txt: one prompt per line, "
            f".json: objects with \"prompt\")",
            line=line,
            kind="binary",
        )
    if name.lower().endswith(".json"):
        job = _parse_json(data, limits)
    else:
        job = _parse_txt(data, limits)
    if not job.entries and not job.problems:
        hint = (
            "one prompt per line; blank and # lines are skipped"
            if not name.lower().endswith(".json")
            else "an object or a list of objects with \"prompt\""
        )
        raise JobError(f"no prompts ({hint})", kind="no_prompts")
    return job


def _from_bom(data: bytes) -> bytes:
    """UTF-16/32 text with a BOM, re-encoded as UTF-8 (line numbers unchanged); anything else as it is."""
    for bom, codec in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec).encode("utf-8")
            except UnicodeDecodeError as exc:
                line = data[: exc.start].decode(codec, "replace").count("\n") + 1
                raise JobError(
                    f"not valid {codec.upper()} text ({exc.reason} at byte {exc.start}, line {line}; "
                    f"the file starts with a {codec.upper()} byte order mark)",
                    line=line,
                    kind="encoding",
                ) from None
    return data


def _too_many(count: int, limits: Limits) -> JobError:
    return JobError(
        f"{count} prompts in one file; the limit is {limits.max_prompts} (--max-prompts); split the file",
        kind="too_many_prompts",
    )


def _parse_txt(data: bytes, limits: Limits) -> ParsedJob:
    job = ParsedJob()
    index = 0
    lines = data.splitlines()
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError as exc:
            job.problems.append(
                Problem(index, number, None, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
            )
            index += 1
            continue
        if not text or text.startswith("#"):
            continue
        if index >= limits.max_prompts:
            rest = sum(1 for r in lines[number - 1 :] if r.strip() and not r.strip().startswith(b"#"))
            raise _too_many(index + rest, limits)
        entry = Entry(index, number, text)
        problem = _validate(entry)
        if problem:
            job.problems.append(problem)
        else:
            job.entries.append(entry)
        index += 1
    return job


def _parse_json(data: bytes, limits: Limits) -> ParsedJob:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise JobError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line})", line=line, kind="encoding"
        ) from None
    try:
        items = _json_items(text)
    except json.JSONDecodeError as exc:
        reason = exc.msg[:-3] if exc.msg.endswith(" at") else exc.msg  # "Invalid control character at"
        raise JobError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {reason}", line=exc.lineno, kind="json"
        ) from None
    except RecursionError:  # json's decoder recurses per [ / {
        line = _deep_line(text)
        raise JobError(
            f"invalid JSON{f' at line {line}' if line else ''}: nested too deeply "
            f"(more than {JSON_DEPTH} levels of [ and {{)",
            line=line,
            kind="json",
        ) from None
    except ValueError as exc:  # valid syntax json still refuses: an integer over Python's digit limit
        raise _number_error(text, exc) from None
    if items is None:
        raise JobError("a JSON job must be an object or a list of objects with \"prompt\"", line=1, kind="json")
    if len(items) > limits.max_prompts:
        raise _too_many(len(items), limits)
    job = ParsedJob()
    for index, (line, item) in enumerate(items):
        entry_or_problem = _json_entry(index, line, item)
        if isinstance(entry_or_problem, Problem):
            job.problems.append(entry_or_problem)
        else:
            job.entries.append(entry_or_problem)
    return job


def _json_items(text: str) -> list[tuple[int, Any]] | None:
    """[(line, item)] for a top-level list (or one object), keeping each item's starting line.

    json.loads forgets positions, so a list is decoded item by item with raw_decode; any syntax error
    is re-raised by json.loads for its standard message with line and column.
    """
    decoder = json.JSONDecoder()
    ws = " \t\r\n"
    pos = len(text) - len(text.lstrip(ws))
    if pos >= len(text):
        json.loads(text)  # raises "Expecting value"
    if text[pos] == "{":
        return [(text.count("\n", 0, pos) + 1, json.loads(text))]
    if text[pos] != "[":
        json.loads(text)  # a syntax error raises; valid JSON of the wrong type is refused by the caller
        return None
    items = []
    try:
        pos += 1
        while True:
            while pos < len(text) and text[pos] in ws:
                pos += 1
            if pos < len(text) and text[pos] == "]" and not items:
                pos += 1
                break
            start = pos
            value, pos = decoder.raw_decode(text, pos)
            items.append((text.count("\n", 0, start) + 1, value))
            while pos < len(text) and text[pos] in ws:
                pos += 1
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if pos < len(text) and text[pos] == "]":
                pos += 1
                break
            raise ValueError("expected , or ]")
        if text[pos:].strip(ws):
            raise ValueError("extra data")
    except (ValueError, IndexError):
        json.loads(text)  # the standard error, with line and column
        raise  # pragma: no cover - json.loads accepted what the scanner refused
    return items


def _deep_line(text: str) -> int | None:
    """The line where [ / { nesting first passes JSON_DEPTH levels (strings skipped)."""
    depth = 0
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > JSON_DEPTH:
                return text.count("\n", 0, token.start()) + 1
        elif char in "]}":
            depth -= 1
    return None


def _number_error(text: str, exc: ValueError) -> JobError:
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    digits = re.search(r"\d{%d,}" % (limit + 1), text) if limit else None
    if digits is None:  # not the digit limit after all: report json's own words
        return JobError(f"invalid JSON: {str(exc).split(';')[0]}", kind="json")
    line = text.count("\n", 0, digits.start()) + 1
    return JobError(
        f"invalid JSON at line {line}: a number with {len(digits.group())} digits (the limit is {limit})",
        line=line,
        kind="json",
    )


def _json_entry(index: int, line: int, item: Any) -> Entry | Problem:
    result = _json_entry_or_problem(index, line, item)
    if isinstance(result, Problem):
        result.item = True
    return result


def _json_entry_or_problem(index: int, line: int, item: Any) -> Entry | Problem:
    if not isinstance(item, dict):
        return Problem(index, line, None, f"item {index} is {_json_type(item)}; expected an object with \"prompt\"")
    unknown = [k for k in item if k not in JSON_FIELDS]
    if unknown:
        return Problem(index, line, unknown[0], f"unknown field {unknown[0]!r} (known: {', '.join(JSON_FIELDS)})")
    if "prompt" not in item:
        return Problem(index, line, "prompt", "missing \"prompt\"")
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        return Problem(index, line, "name", f"name must be text, got {_json_type(name)}")
    prompt = item["prompt"]
    entry = Entry(
        index,
        line,
        prompt.strip() if isinstance(prompt, str) else prompt,
        item.get("n", 1),
        item.get("seed"),
        item.get("model"),
        item.get("truncation", DEFAULT_TRUNCATION),
        item.get("style"),
        _size(item.get("size")),
        name,
        item=True,
    )
    if entry.model is not None and not isinstance(entry.model, str):
        return Problem(index, line, "model", f"model must be text, got {_json_type(entry.model)}")
    return _validate(entry) or entry


_SQUARE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


def _size(value: Any) -> Any:
    """`size` as a side in pixels (256) or the HTTP API's square "256x256"; anything else is left for
    validate() to refuse with the usual message. Above the model's side it means its upsampler."""
    if isinstance(value, str):
        match = _SQUARE.fullmatch(value.strip())
        if match and match[1] == match[2]:
            return int(match[1])
    return value


def _validate(entry: Entry) -> Problem | None:
    """The request checks every host shares (types and ranges); policy limits apply at generation."""
    request = GenerationRequest(
        entry.prompt, entry.n, entry.seed, entry.truncation, entry.model, entry.style, entry.size, "watch"
    )
    try:
        request.validate()
    except InvalidRequest as exc:
        return Problem(entry.index, entry.line, exc.param, str(exc))
    return None


def _json_type(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "text",
        bool: "true/false",
        type(None): "null",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)
