"""Run methods × students over a test set, resumably, recording every answer.

    >>> report = evaluate(questions, methods={"cot": cot, "instruction_retrieval": ir},
    ...                   students={"qwen2.5:3b": make_lm("ollama_chat/qwen2.5:3b")},
    ...                   kind="numeric", out_dir="runs/gsm8k", corpus=corpus)

Each finished item is appended to `results.jsonl` at once, so an interrupted run resumes
without asking any student a question it already answered. An item whose LM call failed
(after DSPy's own bounded retries with backoff) is recorded in `failures.jsonl` with the
kind of failure, counted in the summary, and asked again by the next run.

Cost, per row: the student's tokens (`prompt_tokens`, `completion_tokens`) and, for methods with
a teacher (`teacher=` the LM their teacher predictors were given), the teacher's
(`teacher_prompt_tokens`, `teacher_completion_tokens`); see `instret.lm.calls.CallLog` for how
calls are told apart. Of each role's prompt tokens, `prompt_cached_tokens` and
`teacher_prompt_cached_tokens` are those the server read from its prompt cache: None where the
server did not report it (Ollama), never a guessed 0. A row whose every call DSPy's cache served is
marked `cached` and counts what the answer cost when it was produced; its latency is the cache's,
so the summary leaves it out. A row only some of whose calls it served (a cascade's first_error
stage repeating the cot stage's call) keeps its latency, its real wall time, and counts them in
`cached_calls`.
"""

from __future__ import annotations

import numbers
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from instret.data.files import Journal
from instret.data.threads import in_threads
from instret.corpus.manifest import CorpusError
from instret.data.questions import Question

RESULTS, FAILURES = "results.jsonl", "failures.jsonl"

# What the summary calls a failure, most telling first, from the class names and HTTP statuses
# anywhere in the error's chain: litellm reports a refused or cut connection to an
# OpenAI-compatible server as a 500 (InternalServerError caused by openai.APIConnectionError),
# a truncated body as a connection error caused by a JSONDecodeError, and a 401 from an
# OpenAI-compatible server as a bad request.
FAILURE_KINDS = (("context_window", {"ContextWindowExceededError"}, ()), ("model_missing", {"LMUnsupportedModelError"}, ()),
                 ("auth", {"LMAuthError", "AuthenticationError", "PermissionDeniedError"}, (401, 403)),
                 ("timeout", {"LMTimeoutError", "TimeoutError", "TimeoutException", "APITimeoutError", "Timeout"}, ()),
                 ("bad_response", {"JSONDecodeError"}, ()),
                 ("connection", {"LMTransportError", "ConnectionError", "APIConnectionError", "TransportError"}, ()),
                 ("rate_limit", {"LMRateLimitError"}, (429,)), ("server_error", {"LMServerError"}, ()),
                 ("lm_error", {"LMError"}, ()))


class LeakageError(CorpusError):
    pass


@dataclass
class EvalReport:
    out_dir: Path
    answered_now: int = 0
    answered_before: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    summary: list[dict] = field(default_factory=list)


def failure_kind(error: BaseException) -> str:
    names: set[str] = set()
    statuses: set = set()
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        names.update(cls.__name__ for cls in type(error).__mro__)
        statuses.update(getattr(error, name, None) for name in ("status", "status_code"))
        error = error.__cause__ or error.__context__
    return next((kind for kind, classes, codes in FAILURE_KINDS if names & classes or statuses & set(codes)), "error")


def check_no_leakage(questions: Sequence[Question], corpus) -> None:
    """Refuse test questions the corpus was built from, matched on normalized text (ids)."""
    if corpus is None:
        return
    corpus_ids = set(corpus.manifest.question_ids)
    leaked = [q for q in questions if q.id in corpus_ids]
    if leaked:
        examples = "; ".join(f"{q.source}:{q.line}" for q in leaked[:3])
        hint = (" This corpus holds out part of its file for evaluation: use --holdout."
                if corpus.manifest.split else "")
        raise LeakageError(f"{len(leaked)} of {len(questions)} test questions are in corpus {corpus.folder} "
                           f"(same normalized text), e.g. {examples}. Evaluate on questions the corpus was "
                           f"not built from.{hint}")


def held_out_questions(questions: Sequence[Question], corpus) -> list[Question]:
    """The questions a corpus recorded as held out when it was built (MMLU law)."""
    split = corpus.manifest.split or {}
    if not split.get("held_out_question_ids"):
        raise CorpusError(f"corpus {corpus.folder} records no held-out split (build it with --holdout-fraction)")
    held = set(split["held_out_question_ids"])
    return [q for q in questions if q.id in held]


def evaluate(questions: Sequence[Question], *, methods: dict, students: dict, kind: str, out_dir: str | Path,
             threads: int = 16, corpus=None, progress: bool = True, teacher=None, setup=None, price=None,
             cost_axis: str = "price") -> EvalReport:
    """Answer every (method, student, question) not yet in `out_dir`, then summarize all of them.

    `teacher`: the `dspy.LM` that two-model methods were built with (`make_program(...,
    teacher=lm)`); its calls are counted as the teacher's, apart from the student's. `setup`: method
    -> `instret.evaluation.setup_cost.SetupCost`, teacher tokens spent before answering (default:
    the corpus's guides, for instruction retrieval), amortised over the questions answered.
    `price`: an `instret.evaluation.cost.Price` for the teacher's tokens (default: `default_price`
    of `teacher`); `cost_axis`: "price" or "written", the cost chart's axis.
    """
    import dspy

    from instret.evaluation.report import summarize, write_outputs
    from instret.lm.calls import CallLog
    from instret.lm.recovery import answer_with_recovery
    from instret.data.scoring import score_answer
    from instret.evaluation.frontier import COST_AXES

    if cost_axis not in COST_AXES:  # before the run, not after it
        raise ValueError(f"cost axis {cost_axis!r}: choose from {', '.join(COST_AXES)}")
    check_no_leakage(questions, corpus)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, failures = Journal(out_dir / RESULTS, key="key"), Journal(out_dir / FAILURES, key="key")
    done = results.read()
    tasks = [(m, s, q) for m in methods for s in students for q in questions if _key(m, s, q) not in done]
    report = EvalReport(out_dir, answered_before=sum(1 for m in methods for s in students for q in questions
                                                     if _key(m, s, q) in done))
    lock = threading.Lock()

    def answer(method: str, student: str, question: Question) -> None:
        base = {"key": _key(method, student, question), "method": method, "student": student,
                "question_id": question.id, "source": question.source, "line": question.line,
                "inputs": {"question": question.text, "options": question.options}, "gold": question.answer}
        started = time.perf_counter()
        try:
            with dspy.context(lm=students[student]):
                attempt = answer_with_recovery(methods[method], kind, question.text, question.options,
                                               log=CallLog(teacher=teacher, student=students[student]))
        except Exception as error:  # one failing item never stops the run
            kind_of_failure = failure_kind(error)
            failures.append({**base, "failure_kind": kind_of_failure, "error": f"{type(error).__name__}: {error}"[:500],
                             "time": time.time()})
            with lock:
                report.failures[kind_of_failure] = report.failures.get(kind_of_failure, 0) + 1
            return
        scored = score_answer(kind, attempt.answer, question.answer)
        student_tokens, teacher_tokens = attempt.tokens("student"), attempt.tokens("teacher")
        # A reply cut by max_tokens is counted as truncated, not as a parse failure.
        parse_failed = attempt.path == "failed" or (scored.parse_failed and attempt.path != "truncated")
        results.append({**base, "answer": attempt.answer, "parsed": scored.parsed, "correct": scored.correct,
                        "parse_failed": parse_failed, "recovery": attempt.path, "lm_calls": attempt.lm_calls,
                        "cached": 0 < attempt.cached_calls == attempt.lm_calls, "cached_calls": attempt.cached_calls,
                        "truncated": attempt.truncated, "outputs": _outputs(attempt), **student_tokens,
                        "teacher_prompt_tokens": teacher_tokens["prompt_tokens"],
                        "teacher_completion_tokens": teacher_tokens["completion_tokens"],
                        "prompt_cached_tokens": attempt.prompt_cached_tokens("student"),
                        "teacher_prompt_cached_tokens": attempt.prompt_cached_tokens("teacher"),
                        "latency_s": round(time.perf_counter() - started, 4)})
        with lock:
            report.answered_now += 1

    for _ in in_threads(lambda task: answer(*task), tasks, threads=threads, desc="evaluating", unit="answer",
                        progress=progress):
        pass

    failures.close()
    records = [r for r in results.read().values() if r["method"] in methods and r["student"] in students
               and r["question_id"] in {q.id for q in questions}]
    results.close()
    if setup is None:
        from instret.evaluation.setup_cost import setup_costs

        setup = setup_costs(methods, corpus)
    if price is None:
        from instret.evaluation.cost import default_price

        price = default_price(teacher)
    report.summary = summarize(records, failures=report.failures, setup=setup, price=price)
    write_outputs(report.summary, out_dir, cost_axis)
    return report


def _key(method: str, student: str, question: Question) -> str:
    return f"{method}|{student}|{question.id}"


def _jsonable(value):
    """A field as JSON: lists stay lists (retrieved ids and scores are read back as such); numbers
    of any numeric type become plain ones; anything else, its text."""
    if isinstance(value, (str, bool, type(None))):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return str(value)


def _outputs(attempt) -> dict:
    """The parsed fields, or the raw reply; plus every earlier reply that did not parse."""
    outputs = {"raw": attempt.raw} if attempt.prediction is None else {
        name: _jsonable(value) for name, value in attempt.prediction.items()}
    if attempt.replies:
        outputs["unparsed_replies"] = [{"step": r.step, "raw": r.raw, "error": r.error, "truncated": r.truncated}
                                       for r in attempt.replies]
    return outputs
