"""Replacing a file so that a reader, or a crash, sees the old file or the new one, never half of one.

The one recipe every saver uses: write a hidden temporary file in the target's own folder (a rename is
atomic only within one filesystem), flush and fsync it, `os.replace` it over the target, fsync the folder
so the rename itself survives a power cut; on any error the temporary file is removed and the old file
is left as it was. Temporary names are `.<name>.<pid>-<random>.tmp`: hidden, unique per writer (threads
included), and what the hot folder's `clean_temps` removes after a crash.

    write_json(folder / "config.json", data)
    with atomic_open(path) as fh: fh.write(...)            # a writer that takes a file object
    with atomic_path(path) as tmp: save_file(tensors, tmp)  # a writer that needs a path (safetensors, PIL)

Standard library only: importing this never imports torch.
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

TMP_SUFFIX = ".tmp"


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh hidden temporary name beside `path`."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}"


def _create(tmp: Path) -> int:
    # O_EXCL: never reuse (or follow a link at) an existing name; 0o666 under the umask, as open() does.
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except OSError:
        pass


def _commit(tmp: Path, path: Path, fsync: bool) -> None:
    os.replace(tmp, path)
    if fsync:
        fsync_folder(path.parent)


@contextmanager
def atomic_open(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    fsync: bool = True,
    temp: str | os.PathLike | None = None,
) -> Iterator[IO[Any]]:
    """A file object on a temporary file that replaces `path` when the block ends without an error.

    mode "wb" or "w" (text, `encoding` defaults to UTF-8). fsync=False skips the fsyncs (the file survives
    a killed process, not necessarily a power cut). `temp` names the temporary file instead of a hidden
    one (for a folder that recognises its own leftovers by name); it must not exist yet."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'wb' or 'w', not {mode!r}")
    path = Path(path)
    tmp = Path(temp) if temp is not None else temp_path(path)
    fd = _create(tmp)
    try:
        with open(fd, "wb") if mode == "wb" else open(fd, "w", encoding=encoding or "utf-8") as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        _commit(tmp, path, fsync)
    except BaseException:
        _discard(tmp)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """A temporary path for a writer that opens files itself (safetensors' save_file, PIL's save with an
    explicit format); it replaces `path` when the block ends without an error."""
    path = Path(path)
    tmp = temp_path(path)
    os.close(_create(tmp))  # reserve the name; the writer truncates and fills it
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))  # RDWR: Windows fsyncs writable handles only
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _commit(tmp, path, fsync)
    except BaseException:
        _discard(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    with atomic_open(path, "wb", fsync=fsync) as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", fsync: bool = True) -> Path:
    return write_bytes(path, text.encode(encoding), fsync=fsync)


def write_json(
    path: str | os.PathLike, data: Any, *, indent: int | None = 2, ensure_ascii: bool = False, fsync: bool = True
) -> Path:
    """`data` as JSON (UTF-8, indented, with a final newline)."""
    return write_text(path, json.dumps(data, indent=indent, ensure_ascii=ensure_ascii) + "\n", fsync=fsync)


__all__ = [
    "atomic_open",
    "atomic_path",
    "write_bytes",
    "write_text",
    "write_json",
    "temp_path",
    "fsync_folder",
    "TMP_SUFFIX",
]
