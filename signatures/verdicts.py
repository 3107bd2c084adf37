"""Signatures of the teacher's verdicts: the teacher reads the student's work and says, in one or a
few written tokens, whether it is right (`programs/verdicts.py` reads the number from them)."""

from __future__ import annotations

from typing import Literal

import dspy
from instret.signatures.intervention import STEPS_DESC


class JudgeSolution(dspy.Signature):
    """Check a student's solution of the problem. Answer yes if its reasoning and final answer are
    correct, no if any step or the final answer is wrong."""

    question: str = dspy.InputField()
    solution: str = dspy.InputField(desc="the student's solution")
    correct: Literal["yes", "no"] = dspy.OutputField()


class JudgeStep(dspy.Signature):
    """Check one step of a student's solution of the problem: is the new step correct, given the
    question and the steps before it? Answer yes or no."""

    question: str = dspy.InputField()
    steps_so_far: str = dspy.InputField(desc=STEPS_DESC)
    step: str = dspy.InputField(desc="the new step to check")
    correct: Literal["yes", "no"] = dspy.OutputField()


class ScoreSolution(dspy.Signature):
    """Rate how likely a student's solution of the problem is correct, from 0 (surely wrong) to 9
    (surely right)."""

    question: str = dspy.InputField()
    solution: str = dspy.InputField(desc="the student's solution")
    score: int = dspy.OutputField(desc="one digit, 0 to 9")


class ScoreStep(dspy.Signature):
    """Rate how likely the new step of a student's solution is correct, given the question and the
    steps before it, from 0 (surely wrong) to 9 (surely right)."""

    question: str = dspy.InputField()
    steps_so_far: str = dspy.InputField(desc=STEPS_DESC)
    step: str = dspy.InputField(desc="the new step to check")
    score: int = dspy.OutputField(desc="one digit, 0 to 9")


class RecomputeStep(dspy.Signature):
    """A step of a solution of the problem with its result hidden as '?'. Work out the hidden
    number from the question and the steps before it; write only the number."""

    question: str = dspy.InputField()
    steps_so_far: str = dspy.InputField(desc=STEPS_DESC)
    step: str = dspy.InputField(desc="the step, its result replaced by '?'")
    result: str = dspy.OutputField(desc="the hidden number only")  # read with parse_number: "3,000" too


class BareAnswer(dspy.Signature):
    """Give only the final numeric answer of the problem, no working."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="the number only")

class FirstWrongStep(dspy.Signature):
    """Check a student's step-by-step solution of the problem. Find the first step that is wrong: a
    misread quantity, a wrong operation or a wrong calculation. Write only its number, or 0 if
    every step is right."""

    question: str = dspy.InputField()
    solution: str = dspy.InputField(desc="the student's solution, one step per line as 'Step n: ...'")
    first_wrong_step: str = dspy.OutputField(desc="the number of the first wrong step, or 0")  # read with parse_number
