"""The teacher judges the student's work and writes only where it disagrees (issue 24).

- `teacher_check` (`TeacherCheckQA`): the student drafts one step at a time, as on_uncertainty
  does; after each draft the teacher's verdict on it (a `Verdict` of `programs/verdicts.py`)
  takes the place of the student's own confidence, and a step whose verdict is under τ is
  rewritten by the teacher, at most m times per question. The student needs no log-probabilities.
- `first_error` (`FirstErrorQA`): the student writes its whole cot solution; the teacher reads it
  once and writes the number of its first wrong step, or 0. At 0 the student's answer stands;
  otherwise the teacher rewrites that step and the student goes on from it: the steps before it
  are kept word for word, the rest is written anew (`first_error@n`: at most n such rounds).
- `cascade` (`CascadeQA`): programs tried in turn; the first whose solution a verdict accepts
  answers, and the last answers whatever its verdict (built by `make_program("cascade", ...)`).

**Which verdict.** The defaults come from the verdict table on GSM8K *train* questions
(`benchmarks/results/verdicts.md`), never from test questions. Per step, yes/no and 0-9 scores
ranked the student's wrong solutions *above* its right ones (AUROC 0.37, 0.40 at the least step),
so thresholding them would rewrite right steps more often than wrong ones; `recompute` (the
teacher writes the number a step should end in) is the step default: the fewest teacher tokens
(22 written per question) and no log-probabilities needed. Its verdict is 0 or 1, so every τ in
(0, 1] acts alike; τ matters for yes_no and score. Per solution, yes/no had the highest AUROC
(0.66, interval wide): the cascade's default. Its acceptance, 0.8, is read from the same journal:
at 0.5 the cascade would accept 18 of the 40 solutions, 3 of them right; at 0.7, 8 (3 right); at
0.8, 3 (2 right), the only cut where what it accepts is right more often than teacher_cot is.

    >>> program = make_program("teacher_check", kind="numeric", teacher=make_lm("local/qwen2.5-coder-1.5b"))
    >>> program = make_program("cascade", teacher=teacher, stages="cot,first_error,teacher_cot")
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import dspy
from dspy.utils.exceptions import AdapterParseError

from instret.lm.steps import UncertaintyPolicy, render_steps, split_steps, step_config, step_marker
from instret.programs.answering import AnsweringProgram, answer_inputs
from instret.programs.intervention import (OnUncertaintyQA, TwoModelProgram, checked_handoff, cot_signature,
                                           extended, finished_from, raw_text, teacher_lm, write_step)
from instret.programs.verdicts import Verdict, make_verdict, solution_text
from instret.signatures.answering import answer_signature, reasoning_field
from instret.signatures.intervention import ContinueSolution, NextStep, intervention_signature
from instret.signatures.verdicts import FirstWrongStep

#: The verdict each method uses unless told, and the cascade's acceptance (see "Which verdict" above).
STEP_VERDICT, SOLUTION_VERDICT, ACCEPT = "recompute", "yes_no", 0.8


def verdict_of(method: str, verdict: str | None = None) -> str:
    """The verdict design `method` (teacher_check, cascade) judges with, given the user's choice."""
    return verdict or (STEP_VERDICT if method.split("@", 1)[0] == "teacher_check" else SOLUTION_VERDICT)


@dataclass(frozen=True)
class VerdictPolicy(UncertaintyPolicy):
    """Rewrite a step whose verdict is under `threshold`, at most `max_interventions` times per
    question. A step the verdict does not judge (`None`: no number to recompute, no yes/no token
    read) is accepted: the teacher saw nothing wrong in it."""

    threshold: float = 0.5

    def should_intervene(self, confidence: float | None, interventions: int) -> bool:
        return confidence is not None and super().should_intervene(confidence, interventions)


class TeacherCheckQA(OnUncertaintyQA):
    """on_uncertainty with the teacher's verdict in place of the student's confidence.

    The prediction adds `step_verdicts` (the teacher's verdict on each draft; None: not judged),
    `rewritten_steps` and `interventions`."""

    scores_field = "step_verdicts"

    def __init__(self, kind: str = "numeric", teacher=None, verdict: str | Verdict | None = None,
                 policy: UncertaintyPolicy | None = None, max_steps: int = 12, handoff: str = "reply"):
        super().__init__(kind, teacher=teacher_lm(teacher, "teacher_check"),
                         policy=policy if policy is not None else VerdictPolicy(), max_steps=max_steps, handoff=handoff)
        given = hasattr(verdict, "step")  # a Verdict object, else a design's name (None: the default)
        self.verdict = verdict if given else make_verdict(verdict or STEP_VERDICT, self.rewrite.lm)

    def check_student(self, student) -> None:
        """The student's log-probabilities are not read: any backend drafts."""

    def drafted_step(self, student, inputs: dict, steps: list[str], number: int, scored_before: bool = False):
        step, reply = self.next_step(self.step, inputs, steps, step_config(number, 1, student))
        if not step.removeprefix(step_marker(number)).strip():
            return step, None, reply  # the student stopped: nothing to judge
        return step, self.verdict.step(inputs["question"], steps, step), reply


class FirstErrorQA(TwoModelProgram):
    """The student's whole cot solution, checked once per round by the teacher, who names its
    first wrong step (0: none) and rewrites only that step; the student continues from there.

    The prediction adds `first_wrong_steps` (the step the teacher named in each round; 0: none,
    None: its reply held no number) and `rewritten_steps` (the step numbers the teacher wrote)."""

    def __init__(self, kind: str = "numeric", teacher=None, rounds: int = 1, handoff: str = "reply"):
        super().__init__(kind)
        if int(rounds) < 1:
            raise ValueError(f"rounds must be 1 or more, got {rounds}")
        self.rounds, self.handoff = int(rounds), checked_handoff(handoff)
        teacher = teacher_lm(teacher, "first_error")
        # cot's own predictor: the same prompt, so a cascade that ran cot first is served from the cache
        self.solve = dspy.ChainOfThought(answer_signature(kind, guided=False), rationale_field=reasoning_field())
        self.find = dspy.Predict(FirstWrongStep)
        self.find.set_lm(teacher)
        writes = cot_signature(kind) if handoff == "reply" else intervention_signature(NextStep, kind)
        self.rewrite = dspy.Predict(writes)
        self.rewrite.set_lm(teacher)
        self.answer = dspy.Predict(intervention_signature(ContinueSolution, kind))
        if handoff == "reply":
            self.continuation = dspy.Predict(cot_signature(kind))

    def forward(self, question: str, options: dict[str, str] | None = None):
        inputs = answer_inputs(self.kind, question, options)
        try:
            prediction, unparsed = self.solve(**inputs), None
        except AdapterParseError as error:  # a small model's broken format: its steps can still be judged
            prediction, unparsed = dspy.Prediction(reasoning=raw_text(error), answer=None), error
        named, rewritten = [], []
        for _ in range(self.rounds):
            steps = split_steps(prediction.reasoning)
            wrong = self.first_wrong(question, steps, prediction.get("answer"))
            named.append(wrong)
            # 0, no number, a step past the end, or one the teacher already wrote or kept: nothing to redo
            if not wrong or wrong > len(steps) or (rewritten and wrong <= rewritten[-1]):
                break
            kept = steps[:wrong - 1]
            step, _ = write_step(self.rewrite, self.handoff, inputs, kept, step_config(wrong, 1, self.rewrite.lm))
            if not step.removeprefix(step_marker(wrong)).strip():
                break  # the teacher wrote nothing in its place: keep the student's solution
            rewritten.append(wrong)
            prediction, unparsed = finished_from(self, inputs, render_steps(kept + [step])), None
        if unparsed is not None:
            raise unparsed  # the student's own reply stands, unparsed: format recovery reads it, as for cot
        return extended(prediction, first_wrong_steps=named, rewritten_steps=rewritten, interventions=len(rewritten))

    def first_wrong(self, question: str, steps: list[str], answer) -> int | None:
        """The step the teacher names as the first wrong one (0: none; None: no number read)."""
        solution = solution_text(render_steps(steps), answer)
        try:
            reply = self.find(question=question, solution=solution, config={"max_tokens": 40})
        except AdapterParseError:
            return None
        found = re.search(r"\d+", str(reply.first_wrong_step or ""))  # "3", "Step 3", "3."
        return int(found.group()) if found else None


class CascadeQA(TwoModelProgram):
    """`stages` (name -> program) tried in order: a stage's answer stands when the teacher's verdict
    on its solution is `accept` or more; a stage whose reply breaks the format is passed over; the
    last stage's answer stands whatever it is.

    The prediction adds `cascade_stage` (the name of the stage that answered) and
    `cascade_verdicts` (the verdict on each stage tried before it; None: not judged)."""

    def __init__(self, stages: dict[str, AnsweringProgram], kind: str = "numeric", teacher=None,
                 verdict: str | Verdict | None = None, accept: float = ACCEPT):
        super().__init__(kind)
        if len(stages) < 2:
            raise ValueError(f"a cascade needs two stages or more, got {', '.join(stages) or 'none'}")
        if not 0.0 <= float(accept) <= 1.0:
            raise ValueError(f"accept must be a verdict in [0, 1], got {accept}")
        self.names, self.stages, self.accept = list(stages), list(stages.values()), float(accept)
        self.verdict = verdict if hasattr(verdict, "solution") else make_verdict(
            verdict or SOLUTION_VERDICT, teacher_lm(teacher, "cascade"))
        if getattr(self.verdict, "name", "") == STEP_VERDICT:
            raise ValueError("the recompute verdict judges steps, not solutions: a cascade needs yes_no, score "
                             "or final_answer")

    def forward(self, question: str, options: dict[str, str] | None = None):
        verdicts = []
        for name, stage in zip(self.names[:-1], self.stages[:-1]):
            try:
                prediction = stage(question=question, options=options)
            except AdapterParseError:  # no answer to accept: the next stage answers
                verdicts.append(None)
                continue
            solution = solution_text(prediction.get("reasoning"), prediction.get("answer"))
            verdict = self.verdict.solution(question, solution)
            verdicts.append(verdict)
            if verdict is not None and verdict >= self.accept:
                return extended(prediction, cascade_stage=name, cascade_verdicts=verdicts)
        prediction = self.stages[-1](question=question, options=options)  # answers whatever its verdict
        return extended(prediction, cascade_stage=self.names[-1], cascade_verdicts=verdicts)


# --- factories (registered in programs/methods.py; `cascade` is built there, from the registry) ---

def _teacher_check(corpus, kind, teacher=None, threshold=None, max_interventions=None, handoff=None, verdict=None, **_):
    default = VerdictPolicy()
    policy = VerdictPolicy(default.threshold if threshold is None else float(threshold),
                           default.max_interventions if max_interventions is None else int(max_interventions))
    return TeacherCheckQA(kind, teacher=teacher, verdict=verdict, policy=policy, handoff=handoff or "reply")


def _first_error(corpus, kind, teacher=None, rounds=None, handoff=None, **_):
    return FirstErrorQA(kind, teacher=teacher, rounds=1 if rounds is None else rounds, handoff=handoff or "reply")


FACTORIES = {"teacher_check": _teacher_check, "first_error": _first_error}
