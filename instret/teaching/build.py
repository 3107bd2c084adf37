"""Build an instruction corpus: questions → embeddings → clusters → teacher guides → Chroma.

    >>> report = build_corpus(questions, "corpora/gsm8k", domain="grade-school math",
    ...                       teacher="ollama_chat/qwen2.5:14b")

Every stage leaves a checkpoint in the corpus folder, so a rerun after any crash redoes
only what is missing: embeddings in `embeddings.sqlite`, the clustering in
`clustering.npz` (reused while questions, embedder and clustering settings are unchanged),
guides in the append-only `guides.jsonl`. The Chroma store and `manifest.json` are derived
from those at the end of each run, by idempotent upserts and an atomic replace.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from instret.corpus.clustering import Cluster, CorpusBuilder, clusters_from_labels, params_fingerprint
from instret.corpus.embedders import CachedEmbedder, Embedder, EmbeddingCache, make_embedder
from instret.corpus.manifest import CHROMA, CLUSTERING, EMBEDDINGS, JOURNAL, MANIFEST, QUESTIONS_FILE, Manifest
from instret.data.files import Journal, atomic_write_text, file_sha256
from instret.data.questions import Question
from instret.corpus.store import GuideStore, StoredGuide


@dataclass
class BuildReport:
    folder: str
    n_questions: int
    n_clusters: int
    outlier_fraction: float
    n_embedded: int
    n_embeddings_from_cache: int
    clustering_reused: bool
    guides_written: int
    guides_reused: int
    failures: dict[str, str]
    leaky_guides: dict[str, list[str]]
    teacher_problem: str | None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: The teacher's guide writing over every guide of the corpus (see `guide_writing`).
    guide_writing: dict = field(default_factory=dict)
    #: What the teacher was to be asked this run (None when every guide was already written).
    teacher_plan: "TeacherPlan | None" = None

    @property
    def complete(self) -> bool:
        return self.guides_written + self.guides_reused == self.n_clusters


def build_corpus(questions: Sequence[Question], folder: str | Path, *, domain: str, teacher,
                 embedder: "Embedder | str | None" = None, builder: CorpusBuilder | None = None, writer=None,
                 style: str = "concise", examples_per_guide: int = 8, threads: int = 4,
                 store_url: str | None = None, sources: Sequence[str | Path] = (), split: dict | None = None,
                 progress: bool = True, check_teacher: bool = True, on_plan=None) -> BuildReport:
    """Run (or resume) every stage; see the module docstring. `teacher` is a model string,
    `ModelSpec` or `dspy.LM`; `store_url` puts the guides on a Chroma server instead of the folder;
    `split` (e.g. from `holdout_split`) is recorded in the manifest. `on_plan(TeacherPlan)` is
    called after clustering, before the teacher: it shows the cost, and returning False stops there."""
    from instret.lm.local.lm import on_idle_cores
    from instret.lm.models import ModelSpec, as_spec, make_lm
    from instret.programs import GuideWriter
    from instret.lm.checks import server_problem
    from instret.lm.spec import with_role_cap
    from instret.teaching.writing import (FAILED_GUIDES, TeachingReport, sample_questions, teaching_inputs,
                                          write_guides)

    if style not in ("concise", "detailed"):
        raise ValueError(f"style must be 'concise' or 'detailed', not {style!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    questions = list(questions)
    embedder = make_embedder(embedder) if embedder is not None else make_embedder()
    if (folder / MANIFEST).exists():
        Manifest.load(folder).check_embedder(embedder.id, folder)
    builder = builder if builder is not None else CorpusBuilder(embedder=embedder)
    if isinstance(teacher, (str, ModelSpec)):  # a dspy.LM is used as given
        teacher = with_role_cap(as_spec(teacher), "teacher")
    cached = CachedEmbedder(embedder, EmbeddingCache(folder / EMBEDDINGS))
    seconds: dict[str, float] = {}

    clock = time.perf_counter()
    vectors = _embed_questions(cached, questions, progress)
    seconds["embed"] = time.perf_counter() - clock

    clock = time.perf_counter()
    clusters, outlier_fraction, reused, clustering = _cluster(builder, questions, vectors, folder, embedder.id)
    seconds["cluster"] = time.perf_counter() - clock

    clock = time.perf_counter()
    questions_by_id = {q.id: q for q in questions}
    vectors_by_id = dict(zip((q.id for q in questions), vectors))
    samples = {c.id: sample_questions(c, questions_by_id, vectors_by_id, examples_per_guide) for c in clusters}
    journal = Journal(folder / JOURNAL, key="guide_id")
    failed_guides = Journal(folder / FAILED_GUIDES, key="guide_id")
    missing = [c for c in clusters if c.id not in journal.read()]
    plan = None
    if missing:
        writer = writer or GuideWriter()
        plan = TeacherPlan.estimate(writer, [teaching_inputs(samples[c.id], domain, style) for c in missing],
                                    len(clusters), teacher)
        if on_plan is not None and on_plan(plan) is False:
            missing = []  # the caller stops before the teacher (`corpus build --dry-run`)
    problem = server_problem(teacher) if missing and check_teacher else None
    teaching = TeachingReport()
    if missing and problem is None:
        teacher = _fit_context(teacher, [plan.longest_prompt])
        if isinstance(teacher, ModelSpec):  # the teacher is all that runs now: a local one may take every idle core
            teacher = on_idle_cores(teacher)
        teaching = write_guides(clusters, samples, writer=writer, teacher_lm=make_lm(teacher) if isinstance(
            teacher, ModelSpec) else teacher, journal=journal, domain=domain, style=style, threads=threads,
            progress=progress, failures=failed_guides)
        problem = teaching.stopped_because
    seconds["write_guides"] = time.perf_counter() - clock

    clock = time.perf_counter()
    finished = journal.read()
    writing = guide_writing(finished, failed_guides, clusters, teacher)
    stored = [StoredGuide(id=c.id, guide=_guide(finished[c.id]), question_ids=c.question_ids, centroid=c.centroid,
                          cluster_label=c.label) for c in clusters if c.id in finished]
    _store(GuideStore.open(store_url or folder / CHROMA, name=_store_name(folder)), stored, cached,
           questions, vectors, clusters)
    cached.cache.close()  # now, not at garbage collection: SQLite then folds its -wal file into the database
    seconds["store"] = time.perf_counter() - clock

    manifest = Manifest(
        domain=domain, embedder_id=embedder.id, embedder_dimension=int(vectors.shape[1]),
        clustering={**clustering, "n_clusters": len(clusters), "outlier_fraction": outlier_fraction,
                    "cluster_sizes": {c.id: c.size for c in clusters}},
        teacher=_public_teacher(teacher), guide_style=style,
        sources=[{"path": str(s), "sha256": file_sha256(s)} for s in sources],
        question_ids=[q.id for q in questions],
        store={"url": store_url, "name": _store_name(folder)} if store_url else {"path": CHROMA, "name": _store_name(folder)},
        n_guides=len(stored), n_clusters=len(clusters), complete=len(stored) == len(clusters), split=split,
        guide_writing=writing)
    if (folder / MANIFEST).exists():
        manifest.created_at = Manifest.load(folder).created_at
    manifest.save(folder)

    return BuildReport(
        folder=str(folder), n_questions=len(questions), n_clusters=len(clusters), outlier_fraction=outlier_fraction,
        n_embedded=cached.n_embedded, n_embeddings_from_cache=cached.n_from_cache, clustering_reused=reused,
        guides_written=len(teaching.written), guides_reused=len(stored) - len(teaching.written),
        failures=teaching.failed, leaky_guides=teaching.leaky, teacher_problem=problem, stage_seconds=seconds,
        guide_writing=writing, teacher_plan=plan)


@dataclass(frozen=True)
class TeacherPlan:
    """The teacher's work before it starts: one request per guide still to write, with the
    prompt the guide writer really sends for that cluster's sample (tokens estimated)."""

    n_clusters: int
    prompt_tokens: list[int]  # per guide to write
    max_answer_tokens: int | None  # per request, when the teacher caps it
    longest_prompt: int = 0  # tokens, counting a format-fallback retry's prompt too (for Ollama's num_ctx)

    @property
    def guides_to_write(self) -> int:
        return len(self.prompt_tokens)

    @property
    def total_prompt_tokens(self) -> int:
        return sum(self.prompt_tokens)

    @classmethod
    def estimate(cls, writer, inputs: list[dict], n_clusters: int, teacher) -> "TeacherPlan":
        from instret.lm.context import estimate_tokens, program_prompts

        cap = getattr(teacher, "max_tokens", None) or getattr(teacher, "kwargs", {}).get("max_tokens")
        # One input at a time: the first request is the one sent; an adapter fallback records a second.
        import dspy

        # Only a DSPy program can be dry-run: a plain function might reach its own LM (0 = unknown).
        measurable = isinstance(writer, dspy.Module)
        prompts = [[estimate_tokens(prompt) for prompt in program_prompts(writer, [one])] if measurable else []
                   for one in inputs]
        return cls(n_clusters, [each[0] if each else 0 for each in prompts], cap,
                   max((max(each) for each in prompts if each), default=0))

    def describe(self) -> str:
        if self.guides_to_write and not self.total_prompt_tokens:
            return (f"teacher: {self.guides_to_write} of {self.n_clusters} guides to write (prompt size unknown: "
                    "the guide writer is not a DSPy program instret can measure)")
        mean = self.total_prompt_tokens / max(1, self.guides_to_write)
        text = (f"teacher: {self.guides_to_write} of {self.n_clusters} guides to write × about {mean:,.0f} prompt "
                f"tokens = about {self.total_prompt_tokens:,} prompt tokens")
        if self.max_answer_tokens:
            text += f", plus up to {self.guides_to_write * self.max_answer_tokens:,} answer tokens"
        return text + " (estimated from each cluster's sample questions)"


def guide_writing(finished: dict[str, dict], failed: Journal, clusters: list[Cluster], teacher) -> dict:
    """How the teacher's guides came out, over every guide of the corpus: recovery paths (guides
    still missing count under the path they last failed with), teacher tokens, guides whose
    replies came from DSPy's cache, and where unparsed replies are kept."""
    from collections import Counter

    ids = {c.id for c in clusters}
    done = [record for guide_id, record in finished.items() if guide_id in ids]
    missing = [record for guide_id, record in failed.read().items() if guide_id in ids and guide_id not in finished]
    recovery = Counter(record.get("recovery", "unrecorded") for record in done + missing)
    return {"teacher": _public_teacher(teacher).get("model"), "guides": len(done), "failed": len(missing),
            "recovery": dict(sorted(recovery.items())),
            "prompt_tokens": sum(r.get("prompt_tokens", 0) for r in done + missing),
            "completion_tokens": sum(r.get("completion_tokens", 0) for r in done + missing),
            "cached_guides": sum(bool(r.get("cached_calls")) for r in done),
            "failed_guides_file": failed.path.name if missing else None}


def _embed_questions(cached: CachedEmbedder, questions: Sequence[Question], progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    with tqdm(total=len(questions), desc="embedding questions", unit="q", disable=not progress) as bar:
        vectors = cached.encode([q.render() for q in questions], progress=bar)
        bar.update(len(questions) - bar.n)
    return vectors


def _cluster(builder: CorpusBuilder, questions, vectors, folder: Path, embedder_id: str):
    """Fit the builder, or reuse the saved clustering when its inputs have not changed."""
    fingerprint = params_fingerprint({"questions": [q.id for q in questions], "embedder": embedder_id,
                                      "builder": builder.describe()})
    path = folder / CLUSTERING
    if path.exists():
        saved = np.load(path, allow_pickle=False)
        if str(saved["fingerprint"]) == fingerprint:
            return (clusters_from_labels(questions, saved["labels"], vectors), float(saved["outlier_fraction"]),
                    True, json.loads(str(saved["description"])))
    builder.fit(questions, embeddings=vectors)
    buffer = io.BytesIO()
    coords = builder.coords_2d_ if builder.coords_2d_ is not None else np.zeros((0, 2), dtype=np.float32)
    np.savez(buffer, fingerprint=np.array(fingerprint), labels=builder.labels_, raw_labels=builder.raw_labels_,
             coords=coords, outlier_fraction=np.array(builder.outlier_fraction_),
             question_ids=np.array([q.id for q in questions]), description=np.array(json.dumps(builder.describe())))
    atomic_write_text(folder / QUESTIONS_FILE, "".join(json.dumps(q.to_dict(), ensure_ascii=False) + "\n"
                                                       for q in questions))
    _atomic_write_bytes(path, buffer.getvalue())
    return builder.clusters_, builder.outlier_fraction_, False, builder.describe()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
    temporary.replace(path)


def _store(store: GuideStore, stored: list[StoredGuide], cached: CachedEmbedder, questions, vectors,
           clusters: list[Cluster]) -> None:
    guide_of = {qid: guide_id for c in clusters for guide_id in [c.id] for qid in c.question_ids}
    have_guide = {g.id for g in stored}
    keep = [i for i, q in enumerate(questions) if guide_of[q.id] in have_guide]
    if stored:
        store.upsert_guides(stored, cached.encode([g.text for g in stored]))
    # A question's id comes from its text and its vector from the cache, so a record that already
    # points at the right guide is identical: rewriting it would only cost time on every rerun.
    already = store.question_guides()
    changed = [i for i in keep if already.get(questions[i].id) != guide_of[questions[i].id]]
    if changed:
        store.upsert_questions([questions[i].id for i in changed], [questions[i].render() for i in changed],
                               vectors[changed], [guide_of[questions[i].id] for i in changed])
    store.delete_except(have_guide, {questions[i].id for i in keep})


def _guide(record: dict):
    from instret.corpus.guides import Guide

    return Guide.model_validate(record["guide"])


def _store_name(folder: Path) -> str:
    """Collection prefix: the folder name, kept to the characters Chroma accepts."""
    name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in folder.resolve().name).strip("-_")
    return (name or "instret")[:40].ljust(3, "x")


def _public_teacher(teacher) -> dict:
    from instret.lm.spec import ModelSpec, as_spec

    if isinstance(teacher, (str, ModelSpec)):
        return as_spec(teacher).public_dict()
    return {"model": getattr(teacher, "model", type(teacher).__name__)}


def _fit_context(teacher, prompt_tokens: list[int]):
    """An Ollama teacher gets a `num_ctx` that holds its longest guide prompt: Ollama would
    silently cut the example questions off at its small default window."""
    from instret.lm.spec import ModelSpec

    if not (isinstance(teacher, ModelSpec) and teacher.backend == "ollama" and teacher.num_ctx is None):
        return teacher
    from instret.lm.context import fit_num_ctx

    return fit_num_ctx(teacher, prompt_tokens, teacher.max_tokens or 2000)
