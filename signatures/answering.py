"""Signatures the student answers: one per answer kind, each with and without reference guides.

Outputs stay at one typed `answer` (ChainOfThought adds `reasoning`): small models break
richer formats. The guided variants differ only by the `guides` input, so every method of a
comparison (retrieved guides, retrieved passages, a generic guide) shares one prompt shape.

    >>> answer_signature("numeric", guided=True).__name__
    'GuidedNumericAnswer'
"""

from typing import Literal

import dspy

from instret.data.scoring import CHOICE, EXPRESSION, KINDS, NUMERIC, kind_of  # noqa: F401  (kind_of: picks `kind`)

GUIDES_DESC = ("reference material: guides or solved examples for similar questions; use what applies, "
               "ignore what does not")
OPTIONS_DESC = "the answer options, one per line as 'A. text'"

#: DSPy's ChainOfThought describes `reasoning` only as "${reasoning}". Asked for nothing more, the
#: 0.5B student wrote one sentence there and guessed (1 of 20 GSM8K right); asked for the steps,
#: it worked them out (4 of 20; the same 20 questions, the same run; results/real-models.md).
REASONING_DESC = ("Think step by step: write out each step of the solution on its own line, with the "
                  "calculation it makes, before giving the answer.")


def reasoning_field():
    """The `reasoning` output that `dspy.ChainOfThought(signature, rationale_field=...)` prepends."""
    return dspy.OutputField(desc=REASONING_DESC)


class NumericAnswer(dspy.Signature):
    """Solve the math word problem. Work out the quantities step by step, then give the final
    answer as a single number."""

    question: str = dspy.InputField()
    answer: float = dspy.OutputField(desc="the final answer as a plain number: digits only, no units, words or $")


class GuidedNumericAnswer(dspy.Signature):
    """Solve the math word problem. The reference material describes how to solve questions
    like this one: follow its procedure where it applies. Give the final answer as a single number."""

    question: str = dspy.InputField()
    guides: str = dspy.InputField(desc=GUIDES_DESC)
    answer: float = dspy.OutputField(desc="the final answer as a plain number: digits only, no units, words or $")


class ExpressionAnswer(dspy.Signature):
    """Solve the math problem. Give the final answer as a LaTeX expression, simplified."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(
        desc="the final LaTeX expression only, e.g. \\frac{3}{4} or 2\\sqrt{5}: no words, no $, no \\boxed")


class GuidedExpressionAnswer(dspy.Signature):
    """Solve the math problem. The reference material describes how to solve questions like
    this one: follow its procedure where it applies. Give the final answer as a LaTeX
    expression, simplified."""

    question: str = dspy.InputField()
    guides: str = dspy.InputField(desc=GUIDES_DESC)
    answer: str = dspy.OutputField(
        desc="the final LaTeX expression only, e.g. \\frac{3}{4} or 2\\sqrt{5}: no words, no $, no \\boxed")


Letter = Literal["A", "B", "C", "D", "E"]


class ChoiceAnswer(dspy.Signature):
    """Answer the multiple-choice question by choosing the single best option."""

    question: str = dspy.InputField()
    options: str = dspy.InputField(desc=OPTIONS_DESC)
    answer: Letter = dspy.OutputField(desc="the letter of the best option")


class GuidedChoiceAnswer(dspy.Signature):
    """Answer the multiple-choice question by choosing the single best option. The reference
    material describes how to approach questions like this one: use it where it applies."""

    question: str = dspy.InputField()
    options: str = dspy.InputField(desc=OPTIONS_DESC)
    guides: str = dspy.InputField(desc=GUIDES_DESC)
    answer: Letter = dspy.OutputField(desc="the letter of the best option")


_SIGNATURES = {
    (NUMERIC, False): NumericAnswer, (NUMERIC, True): GuidedNumericAnswer,
    (EXPRESSION, False): ExpressionAnswer, (EXPRESSION, True): GuidedExpressionAnswer,
    (CHOICE, False): ChoiceAnswer, (CHOICE, True): GuidedChoiceAnswer,
}


def answer_signature(kind: str, guided: bool) -> type[dspy.Signature]:
    """The signature for an answer kind (see `kind_of`), with a `guides` input when `guided`."""
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; use one of {', '.join(KINDS)}, "
                         f"or kind_of(question_or_domain) to pick one")
    return _SIGNATURES[kind, bool(guided)]


__all__ = ["NumericAnswer", "GuidedNumericAnswer", "ExpressionAnswer", "GuidedExpressionAnswer", "ChoiceAnswer",
           "GuidedChoiceAnswer", "answer_signature", "kind_of"]
