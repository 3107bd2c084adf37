"""An instruction corpus on disk: open it, list its guides, draw its map."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instret.corpus.manifest import CHROMA, CLUSTERING, QUESTIONS_FILE
from instret.corpus.manifest import Manifest
from instret.data.questions import Question
from instret.corpus.store import GuideStore, StoredGuide


@dataclass
class Corpus:
    """A built corpus: its manifest, guide store and the questions it was built from.

    >>> corpus = Corpus.open("corpora/gsm8k")
    >>> [g.guide.title for g in corpus.guides()]
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

    def describe(self, examples: int = 3) -> str:
        """Text for `instret corpus show`: each cluster's size, guide title and member questions."""
        m = self.manifest
        questions = self.questions()
        lines = [f"{self.folder}: {m.domain}; {len(m.question_ids)} questions, {m.n_clusters} clusters, "
                 f"{m.n_guides} guides{'' if m.complete else ' (INCOMPLETE: rerun the build to finish)'}",
                 f"embedder {m.embedder_id} ({m.embedder_dimension}-d); teacher {m.teacher.get('model')}; "
                 f"style {m.guide_style}; outliers {m.clustering.get('outliers')} "
                 f"({m.clustering.get('outlier_fraction', 0):.1%} of questions were HDBSCAN noise)", ""]
        for guide in self.guides():
            lines.append(f"[{len(guide.question_ids):4d}] {guide.guide.title}  ({guide.id})")
            for qid in guide.question_ids[:examples]:
                text = " ".join(questions[qid].text.split()) if qid in questions else qid
                lines.append(f"       - {text[:110]}{'…' if len(text) > 110 else ''}")
        return "\n".join(lines)

    def draw_map(self, path: str | Path) -> Path:
        """Scatter the questions in 2-D, coloured by cluster, with guide titles as labels."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        coords, labels, ids = self.map_points()
        if len(coords) == 0:
            raise ValueError(f"{self.folder} was built without a 2-D map (map_reducer=None)")
        title_of = {qid: g.guide.title for g in self.guides() for qid in g.question_ids}
        figure, axes = plt.subplots(figsize=(12, 9))
        unique = sorted(set(labels.tolist()))
        palette = plt.get_cmap("tab20")
        for n, label in enumerate(unique):
            mask = labels == label
            axes.scatter(coords[mask, 0], coords[mask, 1], s=6, alpha=0.6,
                         color="lightgrey" if label < 0 else palette(n % 20))
            title = next((title_of[ids[i]] for i in np.flatnonzero(mask) if ids[i] in title_of), None)
            if title:
                x, y = np.median(coords[mask], axis=0)
                axes.annotate(title[:40], (x, y), fontsize=7, ha="center",
                              bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0})
        axes.set_title(f"{self.manifest.domain}: {len(ids)} questions, {len(unique)} clusters")
        axes.set_xticks([])
        axes.set_yticks([])
        figure.tight_layout()
        path = Path(path)
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path
