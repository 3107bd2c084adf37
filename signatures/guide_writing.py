"""Signature the teacher answers to write one guide per cluster of questions."""

from typing import Literal

import dspy

from instret.corpus.guides import Guide


class WriteClusterGuide(dspy.Signature):
    """You are an expert teacher. The example questions all belong to one cluster of similar
    problems. Write ONE reusable guide that lets a small student model solve any question of
    this kind on its own: the domain background it needs and an explicit, numbered,
    step-by-step procedure, plus common pitfalls. The guide must be general to the whole
    cluster: never solve, restate or give the answer to any particular example question."""

    domain: str = dspy.InputField(desc="the subject area, e.g. 'grade-school math' or 'US medical licensing'")
    example_questions: list[str] = dspy.InputField(
        desc="sample questions of the cluster, each followed by its worked solution when one exists")
    style: Literal["concise", "detailed"] = dspy.InputField(
        desc="concise: 2-3 sentences of background and 3-6 short steps; detailed: fuller background and 5-10 steps")
    guide: Guide = dspy.OutputField()
