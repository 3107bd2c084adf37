"""Solution Guidance (SG): a guide model plans, any small model solves (seed paper 2, Bi et al. 2025).

`SolutionGuidanceQA` has two predictors, each with its own LM:

| predictor | signature | LM |
|---|---|---|
| `plan` | `guidance_signature(kind)`: question → guidance (what is asked, what is given, numbered sub-problems; no numbers computed) | the guide model: a large teacher, or a small SG-fine-tuned one |
| `solve` | `answer_with_guidance_signature(kind)`: question + guidance → reasoning, typed answer | the solver: `solver=` or, when not given, the LM of `dspy.context` |

    >>> program = make_program("solution_guidance", kind="numeric", teacher=make_lm("local/qwen2.5-coder-1.5b"))
    >>> with dspy.context(lm=make_lm("local/qwen2.5-coder-0.5b")):
    ...     prediction = program(question="Natalia sold clips to 48 of her friends ...")
    >>> prediction.guidance, prediction.answer, prediction.guide_tokens, prediction.solver_tokens

Both models can be given as model strings (`SolutionGuidanceQA("numeric", guide="local/...",
solver="ollama_chat/...")`). Saved state holds no LM (no endpoint, no key), and `load` keeps
the LMs the program was built with, so a saved program runs under other models.
"""

from __future__ import annotations

import dspy
from dspy.utils.exceptions import AdapterParseError

from instret.data.guidance import plan_only
from instret.lm.calls import CallLog
from instret.lm.spec import DEFAULT_MAX_TOKENS
from instret.programs.answering import answer_inputs
from instret.programs.intervention import TwoModelProgram, extended, raw_text, teacher_lm
from instret.signatures.answering import reasoning_field
from instret.signatures.solution_guidance import (answer_with_guidance_signature, guidance_from_solution_signature,
                                                  guidance_signature)


class SolutionGuidanceQA(TwoModelProgram):
    """The guide model writes solution guidance; the solver answers from the question and it.

    The prediction carries `guidance`, the solver's `reasoning` and typed `answer`, and each
    model's tokens: `guide_tokens` and `solver_tokens` ({"prompt_tokens", "completion_tokens"},
    a reply served from DSPy's cache counted at what it cost when it was produced).
    """

    def __init__(self, kind: str = "numeric", guide=None, solver=None):
        super().__init__(kind)
        self.plan = dspy.Predict(guidance_signature(kind))
        self.plan.set_lm(teacher_lm(guide, "solution_guidance"))
        self.solve = dspy.ChainOfThought(answer_with_guidance_signature(kind), rationale_field=reasoning_field())
        if solver is not None:
            self.solve.set_lm(teacher_lm(solver, "solution_guidance"))

    def forward(self, question: str, options: dict[str, str] | None = None):
        inputs = answer_inputs(self.kind, question, options)
        guidance, guide_tokens, written = self.write_guidance(inputs)
        with CallLog().recording() as solver_log:
            prediction = self.solve(**inputs, guidance=guidance)
        return extended(prediction, guidance=guidance, written_guidance=written, guide_tokens=guide_tokens,
                        solver_tokens=solver_log.tokens())

    def dump_state(self, json_mode=True):
        # The LMs are detached while dumping, not dumped and then blanked: an LM whose engine
        # cannot be serialized (a custom or scripted engine) must not stop a save either.
        pinned = {name: predictor.lm for name, predictor in self.named_predictors()}
        try:
            for _, predictor in self.named_predictors():
                predictor.lm = None
            return super().dump_state(json_mode=json_mode)
        finally:
            for name, predictor in self.named_predictors():
                predictor.lm = pinned[name]

    def write_guidance(self, inputs: dict, worked_solution: str | None = None,
                       **config) -> tuple[str, dict[str, int], str]:
        """(guidance, the guide model's tokens, what it wrote). The guidance is what it wrote up
        to where it began to compute (`plan_only`): the solver gets a plan, never a solution.
        `worked_solution` (SG data) is shown to the guide model through
        `guidance_from_solution_signature`, never to the solver. `config` adds per-call settings
        (SG data samples with `temperature` and a `rollout_id`). A reply that breaks the
        adapter's format is still guidance: its own text (field markers removed) is used, not
        retried."""
        plan, sent = self.plan, inputs
        if worked_solution:  # a one-off predictor: it is not part of the program's saved state
            plan = dspy.Predict(guidance_from_solution_signature(self.kind))
            plan.set_lm(self.plan.lm)
            sent = {**inputs, "worked_solution": worked_solution}
        with CallLog().recording() as log:
            try:
                written = plan(**sent, config={**guidance_config(self.plan.lm), **config}).guidance or ""
            except AdapterParseError as error:
                written = raw_text(error)
        written = written.strip()
        given = "\n".join(inputs.values())  # the question, and the options where they have their own field
        return plan_only(written, given, kind=self.kind), log.tokens(), written


def guidance_config(lm) -> dict:
    """Per-call settings of the guide model: its reply is capped at the guidance role's
    `max_tokens` (`DEFAULT_MAX_TOKENS["guidance"]`) unless its LM sets a smaller cap."""
    cap = DEFAULT_MAX_TOKENS["guidance"]
    own = (getattr(lm, "kwargs", None) or {}).get("max_tokens")
    return {"max_tokens": min(cap, int(own)) if own else cap}


def _solution_guidance(corpus, kind, teacher=None, **_):
    return SolutionGuidanceQA(kind, guide=teacher)


FACTORIES = {"solution_guidance": _solution_guidance}

__all__ = ["SolutionGuidanceQA", "guidance_config"]
