"""The corpus manifest, and the names of the files a corpus folder holds."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from instret.data.files import atomic_write_text, now

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# The other files of a corpus folder (see the README's table).
CLUSTERING, QUESTIONS_FILE, JOURNAL, EMBEDDINGS, CHROMA = (
    "clustering.npz", "questions.jsonl", "guides.jsonl", "embeddings.sqlite", "chroma")


class CorpusError(RuntimeError):
    pass


class EmbedderMismatchError(CorpusError):
    pass


@dataclass
class Manifest:
    """What a corpus was built from and how; enough to rebuild it or refuse a wrong embedder."""

    domain: str
    embedder_id: str
    embedder_dimension: int
    #: How the questions were clustered (`CorpusBuilder.describe()`): reducer and clusterer with
    #: their parameters, the granularity asked (`cluster_size` or `n_guides`), the target size it
    #: came to and how many clusters were split for it; then cluster count, sizes, outlier fraction.
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
    #: How the teacher's guides came out: recovery paths, tokens, guides still failing (see
    #: `instret.teaching.build.guide_writing`).
    guide_writing: dict | None = None
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    format_version: int = FORMAT_VERSION

    def save(self, folder: str | Path) -> None:
        # Strict JSON, so jq and JavaScript read it: parameters such as HDBSCAN's
        # cluster_selection_epsilon_max = inf are written as the strings "inf", "-inf", "nan".
        text = json.dumps(strict_json(asdict(self)), indent=2, allow_nan=False)
        atomic_write_text(Path(folder) / MANIFEST, text + "\n")

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


def strict_json(value):
    """`value` with every non-finite float replaced by its Python spelling ("inf", "-inf", "nan"),
    which `float()` reads back; JSON itself has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: strict_json(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(inner) for inner in value]
    return value
