"""Files that survive a crash: the append-only journal of finished work, and atomic rewrites."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path


class Journal:
    """One JSON line per finished item, on disk before `append` returns.

    Records are identified by their `key` field. A `kill -9` can leave at most a partial last
    line; the first append cuts it off, so no finished item is lost or written twice.
    """

    def __init__(self, path: str | Path, key: str):
        self.path = Path(path)
        self.key = key
        self._lock = threading.Lock()  # orders writes
        self._sync_lock = threading.Lock()  # one fsync at a time; it covers every write before it
        self._fd: int | None = None
        self._written = 0
        self._synced = 0

    def read(self) -> dict[str, dict]:
        """Finished records by key (a later line for the same key wins)."""
        records = {}
        if not self.path.exists():
            return records
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.endswith("\n"):
                    record = json.loads(line)
                    records[record[self.key]] = record
        return records

    def _open(self) -> int:
        """Open for appending, first cutting off a partial last line a crash may have left."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with self.path.open("r+b") as handle:
                    handle.truncate(data.rfind(b"\n") + 1)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict) -> None:
        """Write one record; it is on disk (fsynced) when this returns.

        Concurrent appends share fsyncs (group commit): a thread whose line an fsync issued
        after its write already covered returns without one of its own.
        """
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                self._fd = self._open()
            os.write(self._fd, line)  # from here the line survives a kill -9 of this process
            self._written += 1
            mine = self._written
        with self._sync_lock:
            if self._synced < mine:
                with self._lock:
                    covered, fd = self._written, self._fd
                os.fsync(fd)  # ... and from here a power cut too
                self._synced = covered

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self):
        self.close()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file so readers see the old or the new content, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
