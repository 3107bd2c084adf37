"""SG data: guidance a teacher wrote that passes the validator and leads a solver to the gold answer.

    >>> report = generate_sg_data(questions, teacher=make_lm("local/qwen2.5-coder-1.5b"),
    ...                           solver=make_lm("local/qwen2.5-coder-0.5b"), kind="numeric", out_dir="sg/gsm8k")
    >>> report.accepted_questions, report.rejected   # e.g. 212, {"computes": 51, "wrong_answer": 80, ...}

For each training question the teacher writes guidance (a fresh sample at `temperature` > 0:
each request carries a random `rollout_id`, so neither DSPy's cache nor a rerun hands back an
earlier sample); `check_guidance` rejects it, saying why, or the solver answers with it and
the guidance is kept when the answer is right. Up to `samples` tries per question, stopping at
the first `keep` accepted. The teacher that writes the data is the one asked; the solver is
never shown invalid guidance (it would cost tokens for a sample that is dropped anyway).

Files in `out_dir`:
- `samples.jsonl`: every finished sample (guidance, verdict, reason, solver answer, tokens),
  fsynced as it arrives: a `kill -9` loses at most the sample in flight, and a rerun asks only
  what is missing;
- `train.jsonl`: the accepted samples in DSPy's chat fine-tuning format, one `{"messages":
  [system, user, assistant]}` per line, rendered by DSPy's ChatAdapter from the guide
  predictor's signature: exactly the prompt the fine-tuned guide model will be sent;
- `report.json`: counts (accepted, rejected by reason, failed calls), tokens, settings.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

from instret.data.files import Journal, atomic_write_text, now
from instret.data.threads import in_threads
from instret.data.guidance import DEFAULT_MAX_WORDS, REASONS, GuidanceCheck, check_guidance, readable_solution
from instret.data.questions import Question

SAMPLES, TRAIN, REPORT = "samples.jsonl", "train.jsonl", "report.json"
#: Why a sample was not kept: the validator's reasons, then the solver's verdict.
REJECTIONS = (*REASONS, "wrong_answer")


class GuidanceValidator(Protocol):
    """Judges one guidance sample (`check_guidance` is the default); a failed check's `reason`
    is counted in the report."""

    def __call__(self, guidance: str, question: str, gold, *, kind: str, options: dict | None,
                 max_words: int) -> "GuidanceCheck": ...


@dataclass
class SGDataReport:
    out_dir: str
    questions: int = 0
    accepted_questions: int = 0
    accepted_samples: int = 0
    samples: int = 0
    asked_now: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)  # model calls that failed this run; asked again next run
    teacher_tokens: dict[str, int] = field(default_factory=dict)
    solver_tokens: dict[str, int] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    finished: str = ""

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_questions / self.questions if self.questions else 0.0

    def summary(self) -> str:
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.rejected.items() if count) or "none"
        failed = f"; {sum(self.failed.values())} model calls failed (rerun to ask them again)" if self.failed else ""
        return (f"{self.accepted_questions} of {self.questions} questions have accepted guidance "
                f"({self.acceptance_rate:.1%}); {self.accepted_samples} of {self.samples} samples kept; "
                f"rejected: {reasons}{failed}. Teacher tokens: {self.teacher_tokens.get('prompt_tokens', 0)} prompt + "
                f"{self.teacher_tokens.get('completion_tokens', 0)} completion.")


def generate_sg_data(questions: Sequence[Question], *, teacher, solver, kind: str, out_dir: str | Path,
                     samples: int = 4, keep: int = 1, temperature: float = 0.7, max_words: int = DEFAULT_MAX_WORDS,
                     threads: int = 4, progress: bool = True, from_solution: bool = False,
                     validator: GuidanceValidator = check_guidance) -> SGDataReport:
    """Write SG data for `questions` (with gold answers) into `out_dir`, resuming what is there.
    `from_solution`: the teacher also reads each question's worked solution (where the data has
    one) and turns it into guidance; the training rows still prompt with the question alone."""

    from instret.programs.solution_guidance import SolutionGuidanceQA

    if temperature <= 0:
        raise ValueError(f"temperature must be above 0 (got {temperature}): several samples of one question must differ")
    questions = [q for q in questions if q.answer not in (None, "")]
    if not questions:
        raise ValueError("no training question has a gold answer: SG data keeps guidance that leads to it")
    if from_solution and not any(q.solution for q in questions):
        raise ValueError("from_solution: no training question has a worked solution (e.g. GSM8K's answer text)")
    out = Path(out_dir)
    journal = Journal(out / SAMPLES, key="key")
    done = _by_question(journal.read().values())
    settings = {"kind": kind, "samples": samples, "keep": keep, "temperature": temperature, "max_words": max_words,
                "from_solution": from_solution,
                "teacher": getattr(teacher, "model", str(teacher)), "solver": getattr(solver, "model", str(solver))}
    report = SGDataReport(str(out), questions=len(questions), settings=settings)
    failed: Counter = Counter()
    lock = threading.Lock()
    # The solver comes from dspy.context, not pinned: a reply it breaks is then retried with a fresh sample.
    program = SolutionGuidanceQA(kind, guide=teacher)

    def work(question: Question) -> None:
        records = done.get(question.id, [])
        while _accepted(records) < keep and len(records) < samples:
            try:
                record = sample(program, solver, question, len(records) + 1, kind, temperature, max_words,
                                validator, from_solution=from_solution)
            except Exception as error:  # a failing call never stops the run; the next run asks again
                with lock:
                    failed[type(error).__name__] += 1
                return
            journal.append(record)
            records = records + [record]
            with lock:
                report.asked_now += 1

    for _ in in_threads(work, questions, threads=threads, desc="SG data", unit="question", progress=progress):
        pass
    journal.close()
    return _write_outputs(out, questions, _by_question(journal.read().values()), report, dict(failed))


def sample(program, solver, question: Question, number: int, kind: str, temperature: float, max_words: int,
           validator: GuidanceValidator = check_guidance, from_solution: bool = False) -> dict:
    """One guidance sample for `question`, judged: the validator first, then the solver."""
    import dspy

    from instret.data.scoring import score_answer
    from instret.lm.recovery import answer_with_recovery
    from instret.programs.answering import answer_inputs

    inputs = answer_inputs(kind, question.text, question.options)
    reference = readable_solution(question.solution) if from_solution else None
    guidance, teacher_tokens, written = program.write_guidance(
        inputs, worked_solution=reference, temperature=temperature, rollout_id=secrets.randbits(48))
    guidance = guidance or written  # no plan before the computing began: judge (and reject) what was written
    check = validator(guidance, question.text, question.answer, kind=kind, options=question.options,
                      max_words=max_words)
    record = {"key": f"{question.id}#{number}", "question_id": question.id, "sample": number,
              "guidance": guidance, "written": written if written != guidance else None, "valid": check.ok,
              "problems": list(check.details), "answer": None, "correct": None, "teacher_tokens": teacher_tokens,
              "solver_tokens": {}, "from_solution": bool(reference), "time": now()}
    if not check.ok:
        return {**record, "accepted": False, "reason": check.reason}
    with dspy.context(lm=solver):
        solved = answer_with_recovery(_Solver(program, guidance), kind, question.text, question.options)
    scored = score_answer(kind, solved.answer, question.answer)
    record.update(answer=solved.answer, correct=scored.correct, recovery=solved.path,
                  solver_tokens=solved.usage if isinstance(solved.usage, dict) else {})
    return {**record, "accepted": scored.correct, "reason": None if scored.correct else "wrong_answer"}


class _Solver:
    """The program's solver as a `program(question=, options=)` callable, with the guidance fixed,
    so `answer_with_recovery` can recover its answer as it does any student's."""

    def __init__(self, program, guidance: str):
        self.program, self.guidance = program, guidance

    def __call__(self, question: str, options=None, **config):
        from instret.programs.answering import answer_inputs

        return self.program.solve(**answer_inputs(self.program.kind, question, options), guidance=self.guidance,
                                  **config)


def training_messages(kind: str, question: Question, guidance: str, adapter=None) -> dict:
    """One accepted sample in DSPy's chat fine-tuning format: the guide predictor's prompt as DSPy
    renders it (system, user) and the guidance as the assistant's reply."""
    from dspy.adapters.chat_adapter import ChatAdapter

    from instret.programs.answering import answer_inputs
    from instret.signatures.solution_guidance import guidance_signature

    return (adapter or ChatAdapter()).format_finetune_data(
        signature=guidance_signature(kind), demos=[], inputs=answer_inputs(kind, question.text, question.options),
        outputs={"guidance": guidance})


def _by_question(records) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for record in sorted(records, key=lambda r: (r["question_id"], r["sample"])):
        grouped.setdefault(record["question_id"], []).append(record)
    return grouped


def _accepted(records: list[dict]) -> int:
    return sum(1 for r in records if r["accepted"])


def _write_outputs(out: Path, questions, records: dict[str, list[dict]], report: SGDataReport,
                   failed: dict[str, int]) -> SGDataReport:
    rejected: Counter = Counter()
    teacher, solver = Counter(), Counter()
    lines = []
    for question in questions:
        for record in records.get(question.id, []):
            report.samples += 1
            teacher.update(record.get("teacher_tokens") or {})
            solver.update(record.get("solver_tokens") or {})
            if record["accepted"]:
                report.accepted_samples += 1
                lines.append(json.dumps(training_messages(report.settings["kind"], question, record["guidance"]),
                                        ensure_ascii=False))
            else:
                rejected[record["reason"]] += 1
        report.accepted_questions += _accepted(records.get(question.id, [])) > 0
    report.rejected = {**{reason: 0 for reason in REJECTIONS}, **rejected}  # a custom validator's reasons too
    report.failed = failed
    report.teacher_tokens, report.solver_tokens = dict(teacher), dict(solver)
    report.finished = now()
    atomic_write_text(out / TRAIN, "".join(line + "\n" for line in lines))
    atomic_write_text(out / REPORT, json.dumps({**asdict(report), "acceptance_rate": report.acceptance_rate},
                                               indent=2) + "\n")
    return report


__all__ = ["generate_sg_data", "SGDataReport", "GuidanceValidator", "training_messages", "REJECTIONS"]
