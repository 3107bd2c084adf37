"""The teacher's verdict on the student's work: a number in [0, 1], "how likely this is right".

A verdict reads a whole solution (`solution(question, solution)`) or one step given the steps
before it (`step(question, steps_so_far, step)`). Judging is cheap next to writing: the teacher
reads the student's work as prompt tokens (mostly from the server's prompt cache when calls share
a prefix) and writes one or a few tokens. Each design is a pluggable part (`Verdict`):

- `YesNo`: "correct? yes or no", read from the log-probabilities of the answer token:
  p(yes) / (p(yes) + p(no)) over its top alternatives (" yes", "Yes" ... merged). Needs a backend
  that returns `top_logprobs`.
- `Score09`: "rate 0-9", read as the expectation of the digit over its top alternatives, / 9.
  Needs `top_logprobs`.
- `Recompute` (steps only): the step's last number is hidden as '?', the teacher writes the
  number (a few tokens); 1 if it equals the student's, else 0. Needs no log-probabilities.
- `FinalAnswer` (solutions only): the teacher writes its bare final answer; 1 if it equals the
  student's, else 0. Needs no log-probabilities.

The teacher's likelihood of the student's step (scoring the step's own tokens) is not here: it
needs log-probabilities of prompt tokens, which llama.cpp's server refuses (`echo`), and the
embedded engine returns log-probabilities of written tokens only.

    >>> verdict = YesNo(teacher=make_lm("local/qwen2.5-coder-1.5b"))
    >>> verdict.solution(question="...", solution="Step 1: ... The final answer is 18.")
    0.83
"""

from __future__ import annotations

import math
import re
from typing import Protocol, runtime_checkable

import dspy
from dspy.utils.exceptions import AdapterParseError
from instret.programs.intervention import teacher_lm
from instret.signatures.verdicts import (
    BareAnswer,
    JudgeSolution,
    JudgeStep,
    RecomputeStep,
    ScoreSolution,
    ScoreStep,
)

from instret.data.scoring import parse_number
from instret.lm.steps import LogprobsUnavailable, render_steps

#: How many alternatives of the verdict token the server is asked for.
TOP = 10
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_MARKER = re.compile(r"\s*Step \d+:")


@runtime_checkable
class Verdict(Protocol):
    """A design of the teacher's verdict. `None` from either call: this design does not judge that."""

    name: str

    def solution(self, question: str, solution: str) -> float | None: ...

    def step(self, question: str, steps_so_far: list[str], step: str) -> float | None: ...


class _TeacherVerdict(dspy.Module):
    """Holds the teacher on its own predictors (never a global LM), as the intervention programs do."""

    name = ""
    needs_logprobs = False

    def __init__(self, teacher=None):
        super().__init__()
        self.teacher = teacher_lm(teacher, f"the {self.name} verdict")

    def _predictor(self, signature) -> dspy.Predict:
        predictor = dspy.Predict(signature)
        predictor.set_lm(self.teacher)
        return predictor

    def _config(self) -> dict:
        config = {"max_tokens": 40}
        return {**config, "logprobs": True, "top_logprobs": TOP} if self.needs_logprobs else config


class _TokenVerdict(_TeacherVerdict):
    """A verdict read from the probabilities of the answer token's alternatives."""

    needs_logprobs = True
    field = ""

    def _read(self, predictor, **inputs) -> float | None:
        try:
            reply = predictor(**inputs, config=self._config())
        except AdapterParseError:
            return None  # no verdict token to read: the caller counts it as unjudged
        logprobs = reply.get("logprobs")
        entries = _entries(logprobs)
        if not entries:
            raise LogprobsUnavailable(
                f"{getattr(self.teacher, 'model', self.teacher)} returned no token log-probabilities, which the "
                f"{self.name} verdict reads. Serve the teacher where they come back (a local/ model, vLLM, "
                f"llama.cpp), or use a verdict that needs none: recompute or final_answer.")
        return self.value(entries)

    def value(self, entries: list[dict]) -> float | None:
        raise NotImplementedError


class YesNo(_TokenVerdict):
    name = "yes_no"

    def __init__(self, teacher=None):
        super().__init__(teacher)
        self.judge_solution, self.judge_step = self._predictor(JudgeSolution), self._predictor(JudgeStep)

    def solution(self, question: str, solution: str) -> float | None:
        return self._read(self.judge_solution, question=question, solution=solution)

    def step(self, question: str, steps_so_far: list[str], step: str) -> float | None:
        return self._read(self.judge_step, question=question, steps_so_far=render_steps(steps_so_far), step=step)

    def value(self, entries: list[dict]) -> float | None:
        return yes_probability(entries)


class Score09(_TokenVerdict):
    name = "score"

    def __init__(self, teacher=None):
        super().__init__(teacher)
        self.score_solution, self.score_step = self._predictor(ScoreSolution), self._predictor(ScoreStep)

    def solution(self, question: str, solution: str) -> float | None:
        return self._read(self.score_solution, question=question, solution=solution)

    def step(self, question: str, steps_so_far: list[str], step: str) -> float | None:
        return self._read(self.score_step, question=question, steps_so_far=render_steps(steps_so_far), step=step)

    def value(self, entries: list[dict]) -> float | None:
        return digit_expectation(entries)


class Recompute(_TeacherVerdict):
    name = "recompute"

    def __init__(self, teacher=None):
        super().__init__(teacher)
        self.recompute = self._predictor(RecomputeStep)

    def solution(self, question: str, solution: str) -> float | None:
        return None

    def step(self, question: str, steps_so_far: list[str], step: str) -> float | None:
        hidden, result = hide_result(step)
        if result is None:
            return None  # a step with no number to check (a plan, a restatement)
        try:
            reply = self.recompute(question=question, steps_so_far=render_steps(steps_so_far), step=hidden,
                                   config=self._config())
        except AdapterParseError:
            return 0.0  # the teacher could not produce the number: no support for the student's
        return float(same_number(last_number(reply.result), result))


class FinalAnswer(_TeacherVerdict):
    name = "final_answer"

    def __init__(self, teacher=None):
        super().__init__(teacher)
        self.answer = self._predictor(BareAnswer)

    def solution(self, question: str, solution: str, answer=None) -> float | None:
        """`answer`: the student's parsed answer; else the last number of `solution`."""
        student = answer if answer is not None else last_number(solution)
        if student is None:
            return 0.0
        try:
            reply = self.answer(question=question, config=self._config())
        except AdapterParseError:
            return 0.0
        return float(same_number(last_number(reply.answer), student))

    def step(self, question: str, steps_so_far: list[str], step: str) -> float | None:
        return None


#: name -> design, for `--designs`.
VERDICTS = {cls.name: cls for cls in (YesNo, Score09, Recompute, FinalAnswer)}


def make_verdict(name: str, teacher) -> Verdict:
    """The design `name` of `VERDICTS`, judging with `teacher` (an LM or a model string)."""
    if name not in VERDICTS:
        raise ValueError(f"unknown verdict {name!r}: choose from {', '.join(VERDICTS)}")
    return VERDICTS[name](teacher)


def solution_text(reasoning: str | None, answer=None) -> str:
    """A solution as a verdict reads it: the reasoning, then "The final answer is X." when parsed."""
    reasoning = (reasoning or "").strip()
    return f"{reasoning}\nThe final answer is {answer}." if answer is not None else reasoning


# --- reading the verdict -----------------------------------------------------------------

def _get(thing, key):
    return thing.get(key) if isinstance(thing, dict) else getattr(thing, key, None)


def _entries(logprobs) -> list[dict]:
    """OpenAI-format token entries [{token, logprob, top_logprobs: [{token, logprob}]}] as dicts."""
    content = _get(logprobs, "content") if logprobs is not None else None
    entries = []
    for entry in content or []:
        top = [{"token": str(_get(t, "token") or ""), "logprob": float(_get(t, "logprob"))}
               for t in _get(entry, "top_logprobs") or []]
        entries.append({"token": str(_get(entry, "token") or ""), "logprob": float(_get(entry, "logprob")), "top": top})
    return entries


def _verdict_entry(entries: list[dict], accepts) -> dict | None:
    """The first written token that is the verdict (past the adapter's field header)."""
    return next((entry for entry in entries if accepts(entry["token"].strip().lower())), None)


def yes_probability(entries: list[dict]) -> float | None:
    """p(yes) / (p(yes) + p(no)) at the verdict token; None when the reply has no yes/no token."""
    entry = _verdict_entry(entries, lambda token: token in ("yes", "no"))
    if entry is None:
        return None
    mass = {"yes": 0.0, "no": 0.0}
    for alternative in entry["top"] or [entry]:
        word = alternative["token"].strip().lower()
        if word in mass:
            mass[word] += math.exp(alternative["logprob"])
    if not sum(mass.values()):  # the alternatives hold neither: the written token decides
        return 1.0 if entry["token"].strip().lower() == "yes" else 0.0
    return mass["yes"] / (mass["yes"] + mass["no"])


def digit_expectation(entries: list[dict]) -> float | None:
    """E[digit] / 9 over the digit alternatives at the first digit token; None without one."""
    entry = _verdict_entry(entries, lambda token: len(token) == 1 and token.isdigit())
    if entry is None:
        return None
    weights = {}
    for alternative in entry["top"] or [entry]:
        token = alternative["token"].strip()
        if len(token) == 1 and token.isdigit():
            weights[int(token)] = weights.get(int(token), 0.0) + math.exp(alternative["logprob"])
    if not weights:
        return int(entry["token"].strip()) / 9
    return sum(digit * weight for digit, weight in weights.items()) / sum(weights.values()) / 9


# --- numbers in steps --------------------------------------------------------------------

def last_number(text: str | None):
    found = _NUMBER.findall(text or "")
    return parse_number(found[-1].replace("$", "")) if found else None


def hide_result(step: str) -> tuple[str, object]:
    """The step with its last number replaced by '?', and that number (None: the step has none)."""
    marker = _MARKER.match(step or "")
    start = marker.end() if marker else 0  # `Step 2:` numbers the step; it is not its result
    found = list(_NUMBER.finditer(step or "", start))
    if not found:
        return step, None
    last = found[-1]
    return step[:last.start()] + "?" + step[last.end():], parse_number(last.group().replace("$", ""))


def same_number(a, b) -> bool:
    """Numerically equal: 3,000 and 3000.0 are; a value that is no number equals nothing."""
    a, b = parse_number(a), parse_number(b)
    return a is not None and b is not None and a == b
