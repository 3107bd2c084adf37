"""Teacher tokens a method spends once, before any question: the corpus's guides for
instruction retrieval, the SG data a small guide model was fine-tuned on for solution guidance.

`instret eval` spreads such a cost evenly over the questions each method answered in the run
(amortised) and adds it to the method's teacher tokens per question and teacher share, so a
method that paid its teacher up front sits on the same cost axis as one that pays per question
(first_step, on_uncertainty, teacher_cot). The table says which rows carry such a share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: Which one-off cost each answering method carries (method names without their @variant).
CORPUS_METHODS = ("instruction_retrieval",)  # generic_guide's guide is fixed text; passage_rag's passages are data
SG_METHODS = ("solution_guidance",)


@dataclass(frozen=True)
class SetupCost:
    what: str  # where the tokens were spent, for the table's note
    prompt_tokens: int
    completion_tokens: int
    #: Of `prompt_tokens`, those the server read from its prompt cache; None: not recorded.
    prompt_cached_tokens: int | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def corpus_cost(corpus) -> SetupCost | None:
    """What the teacher read and wrote for the corpus's guides (its manifest keeps the count,
    guides kept from an earlier build included, at what they cost when written)."""
    writing = (corpus.manifest.guide_writing or {}) if corpus is not None else {}
    if not writing.get("prompt_tokens") and not writing.get("completion_tokens"):
        return None
    return SetupCost(f"corpus {Path(corpus.folder).name}'s {writing.get('guides', '?')} guides",
                     int(writing.get("prompt_tokens", 0)), int(writing.get("completion_tokens", 0)),
                     _count_or_none(writing.get("prompt_cached_tokens")))


def sg_data_cost(folder: str | Path) -> SetupCost:
    """The teacher's tokens over every guidance sample of an SG data folder (`instret sg data`),
    rejected samples included: the data cost all of them."""
    report = Path(folder) / "report.json"
    try:
        tokens = json.loads(report.read_text(encoding="utf-8"))["teacher_tokens"]
    except FileNotFoundError:
        raise ValueError(f"{report}: no such file; --sg-data takes the folder `instret sg data --out` wrote") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{report}: not an SG data report (field teacher_tokens: {error})") from None
    return SetupCost(f"SG data {Path(folder).name}", int(tokens.get("prompt_tokens", 0)),
                     int(tokens.get("completion_tokens", 0)), _count_or_none(tokens.get("prompt_cached_tokens")))


def _count_or_none(value) -> int | None:
    return None if value is None else int(value)


def setup_costs(methods, corpus=None, sg_data: str | Path | None = None) -> dict[str, SetupCost]:
    """method name (variants included) -> its one-off teacher cost, for the methods that have one."""
    found = {}
    corpus_part = corpus_cost(corpus)
    sg_part = sg_data_cost(sg_data) if sg_data else None
    for method in methods:
        base = method.split("@", 1)[0]
        part = corpus_part if base in CORPUS_METHODS else sg_part if base in SG_METHODS else None
        if part is not None:
            found[method] = part
    return found
