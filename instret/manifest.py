"""The corpus manifest and the small file helpers that keep a corpus folder consistent."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class CorpusError(RuntimeError):
    pass


class EmbedderMismatchError(CorpusError):
    pass


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


@dataclass
class Manifest:
    """What a corpus was built from and how; enough to rebuild it or refuse a wrong embedder."""

    domain: str
    embedder_id: str
    embedder_dimension: int
    clustering: dict
    teacher: dict
    guide_style: str
    sources: list[dict]
    question_ids: list[str]
    store: dict
    n_guides: int = 0
    n_clusters: int = 0
    complete: bool = False
    #: For data without a train split (MMLU law): how the file was split and which questions
    #: were held out for evaluation, so evaluation can use exactly those.
    split: dict | None = None
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    format_version: int = FORMAT_VERSION

    def save(self, folder: str | Path) -> None:
        atomic_write_text(Path(folder) / MANIFEST, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "Manifest":
        path = Path(folder) / MANIFEST
        if not path.exists():
            raise CorpusError(f"{folder} is not an instret corpus (no {MANIFEST}); build one with `instret corpus build`")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION:
            raise CorpusError(f"{path}: format version {data.get('format_version')} is not supported "
                              f"(this instret reads version {FORMAT_VERSION}); rebuild the corpus")
        return cls(**data)

    def check_embedder(self, embedder_id: str, folder: str | Path) -> None:
        if embedder_id != self.embedder_id:
            raise EmbedderMismatchError(
                f"corpus {folder} was built with embedder {self.embedder_id!r} (dimension "
                f"{self.embedder_dimension}), not {embedder_id!r}: its vectors are not comparable. "
                f"Use --embedder {self.embedder_id} or build a new corpus in another folder.")
