"""Retrieval over a built corpus: the teacher's guides for a question, or its nearest solved questions.

    >>> retrieve = GuideRetriever(Corpus.open("corpora/gsm8k"), k=2, mode="questions")
    >>> found = retrieve("A shop sells pens at $3 each ...")
    >>> found.guides, found.scores, found.ids

Retrievers are `dspy.Module`s so they sit inside answering programs, but they hold no
predictors: `named_predictors()` and `save()` never see them. The corpus and embedder they
open are shared by copies (DSPy optimizers copy programs often) and left out of pickles.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import dspy

from instret.corpus.corpus import Corpus
from instret.data.questions import question_id
from instret.corpus.store import GUIDES, QUESTIONS

MODES = (GUIDES, QUESTIONS)
EXACT_SEARCH_LIMIT = 300_000  # records; 300k × 384 float32 is 440 MiB held in memory


class _Opened:
    """The corpus, embedder and lookups a retriever opened on first use; its copies share them.

    A plain object rather than dict attributes, so DSPy's module walkers never descend into
    thousands of cached questions.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.corpus = None
        self.embedder = None
        self.lookups: dict = {}


class _CorpusSearch(dspy.Module):
    """What both retrievers share: open the corpus and its own embedder on first use."""

    def __init__(self, corpus: Corpus | str | Path, k: int = 2, embedder=None):
        super().__init__()
        if isinstance(corpus, Corpus):  # refuse now, not once per question inside a run or an optimizer
            corpus.require_guides()
        self.corpus = corpus
        self.k = k
        self.embedder = embedder
        self._opened = _Opened()

    def _check(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, not {self.k!r}")

    def _open(self) -> _Opened:
        from instret.corpus.embedders import make_embedder

        opened = self._opened
        with opened.lock:  # evaluation threads may arrive together; open (and load weights) once
            if opened.corpus is None:
                self._check()
                corpus = self.corpus if isinstance(self.corpus, Corpus) else Corpus.open(self.corpus)
                corpus.require_guides()
                # Vectors are only comparable with the embedder the corpus was built with.
                embedder = make_embedder(self.embedder if self.embedder is not None else corpus.manifest.embedder_id)
                corpus.manifest.check_embedder(embedder.id, corpus.folder)
                opened.corpus, opened.embedder = corpus, embedder
        return opened

    def _search(self, query: str, n: int, kind: str) -> list[tuple[str, float, dict]]:
        """Exact search over the store's vectors held in memory; Chroma's own (approximate)
        query only for stores too large to hold."""
        opened = self._open()
        vector = opened.embedder.encode([query])
        index = self._lookup(f"index-{kind}", lambda corpus: corpus.store.exact_index(kind)
                             if corpus.store.count(kind) <= EXACT_SEARCH_LIMIT else None)
        if index is None:
            return opened.corpus.store.query(vector, n, kind=kind)[0]
        return index.search(vector[0], n)

    def _lookup(self, name: str, load):
        """A table read from the corpus once (guides by id, questions by id)."""
        opened = self._open()
        with opened.lock:
            if name not in opened.lookups:
                opened.lookups[name] = load(opened.corpus)
            return opened.lookups[name]

    def __deepcopy__(self, memo):
        # No parameters to copy; the opened corpus and embedder are shared, not duplicated.
        copied = self.__class__.__new__(self.__class__)
        copied.__dict__.update(self.__dict__)
        copied.history, copied.callbacks = [], list(self.callbacks)
        return copied

    def __getstate__(self):
        # Pickles carry settings only: the corpus by its folder, an embedder by its id.
        state = super().__getstate__()
        if isinstance(self.corpus, Corpus):
            state["corpus"] = str(self.corpus.folder)
        if self.embedder is not None and not isinstance(self.embedder, str):
            state["embedder"] = getattr(self.embedder, "id", None)
        state["_opened"] = None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._opened = _Opened()


class GuideRetriever(_CorpusSearch):
    """Top-k guides for a question, or none when nothing is similar enough.

    `mode="guides"` matches the question against each guide's text; `mode="questions"`
    matches it against the clusters' member questions (k × 5 neighbours), each of which votes
    for its guide with its similarity. Below `min_similarity` a guide (or a voter) is dropped.
    `embedder` defaults to the corpus's own; another one is refused.

    Returns `dspy.Prediction(guides=[Guide], scores=[float], ids=[str], similarities=[float])`:
    `scores` rank the guides (cosine similarity, or the vote total in questions mode);
    `similarities` is always the best cosine similarity behind each guide.
    """

    neighbours_per_guide = 5

    def __init__(self, corpus: Corpus | str | Path, k: int = 2, mode: str = GUIDES, min_similarity: float = 0.2,
                 embedder=None):
        super().__init__(corpus, k=k, embedder=embedder)
        self.mode = mode
        self.min_similarity = min_similarity

    def _check(self) -> None:
        super()._check()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")

    def forward(self, query: str) -> dspy.Prediction:
        if self.mode == GUIDES:
            ranked = guides_above(self._search(query, self.k, GUIDES), self.min_similarity)
        else:
            neighbours = self._search(query, self.k * self.neighbours_per_guide, QUESTIONS)
            ranked = vote_for_guides(neighbours, self.k, self.min_similarity)
        return self._prediction(ranked)

    def _prediction(self, ranked: list[tuple[str, float, float]]) -> dspy.Prediction:
        guides = self._lookup("guides", lambda corpus: {g.id: g.guide for g in corpus.guides()})
        ranked = [hit for hit in ranked if hit[0] in guides]  # a store edited since the cache was filled
        return dspy.Prediction(guides=[guides[i] for i, _, _ in ranked], scores=[s for _, s, _ in ranked],
                               ids=[i for i, _, _ in ranked], similarities=[b for _, _, b in ranked])


def guides_above(hits: Sequence[tuple[str, float, dict]], min_similarity: float) -> list[tuple[str, float, float]]:
    """(id, score, similarity) of guide hits at or above the threshold, best first."""
    return [(i, similarity, similarity) for i, similarity, _ in hits if similarity >= min_similarity]


def vote_for_guides(neighbours: Sequence[tuple[str, float, dict]], k: int,
                    min_similarity: float) -> list[tuple[str, float, float]]:
    """Let each neighbouring question vote for its guide with its similarity; top k by total.

    Summing similarities rather than counting votes lets close neighbours weigh more than distant ones.
    """
    votes: dict[str, list[float]] = {}
    for _, similarity, metadata in neighbours:
        if similarity >= min_similarity and metadata.get("guide_id"):
            votes.setdefault(metadata["guide_id"], []).append(similarity)
    ranked = sorted(votes.items(), key=lambda item: (-sum(item[1]), -max(item[1]), item[0]))
    return [(guide_id, sum(sims), max(sims)) for guide_id, sims in ranked[:k]]


class PassageRetriever(_CorpusSearch):
    """The k training questions nearest to a question, with their worked solutions.

    The passage-RAG baseline: unstructured solved examples instead of guides. The question
    itself is never returned, so a training question cannot be handed its own solution.

    Returns `dspy.Prediction(passages=[Question], scores=[float], ids=[str])`.
    """

    def forward(self, query: str) -> dspy.Prediction:
        neighbours = self._search(query, self.k + 1, QUESTIONS)
        questions = self._lookup("questions", lambda corpus: corpus.questions())
        kept = [(i, s) for i, s, _ in neighbours if i != question_id(query) and i in questions][:self.k]
        return dspy.Prediction(passages=[questions[i] for i, _ in kept], scores=[s for _, s in kept],
                               ids=[i for i, _ in kept])
