"""An instruction corpus on disk: open it, list its clusters and guides, draw its map."""

from __future__ import annotations

import json
import math
import re
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instret.corpus.clustering import DEFAULT_CLUSTER_SIZE, GENERAL, Cluster
from instret.corpus.manifest import CHROMA, CLUSTERING, EMBEDDINGS, QUESTIONS_FILE, CorpusError, Manifest
from instret.corpus.store import GuideStore, StoredGuide
from instret.data.questions import Question


@dataclass
class CorpusCluster:
    """One cluster as `corpus show` and `corpus map` present it, with or without its guide yet."""

    label: int
    question_ids: list[str]  # most typical first when the embeddings are at hand, else in build order
    guide: StoredGuide | None
    words: list[str]  # the words that set this cluster's questions apart from the others'

    @property
    def size(self) -> int:
        return len(self.question_ids)

    @property
    def name(self) -> str:
        """The guide's title, else the cluster's most telling words."""
        if self.guide is not None:
            return self.guide.guide.title
        return " · ".join(self.words) or f"cluster {self.label}"


@dataclass
class Corpus:
    """A built corpus: its manifest, guide store and the questions it was built from.

    >>> corpus = Corpus.open("corpora/gsm8k")
    >>> [g.guide.title for g in corpus.guides()]
    >>> [(c.size, c.name) for c in corpus.clusters()]     # every cluster, guide or not
    """

    folder: Path
    manifest: Manifest
    store: GuideStore

    @classmethod
    def open(cls, folder: str | Path, embedder_id: str | None = None) -> "Corpus":
        """Open a corpus; passing `embedder_id` refuses a corpus built with another embedder."""
        folder = Path(folder)
        manifest = Manifest.load(folder)
        if embedder_id is not None:
            manifest.check_embedder(embedder_id, folder)
        location = manifest.store.get("url") or folder / manifest.store.get("path", CHROMA)
        return cls(folder, manifest, GuideStore.open(location, name=manifest.store["name"]))

    def guides(self) -> list[StoredGuide]:
        return self.store.guides()

    def questions(self) -> dict[str, Question]:
        path = self.folder / QUESTIONS_FILE
        with path.open(encoding="utf-8") as handle:
            return {q.id: q for q in (Question.from_dict(json.loads(line)) for line in handle)}

    def map_points(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """2-D coordinates, final cluster labels and question ids, in build order."""
        saved = np.load(self.folder / CLUSTERING, allow_pickle=False)
        return saved["coords"], saved["labels"], [str(i) for i in saved["question_ids"]]

    # --- guides still missing -----------------------------------------------------------------

    def build_command(self) -> str:
        """The `instret corpus build` command that finishes this corpus: same inputs, same folder."""
        from instret.data import SAMPLE_GSM8K

        m = self.manifest
        sources = [source["path"] for source in m.sources]
        parts = ["instret", "corpus", "build"]
        if sources != [str(SAMPLE_GSM8K)]:  # built from Python without `sources=`: the files are not known
            parts += [arg for path in sources or ["TRAIN_FILE"] for arg in ("--train", path)] + ["--domain", m.domain]
        if m.guide_style != "concise":
            parts += ["--style", m.guide_style]
        if m.clustering.get("n_guides"):  # the same granularity, or the rerun would cluster anew
            parts += ["--guides", str(m.clustering["n_guides"])]
        elif m.clustering.get("cluster_size") not in (None, DEFAULT_CLUSTER_SIZE):
            parts += ["--cluster-size", str(m.clustering["cluster_size"])]
        if m.clustering.get("outliers", "nearest") != "nearest":
            parts += ["--outliers", m.clustering["outliers"]]
        if m.split and m.split.get("holdout_fraction"):
            parts += ["--holdout-fraction", str(m.split["holdout_fraction"])]
        if m.store.get("url"):
            parts += ["--chroma-url", m.store["url"]]
        return " ".join(shlex.quote(part) for part in [*parts, "--out", str(self.folder)])

    def require_guides(self) -> None:
        """Raise `CorpusError` saying how to finish a corpus whose teacher never wrote a guide."""
        if self.store.count() == 0:
            raise CorpusError(
                f"corpus {self.folder} has no guides yet; run `{self.build_command()}` to finish it once its "
                f"teacher answers (with the --teacher, --format and --field options you built it with, if any)")

    # --- clusters, for `corpus show` and `corpus map` -------------------------------------------

    def clusters(self) -> list[CorpusCluster]:
        """Every cluster of the saved clustering, largest first, each with its guide if written."""
        _, labels, ids = self.map_points()
        questions = self.questions()
        vectors = self._vectors([questions.get(qid) for qid in ids])
        guides = {g.id: g for g in self.guides()}
        groups = []
        for label in sorted(set(int(x) for x in labels)):
            members = np.flatnonzero(labels == label)
            if vectors is not None:  # most typical first, as the teacher was shown them
                centroid = vectors[members].mean(axis=0)
                members = members[np.argsort(-(vectors[members] @ centroid), kind="stable")]
            groups.append((label, [ids[i] for i in members]))
        words = telling_words([[questions[q].text for q in members if q in questions] for _, members in groups])
        clusters = [CorpusCluster(label, members, guides.get(_cluster_id(members)), top)
                    for (label, members), top in zip(groups, words)]
        return sorted(clusters, key=lambda c: (-c.size, c.label))

    def _vectors(self, questions: list[Question | None]) -> np.ndarray | None:
        """The questions' vectors from the build's embedding cache; None when any is missing."""
        from instret.corpus.embedders import EmbeddingCache, text_hash

        if not (self.folder / EMBEDDINGS).exists() or any(q is None for q in questions):
            return None
        cache = EmbeddingCache(self.folder / EMBEDDINGS)
        try:
            hashes = [text_hash(q.render()) for q in questions]
            found = cache.get_many(self.manifest.embedder_id, list(dict.fromkeys(hashes)))
        finally:
            cache.close()
        if len(found) < len(set(hashes)):
            return None
        return np.stack([found[h] for h in hashes])

    def describe(self, examples: int = 3) -> str:
        """Text for `instret corpus show`: each cluster's size, guide title (or that it has none yet)
        and its most typical questions."""
        m = self.manifest
        questions = self.questions()
        clusters = self.clusters()
        missing = sum(c.guide is None for c in clusters)
        lines = [f"{self.folder}: {m.domain}; {len(m.question_ids)} questions, {len(clusters)} clusters, "
                 f"{len(clusters) - missing} guides",
                 f"embedder {m.embedder_id} ({m.embedder_dimension}-d); teacher {m.teacher.get('model')}; "
                 f"style {m.guide_style}; outliers {m.clustering.get('outliers')} "
                 f"({m.clustering.get('outlier_fraction', 0):.1%} of questions were HDBSCAN noise)"]
        if missing:
            lines.append(f"INCOMPLETE: {missing} of {len(clusters)} clusters have no guide yet; "
                         f"`{self.build_command()}` writes them")
        lines.append("")
        for number, cluster in enumerate(clusters, 1):
            if cluster.guide is not None:
                lines.append(f"{number:3d}. [{cluster.size:4d}] {cluster.guide.guide.title}  ({cluster.guide.id})")
            else:
                lines.append(f"{number:3d}. [{cluster.size:4d}] (no guide yet)  words: {', '.join(cluster.words)}")
            for qid in cluster.question_ids[:examples]:
                text = " ".join(questions[qid].text.split()) if qid in questions else qid
                lines.append(f"       - {text[:110]}{'…' if len(text) > 110 else ''}")
        return "\n".join(lines)

    def draw_map(self, path: str | Path) -> Path:
        """Scatter the questions in 2-D: a colour and marker per cluster, a numbered tag at each
        cluster's centre, and a legend naming each cluster by its guide title or telling words."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        coords, labels, ids = self.map_points()
        if len(coords) == 0:
            raise ValueError(f"{self.folder} was built without a 2-D map (map_reducer=None)")
        clusters = self.clusters()
        row = {qid: i for i, qid in enumerate(ids)}
        figure, axes = plt.subplots(figsize=(15 if len(clusters) <= 24 else 19, 9))
        for number, cluster in enumerate(clusters, 1):
            points = coords[[row[q] for q in cluster.question_ids]]
            colour, marker = cluster_style(number - 1, general=cluster.label == GENERAL)
            axes.scatter(points[:, 0], points[:, 1], s=18, alpha=0.75, color=colour, marker=marker,
                         linewidths=0, label=f"{number}. {_short(cluster.name, 48)} ({cluster.size})")
            x, y = np.median(points, axis=0)
            axes.annotate(str(number), (x, y), fontsize=8, fontweight="bold", ha="center", va="center",
                          bbox={"boxstyle": "circle,pad=0.25", "fc": "white", "ec": colour, "lw": 1.5})
        axes.set_title(f"{self.manifest.domain}: {len(ids)} questions, {len(clusters)} clusters "
                       f"({sum(c.guide is not None for c in clusters)} with a guide)")
        axes.set_xticks([])
        axes.set_yticks([])
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, markerscale=1.6, frameon=False,
                    ncol=1 if len(clusters) <= 30 else 2, title="cluster: guide title, or telling words")
        figure.tight_layout()
        path = Path(path)
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path


# Ten clearly distinct colours (matplotlib's tab10) crossed with markers: neighbouring clusters
# differ in colour, and clusters eleven apart still differ in shape.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def cluster_style(n: int, general: bool = False) -> tuple[tuple, str]:
    """(colour, marker) of the n-th cluster; the general bucket of outliers is grey."""
    import matplotlib

    if general:
        return (0.6, 0.6, 0.6, 1.0), "."
    return matplotlib.colormaps["tab10"](n % 10), _MARKERS[(n // 10) % len(_MARKERS)]


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _cluster_id(question_ids: list[str]) -> str:
    return Cluster(label=0, question_ids=question_ids, centroid=np.zeros(1)).id


_WORD = re.compile(r"[a-z][a-z'-]*[a-z]")


def telling_words(groups: list[list[str]], n: int = 3) -> list[list[str]]:
    """The `n` words that most set each group of texts apart (class-based TF-IDF, as BERTopic).

    A word scores by the share of its group's texts that contain it, times log(1 + A / f), where
    f counts the texts containing it in all groups and A is the mean group size: common to one
    group and rare elsewhere ranks first. English stop words and numbers are left out.
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    def words(text: str) -> set[str]:
        return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in ENGLISH_STOP_WORDS}

    counts = [Counter(word for text in texts for word in words(text)) for texts in groups]
    overall = sum(counts, Counter())
    mean_size = max(1.0, sum(len(texts) for texts in groups) / max(1, len(groups)))
    tops = []
    for texts, count in zip(groups, counts):
        score = {word: k / max(1, len(texts)) * math.log(1 + mean_size / overall[word]) for word, k in count.items()
                 if k > 1 or len(texts) < 4}  # a word in one question of a large cluster tells nothing
        tops.append(sorted(score, key=lambda word: (-score[word], word))[:n])
    return tops
