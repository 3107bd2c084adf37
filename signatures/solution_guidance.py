"""Signatures of Solution Guidance (SG): a guide model plans, a solver answers from the plan.

Seed paper 2 (Bi et al., COLING 2025) defines solution guidance as problem understanding and
decomposition at the semantic and logical level, never the computations. It did not publish
its prompts; these are our own wording of that definition.

`guidance_signature(kind)` is what the guide model answers (the `options` input only for
multiple choice, as in `answer_signature`); `answer_with_guidance_signature(kind)` is the
kind's own answering signature with a `guidance` input added, so the solver answers in the
same typed `answer` field as every other method:

    >>> answer_with_guidance_signature("numeric").input_fields.keys()
    dict_keys(['question', 'guidance'])
"""

from __future__ import annotations

from functools import lru_cache

import dspy

from instret.signatures.answering import answer_signature

GUIDANCE_DESC = ("the solution guidance: 'Asked:' what the question asks for; 'Given:' the facts and "
                 "quantities it states; 'Steps:' the sub-problems to solve in order, numbered 1., 2., 3., each "
                 "saying in words which quantities to combine and how; no computed numbers, no final answer")


class WriteGuidance(dspy.Signature):
    """You are a teacher. Do not solve the problem: write solution guidance that lets a student
    solve it. Say what is asked, what is given, and break the solution into numbered sub-problems
    to solve in order, each saying in words which quantities to combine and how (add, subtract,
    multiply, divide, compare). Never carry out a calculation: write no number that the question
    does not state, no '=' followed by a result, and never the final answer."""

    question: str = dspy.InputField()
    guidance: str = dspy.OutputField(desc=GUIDANCE_DESC)


FROM_SOLUTION = ("A worked solution is given for your reference only: the student will never see it. Use "
                 "it to know the right approach, then write the guidance in your own words: name the quantities "
                 "each step combines and how, never their values, and never its intermediate results or its "
                 "final answer.")
WORKED_SOLUTION_DESC = "a correct worked solution, for the teacher's eyes only"


GUIDANCE_INPUT_DESC = ("a teacher's solution guidance: what is asked, what is given, and the sub-problems "
                       "to solve in order; it computes nothing, so do every calculation yourself")
FOLLOW_GUIDANCE = ("A teacher's solution guidance breaks the problem into sub-problems: solve them in "
                   "its order, doing every calculation yourself, then give the final answer.")


@lru_cache(maxsize=None)
def guidance_signature(kind: str) -> type[dspy.Signature]:
    """`WriteGuidance` for an answer kind: with the kind's `options` input for multiple choice."""
    answering = answer_signature(kind, guided=False)  # refuses an unknown kind
    signature = WriteGuidance.with_instructions(WriteGuidance.instructions)  # a new class: the base keeps its name
    if "options" in answering.input_fields:
        options = answering.input_fields["options"]
        signature = signature.insert(1, "options", options, type_=options.annotation)
    signature.__name__ = f"WriteGuidance{kind.title()}"
    return signature


@lru_cache(maxsize=None)
def guidance_from_solution_signature(kind: str) -> type[dspy.Signature]:
    """`guidance_signature(kind)` with a `worked_solution` input last, for SG data: a teacher that
    sees a correct solution need not find the right approach before it can describe it. The
    guide model trained on the data is still prompted without it."""
    plain = guidance_signature(kind)
    signature = plain.with_instructions(f"{plain.instructions}\n\n{FROM_SOLUTION}")
    signature = signature.insert(len(plain.input_fields), "worked_solution",
                                 dspy.InputField(desc=WORKED_SOLUTION_DESC), type_=str)
    signature.__name__ = f"{plain.__name__}FromSolution"
    return signature


@lru_cache(maxsize=None)
def answer_with_guidance_signature(kind: str) -> type[dspy.Signature]:
    """The kind's answering signature (`answer_signature(kind, guided=False)`) with a
    `guidance` input after the question and options, and an instruction to follow it."""
    answering = answer_signature(kind, guided=False)
    position = len(answering.input_fields)
    signature = answering.with_instructions(f"{answering.instructions} {FOLLOW_GUIDANCE}")
    signature = signature.insert(position, "guidance", dspy.InputField(desc=GUIDANCE_INPUT_DESC), type_=str)
    signature.__name__ = f"{answering.__name__}WithGuidance"
    return signature


__all__ = ["WriteGuidance", "guidance_signature", "guidance_from_solution_signature", "answer_with_guidance_signature"]
