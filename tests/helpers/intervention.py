"""A scripted teacher and student for the teacher-intervention tests: the loopback server's
responder (`Script`), its log-probabilities, and helpers that read DSPy's prompts."""

from __future__ import annotations

import math
import re

FAST = {"cache": False, "num_retries": 0}
QUESTION = "Tom has 3 boxes of 12 pens and gives away 5 pens. How many pens are left?"
TEACHER_SOLUTION = ["Step 1: Tom starts with 3 * 12 = 36 pens.", "Step 2: He gives away 5, so 36 - 5 = 31.",
                    "Step 3: The final answer is 31."]
MARKER_TOKENS = {"[", "]", "#", "next_step", "completed"}  # what `[[ ## next_step ## ]]` is cut into


def field(text: str, name: str) -> str | None:
    """One input field's value from a DSPy ChatAdapter user message."""
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?:\n\n\[\[ ## |\n\nRespond with|$)", text, re.S)
    return match.group(1) if match else None


def reply(**fields) -> str:
    return "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in fields.items()) + "\n\n[[ ## completed ## ]]"


def number_of_next_step(request) -> int:
    opened = open_marker(request)
    if opened:
        return opened
    return sum(1 for line in given_steps(request).splitlines() if line.startswith("Step ")) + 1


def open_marker(request) -> int | None:
    """n, where the prefilled reply ends with the marker `Step n:` of the step to write."""
    found = re.search(r"\nStep (\d+):$", request.body["messages"][-1]["content"]) if continues(request) else None
    return int(found.group(1)) if found else None


def continues(request) -> bool:
    """Whether the request (as the responder sees it, or as recorded) ends with a prefilled reply."""
    return request.body["messages"][-1]["role"] == "assistant"


def given_steps(request) -> str:
    """The steps a request hands over: its `steps_so_far` input, or the start of the reply."""
    last = request.body["messages"][-1]["content"]
    if continues(request):  # without the open marker of the step to write
        return re.sub(r"Step \d+:$", "", last.removeprefix("[[ ## reasoning ## ]]\n")).strip()
    return field(last, "steps_so_far") or ""


class Script:
    """The teacher writes a whole solution when asked for first steps (the server's `stop` cuts it),
    and `teacher fix n` when asked for step n; the student drafts `student step n` (the final one
    states an answer) and always answers 31. `confidence[n]` is the probability of every token
    of the student's step n; the adapter's header tokens get probability 1."""

    def __init__(self, confidence: dict[int, float] | None = None, final_step: int = 5):
        self.confidence, self.final_step = confidence or {}, final_step
        self.silent: set[int] = set()  # steps whose draft the student stops at once (reply handoff)
        self.unscored: set[int] = set()  # steps whose draft comes back without log-probabilities

    def __call__(self, request) -> str:
        if "`steps`" in request.system:
            return reply(steps="\n".join(TEACHER_SOLUTION))
        if continues(request):  # handoff="reply": the continuation alone, as vLLM returns it
            if not any(stop.startswith("Step ") for stop in request.body.get("stop") or []):
                return "Step 9: student finishes.\n\n[[ ## answer ## ]]\n31\n\n[[ ## completed ## ]]"
            n = open_marker(request)  # the reply ends with `Step n:`; the model writes the rest of the step
            if request.model == "teacher":
                return f" teacher fix {n}\nStep {n + 1}: more"
            if n in self.silent:
                return f"\nStep {n + 1}: runaway"
            if n >= self.final_step:
                return " The final answer is 31.\n\n[[ ## answer ## ]]\n31\n\n[[ ## completed ## ]]"
            return f" student step {n}\nStep {n + 1}: runaway"
        if "`next_step`" in request.system:
            n = number_of_next_step(request)
            if request.model == "teacher":
                return reply(next_step=f"Step {n}: teacher fix {n}")
            text = "The final answer is 31." if n >= self.final_step else f"student step {n}"
            return reply(next_step=f"Step {n}: {text}\nStep {n + 1}: runaway")
        return reply(reasoning="Step 9: student finishes.", answer="31")

    def logprob(self, token: str, request) -> float | None:
        if number_of_next_step(request) in self.unscored:
            return None
        if token.strip() in MARKER_TOKENS:
            return 0.0
        return math.log(self.confidence.get(number_of_next_step(request), 0.99))


CONTINUATION = "Step 2: He gives away 5, so 36 - 5 = 31.\n\n[[ ## answer ## ]]\n31\n\n[[ ## completed ## ]]"


def continuing(script, echo_prefix: bool):
    """The script, plus a student that continues a prefilled reply: returning the continuation
    alone (as vLLM does) or the prefix and the continuation (as llama.cpp's server does)."""
    def respond(request):
        last = request.messages[-1]
        if last["role"] != "assistant":
            return script(request)
        return (last["content"] if echo_prefix else "") + CONTINUATION
    return respond
