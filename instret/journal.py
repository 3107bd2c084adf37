"""Append-only JSONL of finished work (guides, evaluated answers): it survives any crash."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


class Journal:
    """One JSON line per finished item, flushed and fsynced before the next is accepted.

    Records are identified by their `key` field. A `kill -9` can leave at most a partial last
    line; the first append cuts it off, so no finished item is lost or written twice.
    """

    def __init__(self, path: str | Path, key: str):
        self.path = Path(path)
        self.key = key
        self._lock = threading.Lock()
        self._tail_checked = False

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

    def _repair_tail(self) -> None:
        if self._tail_checked or not self.path.exists():
            self._tail_checked = True
            return
        self._tail_checked = True
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self._repair_tail()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
