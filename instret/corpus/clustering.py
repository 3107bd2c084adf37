"""Questions → clusters: reduce (UMAP), cluster (HDBSCAN), and settle the outliers.

`CorpusBuilder` follows scikit-learn: settings in `__init__`, work in `fit`, learned
attributes end in `_`. Any reducer with `fit_transform` and any clusterer with `fit` and
`labels_` can be swapped in, e.g. `CorpusBuilder(clusterer=KMeans(n_clusters=20))`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence

import numpy as np

from instret.corpus.embedders import Embedder
from instret.data.questions import Question

GENERAL = -1  # label of the general bucket under `outliers="general"`


class Reducer(Protocol):
    def fit_transform(self, X, y=None) -> np.ndarray: ...


class Clusterer(Protocol):
    labels_: np.ndarray

    def fit(self, X, y=None) -> Any: ...


class NoReduction:
    """A do-nothing reducer: cluster the embeddings themselves."""

    def fit_transform(self, X, y=None):
        return np.asarray(X)


def default_reducer(random_state: int | None, n_components: int = 5):
    umap = _umap()
    return umap.UMAP(n_components=n_components, n_neighbors=15, min_dist=0.0, metric="cosine",
                     random_state=random_state, n_jobs=1)


def default_clusterer(n_questions: int):
    import hdbscan

    # About sqrt(n)/2 questions per cluster at least: ~7 for 200 questions, ~43 for GSM8K.
    min_cluster_size = max(5, int(round(n_questions ** 0.5 / 2)))
    return hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, metric="euclidean")


def _umap():
    from instret.corpus._numba import import_umap

    return import_umap()


@dataclass
class Cluster:
    """One group of similar questions; its guide is written from `question_ids`."""

    label: int
    question_ids: list[str]
    centroid: np.ndarray = field(repr=False)

    @property
    def id(self) -> str:
        """Stable across reruns: the hash of the member question ids."""
        digest = hashlib.sha1("\n".join(sorted(self.question_ids)).encode()).hexdigest()
        return f"guide-{digest[:16]}"

    @property
    def size(self) -> int:
        return len(self.question_ids)


class CorpusBuilder:
    """Embed, reduce and cluster a domain's questions.

    >>> builder = CorpusBuilder(random_state=0).fit(questions)
    >>> builder.n_clusters_, builder.outlier_fraction_

    Parameters: `embedder` (any `Embedder`; default all-MiniLM-L6-v2), `reducer` and
    `clusterer` (default UMAP to 5-D, then HDBSCAN), `map_reducer` (2-D layout for the map;
    None skips it), `outliers` ("nearest": HDBSCAN's noise joins the cluster with the most
    similar centroid; "general": noise forms one general bucket with a guide of its own).
    """

    def __init__(self, embedder: Embedder | None = None, reducer: Reducer | None = None,
                 clusterer: Clusterer | None = None, map_reducer: Reducer | Literal["default"] | None = "default",
                 outliers: Literal["nearest", "general"] = "nearest", random_state: int | None = 0):
        self.embedder = embedder
        self.reducer = reducer
        self.clusterer = clusterer
        self.map_reducer = map_reducer
        self.outliers = outliers
        self.random_state = random_state

    def fit(self, questions: Sequence[Question], embeddings: np.ndarray | None = None) -> "CorpusBuilder":
        if self.outliers not in ("nearest", "general"):
            raise ValueError(f"outliers must be 'nearest' or 'general', not {self.outliers!r}")
        questions = list(questions)
        if len(questions) < 3:
            raise ValueError(f"need at least 3 questions to cluster, got {len(questions)}")
        if embeddings is None:
            embeddings = self._embedder().encode([q.render() for q in questions])
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.shape[0] != len(questions):
            raise ValueError(f"{embeddings.shape[0]} embeddings for {len(questions)} questions")
        self.questions_ = questions
        self.embeddings_ = embeddings
        self.reduced_ = self.fit_reduce(embeddings)
        self.raw_labels_ = self.fit_cluster(self.reduced_)
        self.coords_2d_ = self.fit_map(embeddings)
        self.labels_ = self.settle_outliers(self.raw_labels_, embeddings)
        self.clusters_ = clusters_from_labels(questions, self.labels_, embeddings)
        self.n_clusters_ = len(self.clusters_)
        self.outlier_fraction_ = float(np.mean(self.raw_labels_ < 0))
        return self

    def fit_reduce(self, embeddings: np.ndarray) -> np.ndarray:
        self.reducer_ = self.reducer if self.reducer is not None else default_reducer(self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # UMAP's seeded-run and numba cache notices
            return np.asarray(self.reducer_.fit_transform(embeddings), dtype=np.float32)

    def fit_cluster(self, reduced: np.ndarray) -> np.ndarray:
        self.clusterer_ = self.clusterer if self.clusterer is not None else default_clusterer(len(reduced))
        self.clusterer_.fit(reduced)
        labels = np.asarray(self.clusterer_.labels_, dtype=int)
        if np.all(labels < 0):
            # Every question is noise (tiny or very diverse data): one cluster is the honest answer.
            labels = np.zeros_like(labels)
        return labels

    def fit_map(self, embeddings: np.ndarray) -> np.ndarray | None:
        if self.map_reducer is None:
            self.map_reducer_ = None
            return None
        self.map_reducer_ = (default_reducer(self.random_state, n_components=2) if self.map_reducer == "default"
                             else self.map_reducer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(self.map_reducer_.fit_transform(embeddings), dtype=np.float32)

    def settle_outliers(self, labels: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        noise = labels < 0
        if not noise.any() or self.outliers == "general":
            return np.where(noise, GENERAL, labels)
        clustered = sorted(set(labels[~noise]))
        centroids = np.stack([_centroid(embeddings[labels == label]) for label in clustered])
        nearest = np.argmax(embeddings[noise] @ centroids.T, axis=1)
        settled = labels.copy()
        settled[noise] = np.asarray(clustered)[nearest]
        return settled

    def _embedder(self) -> Embedder:
        from instret.corpus.embedders import make_embedder

        return self.embedder if self.embedder is not None else make_embedder()

    def describe(self) -> dict:
        """The settings a manifest records: each part's class and simple parameters.

        Before `fit` a part left to its default reads "default"; after, the part actually used.
        """
        parts = {name: _describe(getattr(self, name + "_", None) or getattr(self, name) or "default")
                 for name in ("reducer", "clusterer")}
        parts["map_reducer"] = _describe(getattr(self, "map_reducer_", None) or self.map_reducer)
        return parts | {"outliers": self.outliers, "random_state": self.random_state}


def _centroid(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def clusters_from_labels(questions: Sequence[Question], labels: np.ndarray, embeddings: np.ndarray) -> list[Cluster]:
    clusters = []
    for label in sorted(set(int(x) for x in labels)):
        members = np.flatnonzero(labels == label)
        centroid = _centroid(embeddings[members])
        # Most typical first: `corpus show` and the teacher's sample read from the front.
        members = members[np.argsort(-(embeddings[members] @ centroid), kind="stable")]
        clusters.append(Cluster(label=label, question_ids=[questions[i].id for i in members], centroid=centroid))
    return clusters


def _describe(part) -> Any:
    if part is None or isinstance(part, str):
        return part
    params = part.get_params() if hasattr(part, "get_params") else {}
    simple = {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool, type(None)))}
    return {"class": f"{type(part).__module__}.{type(part).__name__}", **simple}


def params_fingerprint(params: dict) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]
