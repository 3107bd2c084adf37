"""Right-time teacher intervention: when a large teacher helps a small student, and how much.

- `quest_cot` (`QuestCoTQA`): no teacher; the student first asks itself the question that gets it
  started, then solves.
- `first_step` (`FirstStepQA`): the teacher writes the first k steps and is stopped after k; the
  student continues from them and answers.
- `on_uncertainty` (`OnUncertaintyQA`): the student writes one step at a time with token
  log-probabilities; the teacher rewrites a step whose mean token probability is under τ, at
  most m times per question; the student answers.
- `teacher_cot` (`TeacherCoTQA`): the teacher reasons and answers alone: the ceiling.

    >>> teacher = make_lm("local/qwen2.5-coder-1.5b")
    >>> program = make_program("first_step", kind="numeric", teacher=teacher, teacher_steps=2)
    >>> with dspy.context(lm=make_lm("local/qwen2.5-coder-0.5b")):   # the student
    ...     program(question="Tom has 3 boxes of 12 pens ...").answer

The student is the LM of `dspy.context`; the teacher is pinned on its own predictors with
`set_lm` at construction. Saved state never holds an LM (no endpoint, no key), and loading
state keeps the teacher the program was built with.

**How a model continues from steps it did not write** (`handoff`, for `first_step` and
`on_uncertainty`):
- `"reply"` (default): the steps begin the model's own reply. It gets `cot`'s exact prompt and an
  assistant message holding the steps, which the server continues
  (`instret.lm.reply_prefix.ContinuedReply`), as in the First-Step and SMART papers. On 20 GSM8K
  questions this lifted first_step from 1 and 3 right (k = 1, 2) to 3 and 7
  (`benchmarks/results/intervention.md`). It needs a server that continues a prefilled reply
  (llama.cpp's, so every `local/` model, and Ollama's); one that starts a new reply instead raises
  `PrefillIgnored`. Where a reply cannot be prefilled (format recovery's JSON adapter), the final
  answer gets the steps in its prompt.
- `"prompt"`: the steps go into the prompt as the `steps_so_far` input of a typed signature
  ("continue from these steps"). Works with every server.
Either way the model reads the steps as prompt tokens, and they are counted as such.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import dspy
from dspy.utils.exceptions import AdapterParseError

from instret.lm.reply_prefix import ContinuedReply, reply_prefix
from instret.lm.steps import (InterventionPolicy, LogprobsUnavailable, UncertaintyPolicy, is_final,
                              mean_probability, render_steps, require_logprobs, split_steps, step_config,
                              step_marker, token_logprobs)
from instret.programs.answering import AnsweringProgram, answer_inputs
from instret.signatures.answering import answer_signature, reasoning_field
from instret.signatures.intervention import (ContinueSolution, NextStep, QuestionFirstSolution, WriteFirstSteps,
                                             intervention_signature)

#: How the student receives steps it did not write (see the module docstring).
HANDOFFS = ("prompt", "reply")
#: Methods whose student must return token log-probabilities.
NEEDS_LOGPROBS = frozenset({"on_uncertainty"})


@dataclass
class WrittenSteps:
    """What step-by-step writing produced: the steps, the student's confidence in each draft,
    and the numbers of the steps the teacher rewrote."""

    steps: list[str] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    rewritten: list[int] = field(default_factory=list)
    answered: dspy.Prediction | None = None  # the student's reply, where it went on to the answer


class TwoModelProgram(AnsweringProgram):
    """An answering program with teacher predictors. They keep the very teacher object they were
    given through `load` (saved state holds no LM) and through the copies optimizers make
    (`reset_copy` would clear it; a deep copy would count its calls as another model's)."""

    def load_state(self, state, **kwargs):
        pinned = [predictor.lm for _, predictor in self.named_predictors()]
        super().load_state(state, **kwargs)
        return self._pinned_like(self, pinned)

    def deepcopy(self):
        return self._pinned_like(super().deepcopy())

    def reset_copy(self):
        return self._pinned_like(super().reset_copy())

    def _pinned_like(self, program, pinned=None):
        pinned = pinned if pinned is not None else [predictor.lm for _, predictor in self.named_predictors()]
        for (_, predictor), lm in zip(program.named_predictors(), pinned):
            predictor.lm = lm
        return program


class QuestCoTQA(AnsweringProgram):
    """QuestCoT: the student first writes the question it must answer to get started, then
    solves from it, in one reply; no teacher."""

    def __init__(self, kind: str = "numeric"):
        super().__init__(kind)
        self.answer = dspy.Predict(intervention_signature(QuestionFirstSolution, kind))

    def forward(self, question: str, options: dict[str, str] | None = None):
        return self.answer(**answer_inputs(self.kind, question, options))


class FirstStepQA(TwoModelProgram):
    """The teacher writes the first `teacher_steps` steps and is stopped there (stop sequence
    `Step k+1:` and a token cap); the student continues from exactly those steps and answers,
    reading them in its prompt or continuing them in its own reply (`handoff`, see above).

    The prediction's `reasoning` holds the teacher's steps followed by the student's;
    `teacher_steps` holds the teacher's alone.
    """

    def __init__(self, kind: str = "numeric", teacher=None, teacher_steps: int = 1, handoff: str = "reply"):
        super().__init__(kind)
        if int(teacher_steps) < 1:
            raise ValueError(f"teacher_steps must be 1 or more, got {teacher_steps}")
        self.teacher_steps, self.handoff = int(teacher_steps), checked_handoff(handoff)
        self.lead = dspy.Predict(intervention_signature(WriteFirstSteps, kind))
        self.lead.set_lm(teacher_lm(teacher, "first_step"))
        self.answer = dspy.Predict(intervention_signature(ContinueSolution, kind))
        if handoff == "reply":
            self.continuation = dspy.Predict(cot_signature(kind))

    def forward(self, question: str, options: dict[str, str] | None = None):
        inputs = answer_inputs(self.kind, question, options)
        written = replied(self.lead, "steps", **inputs, config=step_config(1, self.teacher_steps, self.lead.lm))
        given = render_steps(split_steps(written)[:self.teacher_steps])  # a server that ignored `stop` is cut here
        return extended(finished_from(self, inputs, given), teacher_steps=given)


class OnUncertaintyQA(TwoModelProgram):
    """SMART-style intervention: the student writes one step at a time with token
    log-probabilities; `policy` (default `UncertaintyPolicy()`: mean token probability under
    0.9, at most 3 rewrites) decides which steps the teacher rewrites; the student goes on from
    the corrected steps and answers. At most `max_steps` steps are written. With `handoff="reply"`
    student and teacher both continue one reply (cot's prompt, the steps so far as its start).

    The prediction adds `step_confidences` (the student's score of each step it drafted, None
    when its reply did not parse), `rewritten_steps` (step numbers the teacher wrote) and
    `interventions`. A student backend without log-probabilities raises `LogprobsUnavailable`.
    """

    scores_field = "step_confidences"  # the prediction field of each draft's score

    def __init__(self, kind: str = "numeric", teacher=None, policy: InterventionPolicy | None = None,
                 max_steps: int = 12, handoff: str = "reply"):
        super().__init__(kind)
        self.policy = policy if policy is not None else UncertaintyPolicy()
        self.max_steps, self.handoff = int(max_steps), checked_handoff(handoff)
        writes = cot_signature(kind) if handoff == "reply" else intervention_signature(NextStep, kind)
        self.step = dspy.Predict(writes)
        self.rewrite = dspy.Predict(writes)
        self.rewrite.set_lm(teacher_lm(teacher, "on_uncertainty"))
        self.answer = dspy.Predict(intervention_signature(ContinueSolution, kind))
        if handoff == "reply":
            self.continuation = dspy.Predict(cot_signature(kind))

    def forward(self, question: str, options: dict[str, str] | None = None):
        inputs = answer_inputs(self.kind, question, options)
        written = self.write_steps(inputs)
        prediction = written.answered or finished_from(self, inputs, render_steps(written.steps))
        return extended(prediction, **{self.scores_field: written.confidences}, rewritten_steps=written.rewritten,
                        interventions=len(written.rewritten))

    def write_steps(self, inputs: dict) -> WrittenSteps:
        """The student drafts one step at a time; the policy hands the unsure ones to the teacher,
        whose step replaces the draft in every later prompt. Ends at a step stating the final
        answer, an empty step, a student reply that reached its answer, or `max_steps`."""
        student = self.step.lm or dspy.settings.lm
        self.check_student(student)
        written = WrittenSteps()
        for number in range(1, self.max_steps + 1):
            scored_before = any(score is not None for score in written.confidences)
            step, confidence, reply = self.drafted_step(student, inputs, written.steps, number, scored_before)
            written.confidences.append(confidence)
            if self.policy.should_intervene(confidence, len(written.rewritten)):
                written.rewritten.append(number)
                step, _ = self.next_step(self.rewrite, inputs, written.steps, step_config(number, 1, self.rewrite.lm))
                reply = None  # the student's answer, if its draft had one, went with the draft
            if step:
                written.steps.append(step)
            if reply is not None and reply.get("answer") is not None:  # the student went on to its answer
                written.answered = reply
                break
            if not step or is_final(step):
                break
        return written

    def next_step(self, predictor, inputs: dict, steps: list[str], config: dict) -> tuple[str, dspy.Prediction | None]:
        return write_step(predictor, self.handoff, inputs, steps, config)

    def check_student(self, student) -> None:
        """Refuse, before any call, a student backend known to return no log-probabilities."""
        require_logprobs(student)

    def drafted_step(self, student, inputs: dict, steps: list[str], number: int, scored_before: bool = False):
        """The student's next step, its mean token probability (None: unscored), its reply (None: it did
        not parse). A marker the reply began with is not the student's: its tokens are not scored.
        `scored_before`: an earlier step of this question had log-probabilities, so the backend returns them."""
        step, reply = self.next_step(self.step, inputs, steps, step_config(number, 1, student, logprobs=True))
        scored = step.removeprefix(step_marker(number)) if self.handoff == "reply" else step
        if reply is None:
            return step, None, None
        if not scored.strip():  # stopped at once: no token of its own to score
            return step, None, reply
        logprobs = reply.get("logprobs")
        if "logprobs" in reply:  # read once, here: kept, they would ride into bootstrapped demos and saved state
            del reply["logprobs"]
        if not token_logprobs(logprobs) and scored_before:
            # llama.cpp drops the scores of tokens it held back as a possible start of a stop
            # sequence (a lone `[` before `[[ ## completed ## ]]`): this step alone is unscored.
            return step, None, reply
        if not token_logprobs(logprobs):  # absent, or DSPy's empty list for a backend without them
            raise LogprobsUnavailable(
                f"{getattr(student, 'model', student)} returned no token log-probabilities, which on_uncertainty "
                f"needs from the student. Serve it through an OpenAI-compatible server that returns them "
                f"(a local/ model, vLLM, llama.cpp, Ollama's /v1 path).")
        return step, mean_probability(logprobs, scored), reply


class TeacherCoTQA(TwoModelProgram):
    """The teacher alone, reasoning then answering, with `cot`'s prompt: the ceiling."""

    def __init__(self, kind: str = "numeric", teacher=None):
        super().__init__(kind)
        self.answer = dspy.ChainOfThought(answer_signature(kind, guided=False), rationale_field=reasoning_field())
        self.answer.set_lm(teacher_lm(teacher, "teacher_cot"))

    def forward(self, question: str, options: dict[str, str] | None = None):
        return self.answer(**answer_inputs(self.kind, question, options))


# --- helpers -------------------------------------------------------------------------------

def checked_handoff(handoff: str) -> str:
    if handoff not in HANDOFFS:
        raise ValueError(f"handoff must be one of {', '.join(HANDOFFS)}, got {handoff!r}")
    return handoff


def cot_signature(kind: str) -> type[dspy.Signature]:
    """`cot`'s own signature (reasoning, then the typed answer): a reply that continues given steps
    has `cot`'s prompt word for word."""
    return answer_signature(kind, guided=False).prepend("reasoning", reasoning_field(), type_=str)


def write_step(predictor, handoff: str, inputs: dict, steps: list[str],
               config: dict) -> tuple[str, dspy.Prediction | None]:
    """The step `predictor` writes after `steps`, and its reply (None: the reply did not parse):
    in its prompt's `steps_so_far`, or continuing a reply that starts with them and with the
    next step's marker (`cot`'s prompt does not ask for numbered steps: without the marker a
    small model writes its whole solution as one step, and the stop never comes)."""
    given = render_steps(steps) if steps else ""
    marker = step_marker(len(steps) + 1) if handoff == "reply" else ""
    try:
        if handoff == "prompt":
            reply = predictor(**inputs, steps_so_far=render_steps(steps), config=config)
            return leading_step(reply.next_step), reply
        with dspy.context(adapter=ContinuedReply(reply_prefix("reasoning", given) + marker, partial=True)):
            reply = predictor(**inputs, config=config)
        step = leading_step(after(given, reply.reasoning))
    except AdapterParseError as error:
        step, reply = leading_step(after(given, raw_text(error))), None
    # The marker was instret's, not the model's: a reply that stopped right after it wrote no step.
    return ("" if not step.removeprefix(marker).strip() else step), reply


def finished_from(program, inputs: dict, given: str) -> dspy.Prediction:
    """The student's solution and answer going on from the `given` steps, by the program's
    `handoff`; its `reasoning` starts with them. A JSON reply cannot be prefilled (format
    recovery's last step), so under the JSON adapter the steps go in the prompt."""
    if program.handoff == "reply" and not isinstance(dspy.settings.adapter, dspy.JSONAdapter):
        with dspy.context(adapter=ContinuedReply(reply_prefix("reasoning", given))):
            return program.continuation(**inputs)
    prediction = program.answer(**inputs, steps_so_far=given)
    return extended(prediction, reasoning=joined(given, prediction.reasoning))


def after(given: str, text: str | None) -> str:
    """What `text` (a reply that starts with the `given` steps) adds to them."""
    text, given = (text or "").strip(), given.strip()
    return text[len(given):] if given and text.startswith(given) else text


def teacher_lm(teacher, method: str):
    """The teacher as a `dspy.LM`: given one, or built from a model string or `ModelSpec`."""
    if teacher is None:
        raise ValueError(f"{method} needs a teacher: make_program({method!r}, ..., teacher=make_lm(MODEL)), "
                         f"or --teacher MODEL on the command line")
    if isinstance(teacher, dspy.BaseLM):
        return teacher
    from instret.lm.models import make_lm

    return make_lm(teacher)


def replied(predictor, field: str, **kwargs) -> str:
    """One text output of a step predictor; if its reply breaks the adapter's format, the
    reply's own text (markers removed): steps are free text, and they are not worth a retry."""
    try:
        return predictor(**kwargs)[field] or ""
    except AdapterParseError as error:
        return raw_text(error)


def raw_text(error: AdapterParseError) -> str:
    return re.sub(r"\[\[ ## \w+ ## \]\]", "", str(error.lm_response or "")).strip()


def leading_step(text: str | None) -> str:
    steps = split_steps(text)
    return steps[0] if steps else ""


def joined(steps: str, rest: str | None) -> str:
    return f"{steps}\n{rest}".strip() if rest else steps


def extended(prediction: dspy.Prediction, **fields) -> dspy.Prediction:
    """The final predictor's prediction plus the program's own fields, as a new prediction (as
    `with_references` does: mutating the original would leak them into bootstrapped demos)."""
    result = dspy.Prediction(**{**{key: prediction[key] for key in prediction.keys()}, **fields})
    result._completions = prediction._completions
    return result


# --- factories (registered in programs/methods.py METHODS) -----------------------------------

def _quest_cot(corpus, kind, **_):
    return QuestCoTQA(kind)


def _first_step(corpus, kind, teacher=None, teacher_steps=None, handoff=None, **_):
    return FirstStepQA(kind, teacher=teacher, teacher_steps=1 if teacher_steps is None else teacher_steps,
                       handoff=handoff or "reply")


def _on_uncertainty(corpus, kind, teacher=None, threshold=None, max_interventions=None, handoff=None, **_):
    default = UncertaintyPolicy()
    policy = UncertaintyPolicy(default.threshold if threshold is None else float(threshold),
                               default.max_interventions if max_interventions is None else int(max_interventions))
    return OnUncertaintyQA(kind, teacher=teacher, policy=policy, handoff=handoff or "reply")


def _teacher_cot(corpus, kind, teacher=None, **_):
    return TeacherCoTQA(kind, teacher=teacher)


FACTORIES = {"quest_cot": _quest_cot, "first_step": _first_step, "on_uncertainty": _on_uncertainty,
             "teacher_cot": _teacher_cot}
