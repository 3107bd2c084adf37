"""Every answering method by name: `make_program("cot")`, `make_program("on_uncertainty@0.7", teacher=lm)`.

The one registry the CLI, `evaluate` and the notebooks build programs from. It sits above the
programs' own modules, so they never import it (nor each other through it).
"""

from __future__ import annotations

from instret.corpus.retrieval import GuideRetriever, PassageRetriever
from instret.programs.answering import (AnsweringProgram, ChainOfThoughtQA, GenericGuideQA, InstructionRetrievalQA,
                                        PassageRAGQA, ZeroShotQA)
from instret.programs.intervention import FACTORIES as INTERVENTIONS
from instret.programs.judging import FACTORIES as JUDGING
from instret.programs.judging import CascadeQA
from instret.programs.solution_guidance import FACTORIES as SOLUTION_GUIDANCE


def _zero_shot(corpus, kind, **_):
    return ZeroShotQA(kind)


def _chain_of_thought(corpus, kind, **_):
    return ChainOfThoughtQA(kind)


def _generic_guide(corpus, kind, guide=None, **_):
    return GenericGuideQA(kind, guide=guide)


def _passage_rag(corpus, kind, k=2, embedder=None, **_):
    return PassageRAGQA(PassageRetriever(_needed(corpus, "passage_rag"), k=k, embedder=embedder), kind)


def _instruction_retrieval(corpus, kind, k=2, mode="guides", min_similarity=0.2, embedder=None, guide_handoff=None,
                           **_):
    retriever = GuideRetriever(_needed(corpus, "instruction_retrieval"), k=k, mode=mode,
                               min_similarity=min_similarity, embedder=embedder)
    return InstructionRetrievalQA(retriever, kind, handoff=guide_handoff or "prompt")


#: method -> the option a `method@value` variant sets: `first_step@2`, `on_uncertainty@0.7`,
#: `instruction_retrieval@reply` (the guide's place in the student's reply).
VARIANTS = {"first_step": ("teacher_steps", int), "on_uncertainty": ("threshold", float),
            "teacher_check": ("threshold", float), "first_error": ("rounds", int), "cascade": ("accept", float),
            "instruction_retrieval": ("guide_handoff", str)}
def variant(method: str) -> tuple[str, dict]:
    """`first_step@2` -> ("first_step", {"teacher_steps": 2}); a plain name -> (name, {})."""
    base, sep, value = method.partition("@")
    if not sep:
        return method, {}
    if base not in VARIANTS:
        raise ValueError(f"{method!r}: only {', '.join(f'{m}@<{o}>' for m, (o, _) in VARIANTS.items())} take a value")
    option, kind = VARIANTS[base]
    try:
        return base, {option: kind(value)}
    except ValueError:
        raise ValueError(f"{method!r}: {option} must be a{'n integer' if kind is int else ' number'}, "
                         f"got {value!r}") from None


#: The cascade `make_program("cascade")` builds unless `stages=` names others.
CASCADE_STAGES = ("cot", "first_error", "teacher_cot")


def _cascade(corpus, kind, teacher=None, stages=None, verdict=None, accept=None, **options):
    """Each stage built as `make_program` builds it, from the same options; the cascade's own
    `verdict` judges solutions, so a teacher_check stage keeps its step verdict default."""
    names = [name.strip() for name in stages.split(",")] if isinstance(stages, str) else list(stages or CASCADE_STAGES)
    if any(name.split("@")[0] == "cascade" for name in names):
        raise ValueError("a cascade's stages cannot hold another cascade")
    built = {name: make_program(name, corpus, kind, teacher=teacher, **options) for name in names if name}
    return CascadeQA(built, kind, teacher=teacher, verdict=verdict, **({} if accept is None else {"accept": accept}))


class CorpusNeeded(ValueError):
    """A method that retrieves was given no corpus; the CLI says it in its own words (`--corpus DIR`)."""

    def __init__(self, method: str):
        self.method = method
        super().__init__(f"{method} retrieves from a corpus: make_program({method!r}, Corpus.open(folder), kind), "
                         f"or a method that needs none, such as 'cot'")


def _needed(corpus, method: str):
    if corpus is None:
        raise CorpusNeeded(method)
    return corpus


#: name -> factory(corpus, kind, **options). Options a method does not use are ignored, so one
#: set of options can drive every method of a comparison.
METHODS = {"zero_shot": _zero_shot, "cot": _chain_of_thought, "passage_rag": _passage_rag,
           "generic_guide": _generic_guide, "instruction_retrieval": _instruction_retrieval,
           **INTERVENTIONS, **JUDGING, "cascade": _cascade, **SOLUTION_GUIDANCE}
OPTIONS = frozenset({"k", "mode", "min_similarity", "embedder", "guide", "teacher",
                     "teacher_steps", "handoff", "threshold", "max_interventions", "verdict", "rounds",
                     "stages", "accept", "guide_handoff"})
#: Methods that cannot run without a teacher LM (`make_program(..., teacher=lm)`).
NEEDS_TEACHER = frozenset({"first_step", "on_uncertainty", "teacher_cot", "solution_guidance", "teacher_check",
                           "first_error", "cascade"})


def make_program(method: str, corpus=None, kind: str = "numeric", **options) -> AnsweringProgram:
    """Build the program `method` names; unknown names and misspelt options are refused.

    A variant `method@value` sets that method's main option: `first_step@2` (teacher_steps),
    `on_uncertainty@0.7` and `teacher_check@0.7` (threshold), `first_error@2` (rounds),
    `cascade@0.7` (accept), `instruction_retrieval@reply` (guide_handoff)."""
    if "@" in method:
        method, preset = variant(method)
        options = {**options, **preset}
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    unknown = set(options) - OPTIONS
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; the methods take {', '.join(sorted(OPTIONS))}")
    return METHODS[method](corpus, kind, **options)
