"""Images behind `url` responses: one PNG per id in a folder, served for a limited time.

Writes are atomic. On Linux a file is written unnamed (O_TMPFILE) and linked under its final name
only when complete, so a server killed mid-write leaves nothing at all behind; elsewhere it is written
as `.partial-<id>` and renamed, and a new store removes such leftovers when it opens the folder.
Ids are 128 random bits in URL-safe base64 and are matched against a strict pattern before any path
is built, so a request can never name another file.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path

from ganvas.core.io.atomic import atomic_open

log = logging.getLogger("ganvas.server")

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
PARTIAL_PREFIX = ".partial-"
SUFFIX = ".png"


class ImageStore:
    def __init__(
        self, folder: str | os.PathLike, ttl_s: float, *, max_bytes: int = 2 * 1024**3, use_tmpfile: bool = True
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ttl_s, self.max_bytes = ttl_s, max_bytes
        self._use_tmpfile = use_tmpfile and hasattr(os, "O_TMPFILE")
        self._lock = threading.Lock()
        self._sizes: dict[str, tuple[float, int]] = {}  # id -> (mtime, bytes), oldest first
        self._total = 0
        self._last_sweep = 0.0
        self._recover()

    # --- opening ----------------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Drop what a killed predecessor left half-written, index the complete files, expire old ones."""
        entries = []
        for path in self.folder.iterdir():
            if path.name.startswith(PARTIAL_PREFIX):
                self._unlink(path)
                continue
            stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else ""
            if ID_PATTERN.match(stem):
                try:
                    st = path.stat()
                except OSError:
                    continue
                entries.append((st.st_mtime, stem, st.st_size))
        for mtime, stem, size in sorted(entries):
            self._sizes[stem] = (mtime, size)
            self._total += size
        self.sweep(force=True)

    # --- writing ----------------------------------------------------------------------------------------
    def put(self, data: bytes) -> str:
        image_id = secrets.token_urlsafe(16)
        final = self.path(image_id)
        if not (self._use_tmpfile and self._put_tmpfile(data, final)):
            # The one atomic writer, under the `.partial-<id>` name that _recover() knows to remove.
            with atomic_open(final, fsync=False, temp=self.folder / f"{PARTIAL_PREFIX}{image_id}") as fh:
                fh.write(data)
        # No fsync: the files outlive a killed process through the page cache; a power cut may lose
        # an hour of temporary URLs, which is acceptable, while fsync per image would cost throughput.
        with self._lock:
            self._sizes[image_id] = (time.time(), len(data))
            self._total += len(data)
        self.sweep()
        return image_id

    def _put_tmpfile(self, data: bytes, final: Path) -> bool:
        # Not core/io/atomic.py: an unnamed O_TMPFILE linked when complete leaves no name at all behind.
        try:
            fd = os.open(self.folder, os.O_TMPFILE | os.O_WRONLY, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                self._use_tmpfile = False  # this filesystem cannot: use the rename path from now on
                return False
            raise
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            # dst_dir_fd makes Python call linkat(AT_SYMLINK_FOLLOW), which links the open file itself;
            # plain link() would try to link the /proc symlink (EXDEV).
            dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(f"/proc/self/fd/{fd}", final.name, dst_dir_fd=dir_fd, follow_symlinks=True)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EPERM, errno.EACCES, errno.EXDEV):  # no /proc, say
                    self._use_tmpfile = False
                    return False
                raise
            finally:
                os.close(dir_fd)
        finally:
            os.close(fd)
        return True

    # --- reading ----------------------------------------------------------------------------------------
    def path(self, image_id: str) -> Path:
        if not ID_PATTERN.match(image_id):
            raise ValueError(f"not an image id: {image_id!r}")
        return self.folder / f"{image_id}{SUFFIX}"

    def lookup(self, image_id: str) -> tuple[Path, float] | None:
        """(path, seconds left) for a live image, None for unknown or expired ids."""
        if not ID_PATTERN.match(image_id):
            return None
        with self._lock:
            entry = self._sizes.get(image_id)
        if entry is None:
            return None
        left = entry[0] + self.ttl_s - time.time()
        path = self.path(image_id)
        if left <= 0 or not path.is_file():
            return None
        return path, left

    # --- expiry -----------------------------------------------------------------------------------------
    def sweep(self, force: bool = False) -> int:
        """Delete expired images, and the oldest ones while over max_bytes. At most every 10 s unless forced."""
        now = time.time()
        if not force and now - self._last_sweep < 10:
            with self._lock:
                if self._total <= self.max_bytes:
                    return 0
        self._last_sweep = now
        doomed = []
        with self._lock:
            for image_id, (mtime, size) in list(self._sizes.items()):
                if mtime + self.ttl_s > now and self._total <= self.max_bytes:
                    break  # insertion order is age order: the rest are newer
                del self._sizes[image_id]
                self._total -= size
                doomed.append(image_id)
        for image_id in doomed:
            self._unlink(self.path(image_id))
        return len(doomed)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"images": len(self._sizes), "bytes": self._total}

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)
