"""Answering programs: instruction retrieval and the baselines it is measured against.

Every program is called the same way, `program(question, options=None)`, and returns a
prediction whose `answer` is typed by the answer kind (a float, a LaTeX string, a letter).
`make_program` builds one by its name in `METHODS`:

    >>> program = make_program("instruction_retrieval", Corpus.open("corpora/gsm8k"), "numeric", k=2)
    >>> with dspy.context(lm=make_lm("ollama_chat/qwen2.5:3b")):
    ...     program(question="Tom has 3 boxes of 12 pens ...").answer
    36.0

The guided programs share one signature per kind and differ only in the reference text they
render into its `guides` field: retrieved guides, retrieved solved examples, or one generic guide.
"""

from __future__ import annotations

from typing import Sequence

import dspy

from instret.corpus.guides import Guide
from instret.data.questions import MAX_SOLUTION_CHARS, Question
from instret.corpus.retrieval import GuideRetriever, PassageRetriever
from instret.lm.reply_prefix import ContinuedReply, reply_prefix
from instret.signatures.answering import answer_signature, reasoning_field

NO_REFERENCE = "(no reference material matched this question: solve it on your own)"
#: Where instruction retrieval hands the guides to the student (see `InstructionRetrievalQA`).
GUIDE_HANDOFFS = ("prompt", "reply")

GENERIC_GUIDE = Guide(
    title="General problem solving",
    applies_when="Any question; this guide is not specific to one kind of problem.",
    background="Most mistakes come from misreading what is asked or skipping a step, not from missing knowledge.",
    procedure=["Read the question carefully and state exactly what is asked.",
               "List the facts and quantities the question gives.",
               "Recall the rules, definitions or formulas that connect them.",
               "Work step by step, writing down each intermediate result.",
               "Check the result against the question: units, size, and that it answers what was asked.",
               "For multiple choice, rule out options that contradict the facts before choosing."],
    pitfalls=["Answering a different question from the one asked.",
              "Dropping a step or a quantity mentioned in the question.",
              "Arithmetic slips: recompute each step before answering."])


class AnsweringProgram(dspy.Module):
    """Base of the answering programs: the student LM is never part of their saved state.

    The student is chosen at run time (`dspy.context(lm=...)`), so a saved program holds no
    endpoint or key and runs with whichever student loads it, even after `set_lm`.
    """

    def __init__(self, kind: str = "numeric"):
        super().__init__()
        self.kind = kind

    def dump_state(self, json_mode=True):
        state = super().dump_state(json_mode=json_mode)
        for predictor in state.values():
            predictor["lm"] = None
        return state


class ZeroShotQA(AnsweringProgram):
    """The answer alone: no reasoning field, no reference material."""

    def __init__(self, kind: str = "numeric"):
        super().__init__(kind)
        self.answer = dspy.Predict(answer_signature(kind, guided=False))

    def forward(self, question: str, options: dict[str, str] | None = None):
        return self.answer(**answer_inputs(self.kind, question, options))


class ChainOfThoughtQA(AnsweringProgram):
    """Reasoning, then the answer; no reference material."""

    def __init__(self, kind: str = "numeric"):
        super().__init__(kind)
        self.answer = dspy.ChainOfThought(answer_signature(kind, guided=False), rationale_field=reasoning_field())

    def forward(self, question: str, options: dict[str, str] | None = None):
        return self.answer(**answer_inputs(self.kind, question, options))


class GenericGuideQA(AnsweringProgram):
    """One fixed guide for every question, rendered like retrieved guides: does retrieval matter?"""

    def __init__(self, kind: str = "numeric", guide: Guide | None = None):
        super().__init__(kind)
        self.guide = guide if guide is not None else GENERIC_GUIDE
        self.answer = dspy.ChainOfThought(answer_signature(kind, guided=True), rationale_field=reasoning_field())

    def forward(self, question: str, options: dict[str, str] | None = None):
        return self.answer(**answer_inputs(self.kind, question, options), guides=render_guides([self.guide]))


class PassageRAGQA(AnsweringProgram):
    """The k nearest training questions with their worked solutions, as unstructured examples."""

    def __init__(self, retriever: PassageRetriever, kind: str = "numeric"):
        super().__init__(kind)
        self.retrieve = retriever
        self.answer = dspy.ChainOfThought(answer_signature(kind, guided=True), rationale_field=reasoning_field())

    def forward(self, question: str, options: dict[str, str] | None = None):
        found = self.retrieve(query_text(question, options))
        prediction = self.answer(**answer_inputs(self.kind, question, options), guides=render_passages(found.passages))
        return with_references(prediction, found)


class InstructionRetrievalQA(AnsweringProgram):
    """Retrieve the teacher's guides for the question, then reason with them and answer.

    >>> program = InstructionRetrievalQA(GuideRetriever(corpus, k=2, mode="questions"), kind="numeric")

    The prediction carries `reasoning`, `answer`, and `reference_ids` / `reference_scores`
    (the guides it was given; empty when none passed the retriever's `min_similarity`).

    `handoff`: where the guides reach the student. `"prompt"` (default): in its `guides` input.
    `"reply"`: there too, and the student's own reply starts by restating the best guide's
    background and numbered procedure (`guide_opening`), which it then goes on to follow, as
    first_step's teacher steps start the student's reply; it needs a server that continues a
    prefilled reply (llama.cpp, every `local/` model, Ollama). Under the JSON adapter (format
    recovery's last step) a reply cannot be prefilled, and the guides stay in the prompt only.
    """

    def __init__(self, retriever: GuideRetriever, kind: str = "numeric", handoff: str = "prompt"):
        super().__init__(kind)
        if handoff not in GUIDE_HANDOFFS:
            raise ValueError(f"guide handoff must be one of {', '.join(GUIDE_HANDOFFS)}, got {handoff!r}")
        self.retrieve, self.handoff = retriever, handoff
        self.answer = dspy.ChainOfThought(answer_signature(kind, guided=True), rationale_field=reasoning_field())

    def forward(self, question: str, options: dict[str, str] | None = None):
        found = self.retrieve(query_text(question, options))
        inputs = {**answer_inputs(self.kind, question, options), "guides": render_guides(found.guides)}
        if self.handoff == "reply" and found.guides and not isinstance(dspy.settings.adapter, dspy.JSONAdapter):
            with dspy.context(adapter=ContinuedReply(reply_prefix("reasoning", guide_opening(found.guides[0])))):
                return with_references(self.answer(**inputs), found)
        return with_references(self.answer(**inputs), found)


# --- rendering -----------------------------------------------------------------------------

def query_text(question: str, options: dict[str, str] | None = None) -> str:
    """The text to retrieve with: the question as the corpus embedded it (options included)."""
    return Question(question, options=options or None).render()


def render_options(options: dict[str, str] | None) -> str:
    if not options:
        return "(the options are given in the question)"
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def answer_inputs(kind: str, question: str, options: dict[str, str] | None = None) -> dict[str, str]:
    """Signature inputs: options in their own field for multiple choice, else kept with the question."""
    if kind == "choice":
        return {"question": question, "options": render_options(options)}
    return {"question": query_text(question, options)}


#: The last words of `guide_opening`: what the student writes after them is its own.
GUIDE_OPENING_END = "Following it for this question:"


def guide_opening(guide: Guide) -> str:
    """The start of a student's reply that restates `guide`: what to know, then the steps to follow."""
    steps = "\n".join(f"{n}. {step}" for n, step in enumerate(guide.procedure, 1))
    return (f'The guide "{guide.title}" applies. What I need to know: {guide.background.strip()}\n'
            f"Its procedure, which I follow step by step:\n{steps}\n{GUIDE_OPENING_END}")


def render_guides(guides: Sequence[Guide]) -> str:
    """Guides as delimited reference material: '### Guide 1: <title>' then the guide's body."""
    if not guides:
        return NO_REFERENCE
    # Guide.render() opens with the title line; the heading replaces it.
    return "\n\n".join(f"### Guide {n}: {guide.title}\n{guide.render().split(chr(10), 1)[-1]}"
                       for n, guide in enumerate(guides, 1))


def render_passages(questions: Sequence[Question]) -> str:
    """Solved training questions as plain text: the question, then its worked solution (or answer)."""
    if not questions:
        return NO_REFERENCE
    blocks = []
    for n, question in enumerate(questions, 1):
        solved = (f"Worked solution: {question.solution[:MAX_SOLUTION_CHARS]}" if question.solution
                  else f"Answer: {question.answer}")
        blocks.append(f"### Example {n}\nQuestion: {question.render()}\n{solved}")
    return "\n\n".join(blocks)


def with_references(prediction: dspy.Prediction, found: dspy.Prediction) -> dspy.Prediction:
    """The student's prediction plus what it was shown, as a new prediction: mutating the original
    would leak these fields into demos that optimizers bootstrap from the trace."""
    result = dspy.Prediction(**{key: prediction[key] for key in prediction.keys()},
                             reference_ids=list(found.ids), reference_scores=list(found.scores))
    result._completions = prediction._completions
    return result


# --- registry ------------------------------------------------------------------------------
