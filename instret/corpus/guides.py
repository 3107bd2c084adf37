"""The `Guide` a teacher writes for one cluster, and checks that it stays general."""

from __future__ import annotations

import re
from typing import Sequence

from pydantic import BaseModel, Field

from instret.data.questions import Question, normalize_text


class Guide(BaseModel):
    """A reusable guide for one kind of question: background and procedure, never answers."""

    title: str = Field(description="a short name for the kind of question, e.g. 'Unit rates and proportional cost'")
    applies_when: str = Field(description="one sentence: which questions this guide is for")
    background: str = Field(description="domain knowledge needed (definitions, rules, formulas), a few sentences")
    procedure: list[str] = Field(description="explicit numbered steps to solve any question of this kind")
    pitfalls: list[str] = Field(description="common mistakes to avoid")

    def render(self) -> str:
        """Compact plain text for students and embeddings."""
        steps = "\n".join(f"{i}. {_strip_number(step)}" for i, step in enumerate(self.procedure, 1))
        pitfalls = "\n".join(f"- {p}" for p in self.pitfalls)
        return (f"{self.title}\nApplies when: {self.applies_when}\nBackground: {self.background}\n"
                f"Procedure:\n{steps}\nPitfalls:\n{pitfalls}").strip()


def _strip_number(step: str) -> str:
    return re.sub(r"^\s*(step\s*)?\d+[.):]\s*", "", step, flags=re.IGNORECASE)


_WORD = re.compile(r"\w+")


def _shingles(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(normalize_text(text))
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def find_leaks(guide: Guide, questions: Sequence[Question], shingle: int = 12) -> list[str]:
    """Ways a guide is tied to particular questions instead of the whole cluster.

    Flags a guide that copies a long run of words from a question (it is solving that
    question) or states a question's gold answer as an answer ("answer is 18", "#### 18").
    """
    text = guide.render()
    guide_shingles = _shingles(text, shingle)
    lowered = normalize_text(text)
    leaks = []
    for question in questions:
        if guide_shingles & _shingles(question.text, shingle):
            leaks.append(f"copies question {question.id} verbatim")
        answer = (question.answer or "").strip()
        if answer and re.search(rf"(answer is|answer:|####|=\s*)\s*\$?{re.escape(normalize_text(answer))}\b", lowered):
            leaks.append(f"states the answer of question {question.id}")
    return leaks


def guide_quality(guide: Guide, questions: Sequence[Question]) -> float:
    """A 0–1 score usable as a DSPy metric: structured, procedural and leak-free."""
    checks = [bool(guide.title.strip()), bool(guide.applies_when.strip()), bool(guide.background.strip()),
              len(guide.procedure) >= 3, bool(guide.pitfalls), not find_leaks(guide, questions)]
    return sum(checks) / len(checks)
