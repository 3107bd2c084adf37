"""The one record type every loader produces: a `Question`."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

_SPACE = re.compile(r"\s+")

MAX_SOLUTION_CHARS = 1200  # a worked solution shown in a prompt is cut here, so prompts stay bounded


def normalize_text(text: str) -> str:
    """Canonical form used for ids, de-duplication and leakage checks.

    NFKC folds look-alike characters, case and runs of whitespace are ignored, so the same
    question copied between files with different spacing or capitalisation matches.
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def question_id(text: str) -> str:
    """Stable id of a question: a hash of its normalized text (stem and options, see `Question`)."""
    return hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Question:
    """One benchmark or user question, whatever file it came from.

    `options` maps letters to option texts for multiple choice; `answer` is the gold answer
    (a number, a LaTeX expression or an option letter); `solution` is a worked solution when
    the data has one. `source` and `line` say where the record was read.
    """

    text: str
    answer: str | None = None
    options: dict[str, str] | None = None
    solution: str | None = None
    subject: str | None = None
    source: str | None = None
    line: int | None = None
    id: str = field(default="")

    def __post_init__(self):
        if not self.id:
            # The id hashes what a model is shown: HEAD-QA reuses stems such as "Insulin:" with
            # different options, and those are different questions.
            object.__setattr__(self, "id", question_id(self.render()))

    def render(self) -> str:
        """The question as a model sees it: text, then lettered options if any."""
        if not self.options:
            return self.text
        lines = [self.text] + [f"{letter}. {option}" for letter, option in self.options.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "text": self.text, "answer": self.answer, "options": self.options,
            "solution": self.solution, "subject": self.subject, "source": self.source, "line": self.line,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Question":
        return cls(**{key: data.get(key) for key in
                      ("text", "answer", "options", "solution", "subject", "source", "line")},
                   id=data.get("id") or "")


def merge_duplicates(questions) -> tuple[list[Question], int]:
    """Keep the first of each group of questions with the same normalized text.

    Returns the unique questions in their original order and how many were merged away.
    """
    questions = list(questions)
    first_by_id: dict[str, Question] = {}
    for question in questions:
        first_by_id.setdefault(question.id, question)
    return list(first_by_id.values()), len(questions) - len(first_by_id)
