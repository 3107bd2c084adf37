"""Get an answer out of a small model that breaks the output format, and say how.

Paths, in the order tried:
- `direct`: the program's own output parsed on the first LM call;
- `adapter_fallback`: DSPy's ChatAdapter failed and its JSONAdapter fallback parsed it;
- `lenient_extract`: both adapters failed, but the raw text still states a final answer;
- `format_retry`: one more call, with a reminder of the format appended to the question;
- `failed`: nothing usable; the item scores wrong and counts as a parse failure.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from dspy.utils.callback import BaseCallback

RECOVERY_PATHS = ("direct", "adapter_fallback", "lenient_extract", "format_retry", "failed")
FORMAT_REMINDER = ("\n\n(Reply in exactly the requested format: every output field under its own "
                   "[[ ## field ## ]] header, the answer field holding only the final answer.)")


@dataclass
class Attempt:
    answer: str | None
    path: str
    prediction: object = None
    raw: str | None = None
    lm_calls: int = 0
    usage: dict = field(default_factory=dict)


class _CallCounter(BaseCallback):
    """A DSPy callback counting this thread's LM calls (`dspy.context` is thread-local)."""

    def __init__(self):
        self.calls = 0
        self._lock = threading.Lock()

    def on_lm_start(self, call_id, instance, inputs):
        with self._lock:
            self.calls += 1


def answer_with_recovery(program, kind: str, question: str, options: dict | None = None) -> Attempt:
    """Run `program(question=..., options=...)` under the current LM, recovering its answer."""
    import dspy
    from dspy.utils.exceptions import AdapterParseError
    from dspy.utils.usage_tracker import track_usage

    from instret.data.scoring import extract_answer

    counter = _CallCounter()
    callbacks = [*dspy.settings.get("callbacks", []), counter]
    with dspy.context(callbacks=callbacks), track_usage() as tracker:
        try:
            prediction = program(question=question, options=options)
            path = "direct" if counter.calls <= 1 else "adapter_fallback"
            return Attempt(_text(prediction.answer), path, prediction, lm_calls=counter.calls,
                           usage=_tokens(tracker))
        except AdapterParseError as error:
            raw = str(error.lm_response)
        answer = extract_answer(kind, raw, options)
        if answer is not None:
            return Attempt(answer, "lenient_extract", raw=raw, lm_calls=counter.calls, usage=_tokens(tracker))
        try:
            prediction = program(question=question + FORMAT_REMINDER, options=options)
            return Attempt(_text(prediction.answer), "format_retry", prediction, lm_calls=counter.calls,
                           usage=_tokens(tracker))
        except AdapterParseError as error:
            raw = str(error.lm_response)
            answer = extract_answer(kind, raw, options)
            path = "format_retry" if answer is not None else "failed"
            return Attempt(answer, path, raw=raw, lm_calls=counter.calls, usage=_tokens(tracker))


def _text(answer) -> str | None:
    if answer is None:
        return None
    if isinstance(answer, float) and answer.is_integer():
        return str(int(answer))
    return str(answer)


def _tokens(tracker) -> dict:
    totals = {"prompt_tokens": 0, "completion_tokens": 0}
    for usage in tracker.get_total_tokens().values():
        for key in totals:
            totals[key] += int(usage.get(key) or 0)
    return totals
