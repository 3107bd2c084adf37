"""The teacher stage: one guide per cluster, in parallel, each saved the moment it is done.

A reply that does not parse as a guide goes through `instret.lm.recovery` (a fresh sample, then
the JSON adapter); a guide that still fails is recorded, with every raw reply, in
`failed_guides.jsonl` in the corpus folder, and asked for again on the next run. Each guide's
record says how it was recovered and what it cost the teacher (tokens, cached or not).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from instret.corpus.clustering import GENERAL, Cluster
from instret.corpus.guides import Guide, find_leaks
from instret.data.files import Journal
from instret.data.threads import in_threads
from instret.data.questions import MAX_SOLUTION_CHARS, Question

FAILED_GUIDES = "failed_guides.jsonl"  # in the corpus folder: guides that did not parse, raw replies kept


@dataclass
class TeachingReport:
    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    leaky: dict[str, list[str]] = field(default_factory=dict)
    stopped_because: str | None = None
    #: How each guide asked for in this run came out (`instret.lm.recovery.RECOVERY_PATHS`).
    recovery: Counter = field(default_factory=Counter)
    #: The teacher's tokens for the guides asked for in this run (cached calls at their produced cost).
    tokens: Counter = field(default_factory=Counter)


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


def one_line(error: BaseException) -> str:
    """An error as one whole line: its type and message, whitespace collapsed, never cut."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


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
                 progress: bool = True, failures: Journal | None = None) -> TeachingReport:
    """Ask the teacher for each cluster's guide not yet in the journal.

    A guide is appended to the journal as soon as it parses, so an interrupted run resumes
    with exactly the missing ones. A failure on one cluster is recorded (a guide that did not
    parse also in `failures`, with its raw replies) and the others go on; a connection failure
    stops new requests, since every one of them would fail too.
    """
    import dspy

    from instret.lm.calls import CallLog
    from instret.lm.recovery import run_with_recovery

    report = TeachingReport()
    done = journal.read()
    todo = [c for c in clusters if c.id not in done]
    report.reused = [c.id for c in clusters if c.id in done]
    stop = threading.Event()
    lock = threading.Lock()

    def teach(cluster: Cluster):
        if stop.is_set():
            return cluster, None, "skipped: teacher unreachable"
        sample = samples[cluster.id]
        cluster_domain = domain if cluster.label != GENERAL else f"{domain} (miscellaneous questions)"
        inputs = teaching_inputs(sample, cluster_domain, style)
        log = CallLog(teacher=teacher_lm)
        try:
            with dspy.context(lm=teacher_lm):
                attempt = run_with_recovery(lambda: writer(**inputs), log=log, result=_as_guide)
        except Exception as error:  # one cluster's failure must not stop the others
            if is_connection_failure(error):
                stop.set()
                report.stopped_because = one_line(error)
            return cluster, None, one_line(error)
        cost = {**attempt.tokens("teacher"), "lm_calls": attempt.lm_calls, "cached_calls": attempt.cached_calls,
                "truncated": attempt.truncated}
        with lock:
            report.recovery[attempt.path] += 1
            report.tokens.update(attempt.tokens("teacher"))
        if attempt.answer is None:
            return cluster, None, _record_failure(cluster, attempt, cost, failures)
        guide = attempt.answer
        leaks = find_leaks(guide, sample)
        journal.append({"guide_id": cluster.id, "cluster_label": cluster.label, "guide": guide.model_dump(),
                        "question_ids": cluster.question_ids, "sample_ids": [q.id for q in sample],
                        "leaks": leaks, "recovery": attempt.path, **cost})
        return cluster, guide, leaks

    try:
        for cluster, guide, outcome in in_threads(teach, todo, threads=threads, desc="writing guides", unit="guide",
                                                  progress=progress):
            if guide is None:
                report.failed[cluster.id] = outcome
            else:
                report.written.append(cluster.id)
                if outcome:
                    report.leaky[cluster.id] = outcome
    finally:
        stop.set()  # Ctrl-C: guides already in flight still land in the journal; nothing new starts
    return report


def _as_guide(prediction) -> Guide:
    guide = prediction.guide
    return guide if isinstance(guide, Guide) else Guide.model_validate(guide)


def _record_failure(cluster: Cluster, attempt, cost: dict, failures: Journal | None) -> str:
    """Keep every raw reply of a guide that did not parse; the reason, whole, on one line."""
    last = attempt.replies[-1].error if attempt.replies else "no reply"
    tries = len(attempt.replies)
    reason = f"{attempt.path} after {tries} {'try' if tries == 1 else 'tries'}: {last}"
    if attempt.path == "truncated":
        reason += " (a reply reached max_tokens: raise the teacher's max_tokens)"
    if failures is not None:
        failures.append({"guide_id": cluster.id, "cluster_label": cluster.label, "recovery": attempt.path,
                         "reason": reason, "replies": [vars(reply) for reply in attempt.replies], **cost,
                         "time": time.time()})
        reason += f"; raw replies in {failures.path}"
    return reason
