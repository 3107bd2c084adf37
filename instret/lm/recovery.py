"""Get an answer (or a guide) out of a model that breaks the output format, and say how.

Paths, in the order tried:
- `direct`: the program's own output parsed on the first try;
- `lenient_extract`: it did not parse, but the raw text states a final answer (answers only;
  never from a reply cut off by `max_tokens`, whose last number is no answer);
- `fresh_sample`: a new sample parsed. The LM of `dspy.context` is copied with a random
  `rollout_id` and a temperature above 0, so neither DSPy's cache nor a rerun hands back the
  same bad reply; predictors pinned to their own LM (`set_lm`, e.g. a teacher) keep theirs;
- `json_adapter`: another fresh sample through DSPy's JSONAdapter (structured output where the
  server has it) parsed;
- `truncated`: nothing parsed and a reply stopped at `max_tokens`: raise the cap, not the format;
- `failed`: nothing parsed; the item scores wrong, counts as a parse failure, and every raw
  reply is kept (`Attempt.replies`).

The first try runs the adapter as configured, but without the ChatAdapter's own silent
JSONAdapter fallback, so that every extra call is one of the steps above and is counted.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Callable

from instret.lm.calls import Call, CallLog, CallTotals, total_tokens

RECOVERY_PATHS = ("direct", "lenient_extract", "fresh_sample", "json_adapter", "truncated", "failed")
#: Temperature of a fresh sample when the LM's own is unset or 0 (a greedy model repeats its reply).
FRESH_TEMPERATURE = 0.7


@dataclass
class Reply:
    """One try that did not parse: which step, the raw text, why, and whether the cap cut it."""

    step: str
    raw: str | None
    error: str
    truncated: bool = False


@dataclass
class Attempt(CallTotals):
    answer: object
    path: str
    prediction: object = None
    replies: list[Reply] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    @property
    def raw(self) -> str | None:
        """The last reply that did not parse, if any."""
        return self.replies[-1].raw if self.replies else None

    def tokens(self, role: str | None = "student") -> dict[str, int]:
        return total_tokens(self.calls, role)

    @property
    def usage(self) -> dict[str, int]:
        """The student's tokens (cached calls count what they cost when produced)."""
        return self.tokens("student")


def run_with_recovery(call: Callable[[], object], *, log: CallLog | None = None,
                      lenient: Callable[[str], object] | None = None,
                      result: Callable[[object], object] = lambda prediction: prediction) -> Attempt:
    """Run `call()` (a program call under the current `dspy.context`) through the paths above.

    `lenient(raw) -> value or None` reads a value from a reply that did not parse; `result`
    turns a parsed prediction into the attempt's value (and may raise `AdapterParseError`).
    """
    import dspy
    from dspy.adapters import JSONAdapter

    log = log if log is not None else CallLog()
    adapter = _without_silent_fallback(dspy.settings.adapter)
    replies: list[Reply] = []
    steps = [("direct", {"adapter": adapter}), ("fresh_sample", {"adapter": adapter, "fresh": True})]
    if not isinstance(adapter, JSONAdapter):
        steps.append(("json_adapter", {"adapter": JSONAdapter(), "fresh": True}))
    with log.recording():
        for step, how in steps:
            made = len(log.calls)
            overrides = {"adapter": how["adapter"]}
            if how.get("fresh") and dspy.settings.lm is not None:
                overrides["lm"] = fresh_sample_lm(dspy.settings.lm)
            outcome = _try(call, result, overrides)
            if not isinstance(outcome, Reply):
                return Attempt(outcome[0], step, outcome[1], replies, list(log.calls))
            outcome.step = step
            outcome.truncated = any(c.truncated for c in log.calls[made:])
            replies.append(outcome)
            if step == "direct" and lenient is not None and not outcome.truncated:
                value = lenient(outcome.raw) if outcome.raw else None
                if value is not None:
                    return Attempt(value, "lenient_extract", None, replies, list(log.calls))
    path = "truncated" if any(reply.truncated for reply in replies) else "failed"
    return Attempt(None, path, None, replies, list(log.calls))


def answer_with_recovery(program, kind: str, question: str, options: dict | None = None,
                         log: CallLog | None = None) -> Attempt:
    """Run `program(question=..., options=...)` under the current LM, recovering its answer.

    `log` (a `CallLog`, e.g. one that knows the teacher) receives every LM call; the attempt
    carries them too.
    """
    from instret.data.scoring import extract_answer

    return run_with_recovery(lambda: program(question=question, options=options), log=log,
                             lenient=lambda raw: extract_answer(kind, raw, options),
                             result=lambda prediction: _text(prediction.answer))


def fresh_sample_lm(lm):
    """A copy of `lm` whose requests miss DSPy's cache (a random `rollout_id`) and are sampled
    (temperature above 0), so it cannot hand back the reply that just failed."""
    temperature = lm.kwargs.get("temperature")
    return lm.copy(rollout_id=secrets.randbits(48),
                   temperature=temperature if temperature else FRESH_TEMPERATURE)


def _try(call, result, overrides: dict):
    """(value, prediction) when the program's output parsed, else a `Reply` saying why not."""
    import dspy
    from dspy.adapters import JSONAdapter
    from dspy.utils.exceptions import AdapterParseError

    try:
        with dspy.context(**overrides):
            prediction = call()
            return result(prediction), prediction
    except AdapterParseError as error:
        return Reply("", None if error.lm_response is None else str(error.lm_response), parse_error_summary(error))
    except Exception as error:
        # A server that refuses the JSON adapter's response_format fails that step, not the item;
        # any other error (connection, timeout ...) is the caller's to count and retry.
        if not isinstance(overrides.get("adapter"), JSONAdapter) or not _refused_request(error):
            raise
        return Reply("", None, f"the server refused the request: {type(error).__name__}: {_one_line(error)}")


def _refused_request(error: BaseException) -> bool:
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"LMInvalidRequestError", "BadRequestError", "LMUnsupportedFeatureError",
                         "UnsupportedFeatureError", "UnsupportedParamsError"})


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def parse_error_summary(error) -> str:
    """One whole line saying why a reply did not parse, without the reply itself (kept elsewhere)."""
    expected = list(getattr(error.signature, "output_fields", {}) or {})
    parsed = error.parsed_result
    text = str(error)
    field_error = re.match(r"Failed to parse field (\w+)", text)
    if field_error:
        count = re.search(r"\d+ validation errors? for \w+", text)
        why = f"field {field_error.group(1)} does not fit its type" + (f": {count.group(0)}" if count else "")
    elif parsed is not None and parsed:
        why = "missing " + ", ".join(name for name in expected if name not in parsed)
    else:
        why = "none of the fields " + ", ".join(expected) + " found"
    return f"{error.adapter_name} could not parse the reply ({why})"


def _without_silent_fallback(adapter):
    """The configured adapter (DSPy's default: ChatAdapter), minus the ChatAdapter's built-in
    JSONAdapter fallback, which the explicit `json_adapter` step replaces."""
    import copy

    from dspy.adapters import ChatAdapter, JSONAdapter

    if adapter is None:
        return ChatAdapter(use_json_adapter_fallback=False)
    if isinstance(adapter, ChatAdapter) and not isinstance(adapter, JSONAdapter) and adapter.use_json_adapter_fallback:
        adapter = copy.copy(adapter)
        adapter.use_json_adapter_fallback = False
    return adapter


def _text(answer) -> str | None:
    if answer is None:
        return None
    if isinstance(answer, float) and answer.is_integer():
        return str(int(answer))
    return str(answer)
