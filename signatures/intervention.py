"""Signatures of the teacher-intervention methods: whole steps are the unit a teacher hands over.

Steps are written one per line as `Step n: ...` (see `instret.lm.steps` for why that boundary).
The base classes here hold the question only; `intervention_signature(base, kind)` adds the
kind's `options` input (multiple choice) and, where the step ends in one, the kind's typed
`answer` output, so every method of a comparison answers in the same typed field as `cot`:

    >>> intervention_signature(ContinueSolution, "numeric").output_fields.keys()
    dict_keys(['reasoning', 'answer'])
"""

from __future__ import annotations

from functools import lru_cache

import dspy

from instret.signatures.answering import answer_signature

STEPS_DESC = "the solution's steps written so far, one per line as 'Step n: ...'; do not repeat or change them"


class WriteFirstSteps(dspy.Signature):
    """Begin a step-by-step solution of the problem. Write only the first steps, one per line,
    each starting 'Step n:' (Step 1, Step 2, ...). Each step does one small piece of the work:
    it says what it finds, carries out the calculation and states the result, e.g. 'Step 1: She
    sold half as many clips in May as in April: 48 / 2 = 24 clips.' A step is never only a
    heading. Do not finish the solution and do not state the final answer."""

    question: str = dspy.InputField()
    steps: str = dspy.OutputField(desc="the first steps only, one per line, each with its calculation and "
                                       "result: 'Step 1: ...'")


class NextStep(dspy.Signature):
    """Continue the step-by-step solution of the problem by exactly one step: the next 'Step n:'
    line after the steps so far, doing one small piece of the work with its calculation and
    result, never only a heading. When the steps so far
    already give everything needed, the next step states the result as 'Step n: The final
    answer is ...'."""

    question: str = dspy.InputField()
    steps_so_far: str = dspy.InputField(desc=STEPS_DESC)
    next_step: str = dspy.OutputField(desc="one line only: 'Step n: ...'")


class ContinueSolution(dspy.Signature):
    """Solve the problem, continuing from the steps already written: take them as given, write
    the remaining steps one per line ('Step n: ...', numbering on from the steps so far), then
    give the final answer."""

    question: str = dspy.InputField()
    steps_so_far: str = dspy.InputField(desc=STEPS_DESC)
    reasoning: str = dspy.OutputField(desc="the remaining steps, one per line numbered on from the steps so far, "
                                           "each with the calculation it makes, before giving the answer")


class QuestionFirstSolution(dspy.Signature):
    """Before solving, ask yourself the question you must answer first to get started on the
    problem. Then solve the problem step by step, starting from that question, and give the
    final answer."""

    question: str = dspy.InputField()
    start_question: str = dspy.OutputField(desc="the one question to answer first to get started")
    reasoning: str = dspy.OutputField(desc="the solution, step by step, starting with the answer to that question")


@lru_cache(maxsize=None)
def intervention_signature(base: type[dspy.Signature], kind: str) -> type[dspy.Signature]:
    """`base` for an answer kind: the `options` input for multiple choice, and the kind's typed
    `answer` output unless `base` writes steps only (`WriteFirstSteps`, `NextStep`)."""
    answering = answer_signature(kind, guided=False)  # refuses an unknown kind
    signature = base.with_instructions(base.instructions)  # a new class: `base` keeps its name
    if "options" in answering.input_fields:
        options = answering.input_fields["options"]
        signature = signature.insert(1, "options", options, type_=options.annotation)
    if base in (ContinueSolution, QuestionFirstSolution):
        answer = answering.output_fields["answer"]
        signature = signature.append("answer", answer, type_=answer.annotation)
    signature.__name__ = f"{base.__name__}{kind.title()}"
    return signature


__all__ = ["WriteFirstSteps", "NextStep", "ContinueSolution", "QuestionFirstSolution", "intervention_signature"]
