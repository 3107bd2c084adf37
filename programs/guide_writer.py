"""DSPy program that writes the guide of one cluster."""

from __future__ import annotations

import dspy

from instret.signatures import WriteClusterGuide


class GuideWriter(dspy.Module):
    """Write one guide from a cluster's sample questions.

    >>> writer = GuideWriter()
    >>> with dspy.context(lm=make_lm("ollama_chat/qwen2.5:14b")):
    ...     writer(domain="grade-school math", example_questions=[...]).guide

    `write` is a plain attribute so DSPy optimizers can tune its instructions and demos.
    """

    def __init__(self):
        super().__init__()
        self.write = dspy.Predict(WriteClusterGuide)

    def forward(self, domain: str, example_questions: list[str], style: str = "concise"):
        return self.write(domain=domain, example_questions=example_questions, style=style)
