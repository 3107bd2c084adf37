"""The teacher stage: one guide per cluster, in parallel, each saved the moment it is done."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from instret.corpus.clustering import GENERAL, Cluster
from instret.corpus.guides import Guide, find_leaks
from instret.data.files import Journal
from instret.data.questions import MAX_SOLUTION_CHARS, Question



@dataclass
class TeachingReport:
    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    leaky: dict[str, list[str]] = field(default_factory=dict)
    stopped_because: str | None = None


def sample_questions(cluster: Cluster, questions_by_id: dict[str, Question], vectors_by_id: dict[str, np.ndarray],
                     n: int) -> list[Question]:
    """The cluster's `n` most typical questions: those closest to its centroid."""
    members = cluster.question_ids
    similarity = np.stack([vectors_by_id[i] for i in members]) @ cluster.centroid
    order = np.argsort(-similarity, kind="stable")[:n]
    return [questions_by_id[members[i]] for i in order]


def render_example(question: Question) -> str:
    text = question.render()
    if question.solution:
        solution = question.solution[:MAX_SOLUTION_CHARS]
        text += f"\nWorked solution: {solution}"
    return text


def teaching_inputs(sample: Sequence[Question], domain: str, style: str) -> dict:
    """The guide writer's inputs for one cluster's sample."""
    return {"domain": domain, "example_questions": [render_example(q) for q in sample], "style": style}


def is_connection_failure(error: BaseException) -> bool:
    """A failure that will repeat for every guide (server down, refused): stop asking."""
    fatal = {"LMTransportError", "LMAuthError", "LMUnsupportedModelError", "APIConnectionError",
             "ConnectionError", "AuthenticationError", "NotFoundError"}
    while error is not None:  # DSPy wraps engine errors; the cause says what happened
        if fatal & {cls.__name__ for cls in type(error).__mro__}:
            return True
        error = error.__cause__ or error.__context__
    return False


def write_guides(clusters: Sequence[Cluster], samples: dict[str, list[Question]], *, writer, teacher_lm,
                 journal: Journal, domain: str, style: str, threads: int = 4,
                 progress: bool = True) -> TeachingReport:
    """Ask the teacher for each cluster's guide not yet in the journal.

    A guide is appended to the journal as soon as it parses, so an interrupted run resumes
    with exactly the missing ones. A failure on one cluster is recorded and the others go
    on; a connection failure stops new requests, since every one of them would fail too.
    """
    import dspy
    from tqdm.auto import tqdm

    report = TeachingReport()
    done = journal.read()
    todo = [c for c in clusters if c.id not in done]
    report.reused = [c.id for c in clusters if c.id in done]
    stop = threading.Event()

    def teach(cluster: Cluster):
        if stop.is_set():
            return cluster, None, "skipped: teacher unreachable"
        sample = samples[cluster.id]
        cluster_domain = domain if cluster.label != GENERAL else f"{domain} (miscellaneous questions)"
        try:
            with dspy.context(lm=teacher_lm):
                guide = writer(**teaching_inputs(sample, cluster_domain, style)).guide
            if not isinstance(guide, Guide):
                guide = Guide.model_validate(guide)
        except Exception as error:  # one cluster's failure must not stop the others
            if is_connection_failure(error):
                stop.set()
                report.stopped_because = f"{type(error).__name__}: {error}"
            return cluster, None, f"{type(error).__name__}: {str(error)[:300]}"
        leaks = find_leaks(guide, sample)
        journal.append({"guide_id": cluster.id, "cluster_label": cluster.label, "guide": guide.model_dump(),
                        "question_ids": cluster.question_ids, "sample_ids": [q.id for q in sample],
                        "leaks": leaks})
        return cluster, guide, leaks

    pool = ThreadPoolExecutor(max_workers=max(1, threads))
    try:
        with tqdm(total=len(todo), desc="writing guides", unit="guide", disable=not progress) as bar:
            for future in as_completed([pool.submit(teach, c) for c in todo]):
                cluster, guide, outcome = future.result()
                bar.update(1)
                if guide is None:
                    report.failed[cluster.id] = outcome
                else:
                    report.written.append(cluster.id)
                    if outcome:
                        report.leaky[cluster.id] = outcome
    except BaseException:
        # Ctrl-C: ask for nothing new; guides already in flight still land in the journal.
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return report
