"""Questions → clusters: reduce (UMAP), cluster (HDBSCAN), settle the outliers, and split any
cluster too big for one guide.

`CorpusBuilder` follows scikit-learn: settings in `__init__`, work in `fit`, learned
attributes end in `_`. Any reducer with `fit_transform` and any clusterer with `fit` and
`labels_` can be swapped in, e.g. `CorpusBuilder(clusterer=KMeans(n_clusters=20))`.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence

import numpy as np

from instret.corpus.embedders import Embedder
from instret.data.questions import Question

GENERAL = -1  # label of the general bucket under `outliers="general"`
#: Target questions per guide, and how far over it a cluster may grow before it is split: chosen
#: from the measurements in benchmarks/results/clustering.md (run benchmarks/bench_clustering.py).
DEFAULT_CLUSTER_SIZE = 30
SPLIT_FACTOR = 2.0
MIN_QUESTIONS = 10  # fewer questions form one cluster
# What `describe()` records for a part left to its default before `fit` (the fingerprint of a
# cached clustering): change them with the defaults, so old clusterings are not reused.
DEFAULT_REDUCER = "default: UMAP 5-d, 15 neighbours, min_dist 0, cosine"
DEFAULT_CLUSTERER = "default: HDBSCAN eom, min_cluster_size sqrt(n)/2, then size-bounded split"


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
    """HDBSCAN on the reduced vectors. Coarse on purpose: it finds the dense regions with little
    noise and stably, and the size bound then splits the big ones (benchmarks/results/clustering.md:
    finer HDBSCAN settings left 20-36% noise and agreed less between 90% refits)."""
    import hdbscan

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
    """Embed, reduce and cluster a domain's questions into one cluster per guide.

    >>> builder = CorpusBuilder(random_state=0).fit(questions)
    >>> builder.n_clusters_, builder.outlier_fraction_
    >>> CorpusBuilder(n_guides=50).fit(questions).n_clusters_     # about 50

    Parameters: `embedder` (any `Embedder`; default all-MiniLM-L6-v2), `reducer` and
    `clusterer` (default UMAP to 5-D, then HDBSCAN), `map_reducer` (2-D layout for the map;
    None skips it), `outliers` ("nearest": HDBSCAN's noise joins the cluster with the most
    similar centroid; "general": noise forms one general bucket with a guide of its own).

    Granularity, one of: `cluster_size`, the target number of questions per guide, or
    `n_guides`, the number of guides. A cluster over `split_factor` × `cluster_size` questions is
    split (KMeans in the reduced space) into parts of about `cluster_size`, so a guide never has
    to cover a large mixed group: about questions / `cluster_size` guides. `n_guides` sets the
    target size to questions / `n_guides`, then bisects the largest clusters or merges the
    smallest into their nearest until there are exactly `n_guides`. The default clusterer is
    always size-bounded (`cluster_size` DEFAULT_CLUSTER_SIZE); a clusterer of your own only when
    you set one of the two. Fewer than two clusters' worth of questions (or fewer than
    MIN_QUESTIONS) form one cluster: there is nothing to split.
    """

    def __init__(self, embedder: Embedder | None = None, reducer: Reducer | None = None,
                 clusterer: Clusterer | None = None, map_reducer: Reducer | Literal["default"] | None = "default",
                 outliers: Literal["nearest", "general"] = "nearest", cluster_size: int | None = None,
                 n_guides: int | None = None, split_factor: float = SPLIT_FACTOR, random_state: int | None = 0):
        self.embedder = embedder
        self.reducer = reducer
        self.clusterer = clusterer
        self.map_reducer = map_reducer
        self.outliers = outliers
        self.cluster_size = cluster_size
        self.n_guides = n_guides
        self.split_factor = split_factor
        self.random_state = random_state

    def fit(self, questions: Sequence[Question], embeddings: np.ndarray | None = None) -> "CorpusBuilder":
        questions = list(questions)
        self._check_params(len(questions))
        if embeddings is None:
            embeddings = self._embedder().encode([q.render() for q in questions])
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.shape[0] != len(questions):
            raise ValueError(f"{embeddings.shape[0]} embeddings for {len(questions)} questions")
        self.questions_ = questions
        self.embeddings_ = embeddings
        self.target_cluster_size_ = self._target_size(len(questions))
        self.n_split_ = 0
        if self._too_few(len(questions)):
            self.note_ = (f"{len(questions)} questions are too few to split (fewer than "
                          f"{max(MIN_QUESTIONS, 2 * (self.target_cluster_size_ or 0))}): one cluster")
            self.reducer_ = self.clusterer_ = None
            self.reduced_ = embeddings
            self.raw_labels_ = np.zeros(len(questions), dtype=int)
            self.coords_2d_ = None if self.map_reducer is None else small_layout(embeddings)
            self.map_reducer_ = None
        else:
            self.note_ = None
            self.reduced_ = self.fit_reduce(embeddings)
            self.raw_labels_ = self.fit_cluster(self.reduced_)
            self.coords_2d_ = self.fit_map(embeddings)
        settled = self.settle_outliers(self.raw_labels_, embeddings)
        self.labels_ = self.split_oversized(settled, self.reduced_, embeddings)
        self.clusters_ = clusters_from_labels(questions, self.labels_, embeddings)
        self.n_clusters_ = len(self.clusters_)
        self.outlier_fraction_ = float(np.mean(self.raw_labels_ < 0))
        return self

    def _check_params(self, n_questions: int) -> None:
        if self.outliers not in ("nearest", "general"):
            raise ValueError(f"outliers must be 'nearest' or 'general', not {self.outliers!r}")
        if n_questions < 1:
            raise ValueError("no questions to cluster")
        if self.cluster_size is not None and self.n_guides is not None:
            raise ValueError("give cluster_size or n_guides, not both")
        for name in ("cluster_size", "n_guides"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        if not self.split_factor > 1:
            raise ValueError(f"split_factor must be above 1, not {self.split_factor!r}")

    def _target_size(self, n_questions: int) -> int | None:
        """Questions per guide aimed at; None when a custom clusterer is left unbounded."""
        if self.n_guides is not None:
            return max(1, math.ceil(n_questions / self.n_guides))
        if self.cluster_size is not None:
            return self.cluster_size
        return DEFAULT_CLUSTER_SIZE if self.clusterer is None else None

    def _too_few(self, n_questions: int) -> bool:
        if n_questions < MIN_QUESTIONS:
            return True  # UMAP's spectral layout needs more points than dimensions, and HDBSCAN a few more
        return self.clusterer is None and n_questions < 2 * self.target_cluster_size_

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

    def split_oversized(self, labels: np.ndarray, reduced: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """Split each cluster over `split_factor` × the target size into parts of about the target
        size (KMeans in the reduced space), and a part still over it again: KMeans parts can be
        uneven where UMAP packs questions densely. The general bucket stays whole. With `n_guides`,
        then bisect the largest or merge the smallest until there are that many. Labels come back 0..k-1."""
        target = self.target_cluster_size_
        labels = labels.copy()
        stuck: set[int] = set()  # clusters of coinciding points: nothing to split
        while target is not None:
            names, sizes = np.unique(labels[labels != GENERAL], return_counts=True)
            over = [int(name) for name, size in zip(names, sizes)
                    if size > self.split_factor * target and name not in stuck]
            if not over:
                break
            for label in over:
                members = np.flatnonzero(labels == label)
                if self._split(labels, members, math.ceil(len(members) / target), reduced):
                    self.n_split_ += 1
                else:
                    stuck.add(label)
        if self.n_guides is not None:
            self._match_count(labels, reduced, embeddings)
        kept = sorted(set(labels[labels != GENERAL].tolist()))
        renumber = {old: new for new, old in enumerate(kept)} | {GENERAL: GENERAL}
        return np.array([renumber[int(x)] for x in labels], dtype=int)

    def _split(self, labels: np.ndarray, members: np.ndarray, n_parts: int, reduced: np.ndarray) -> bool:
        """Relabel `members` (one cluster) into `n_parts` KMeans parts, in place; False if it would not split."""
        from sklearn.cluster import KMeans

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate points: fewer distinct parts than asked
            parts = KMeans(n_clusters=min(n_parts, len(members)), n_init=3,
                           random_state=self.random_state).fit(reduced[members]).labels_
        next_label = int(labels.max()) + 1
        for part in sorted(set(parts.tolist()))[1:]:
            labels[members[parts == part]] = next_label
            next_label += 1
        return len(set(parts.tolist())) > 1

    def _match_count(self, labels: np.ndarray, reduced: np.ndarray, embeddings: np.ndarray) -> None:
        """Exactly `n_guides` clusters (a general bucket counts as one), in place."""
        clustered = labels != GENERAL
        want = max(1, min(self.n_guides - int((~clustered).any()), int(clustered.sum())))
        names = set(labels[clustered].tolist())
        while len(names) < want:
            largest = max(names, key=lambda name: int(np.sum(labels == name)))
            if not self._split(labels, np.flatnonzero(labels == largest), 2, reduced):
                break  # identical questions: nothing left to split
            names = set(labels[clustered].tolist())
        while len(names) > want:
            smallest = min(names, key=lambda name: int(np.sum(labels == name)))
            others = sorted(names - {smallest})
            centroids = np.stack([_centroid(embeddings[labels == name]) for name in others])
            nearest = others[int(np.argmax(centroids @ _centroid(embeddings[labels == smallest])))]
            labels[labels == smallest] = nearest
            names.discard(smallest)

    def _embedder(self) -> Embedder:
        from instret.corpus.embedders import make_embedder

        return self.embedder if self.embedder is not None else make_embedder()

    def describe(self) -> dict:
        """The settings a manifest records: each part's class and simple parameters.

        Before `fit` a part left to its default reads "default"; after, the part actually used,
        with the target cluster size it resolved to and how many clusters were split.
        """
        defaults = {"reducer": DEFAULT_REDUCER, "clusterer": DEFAULT_CLUSTERER}
        parts = {name: _describe(getattr(self, name + "_", None) or getattr(self, name) or defaults[name])
                 for name in ("reducer", "clusterer")}
        parts["map_reducer"] = _describe(getattr(self, "map_reducer_", None) or self.map_reducer)
        asked = self.cluster_size
        if asked is None and self.n_guides is None and self.clusterer is None:
            asked = DEFAULT_CLUSTER_SIZE  # so a new default invalidates a cached clustering too
        settings = {"outliers": self.outliers, "random_state": self.random_state, "cluster_size": asked,
                    "n_guides": self.n_guides, "split_factor": self.split_factor}
        if hasattr(self, "labels_"):
            settings |= {"target_cluster_size": self.target_cluster_size_, "clusters_split": self.n_split_,
                         "note": self.note_}
        return parts | settings


def small_layout(embeddings: np.ndarray) -> np.ndarray:
    """A 2-D map for inputs too small for UMAP: the first two principal components."""
    centred = embeddings - embeddings.mean(axis=0)
    if len(centred) < 2:
        return np.zeros((len(centred), 2), dtype=np.float32)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ components[:2].T
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1]))).astype(np.float32)


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
