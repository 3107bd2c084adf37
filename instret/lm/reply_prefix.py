"""A reply that starts with given text: a model continues steps it did not write, in its own reply.

`ContinuedReply(prefix)` is DSPy's ChatAdapter with one change: the messages it sends end with an
assistant message holding `prefix`, which the server continues instead of starting a new reply.
The reply is parsed as prefix + continuation, so typed fields, format recovery and compiling work
as for any ChatAdapter call, and the prefix is counted as prompt tokens, which is what it costs.

    >>> prefix = reply_prefix("reasoning", "Step 1: In May she sold 48 / 2 = 24 clips.")
    >>> with dspy.context(adapter=ContinuedReply(prefix)):
    ...     cot(question=...)          # the reply goes on from "Step 1: ..." to its own answer

Which servers continue a final assistant message: llama.cpp's server (instret's `local/` engine,
measured: it returns prefix + continuation) and Ollama's `/api/chat` (the continuation alone,
ollama/ollama#6778); vLLM and SGLang only with their `continue_final_message` option. A server
that instead starts a new reply is caught, not parsed as if it had continued: `PrefillIgnored`
says to pass the steps in the prompt instead.
"""

from __future__ import annotations

from dspy.adapters import ChatAdapter
from dspy.utils.exceptions import AdapterParseError


class PrefillIgnored(RuntimeError):
    """The server started a new reply instead of continuing the prefilled one."""


def reply_prefix(field: str, text: str = "") -> str:
    """The start of a ChatAdapter reply whose output `field` begins with `text` (may be empty)."""
    return f"[[ ## {field} ## ]]\n" + (f"{text.strip()}\n" if text.strip() else "")


class ContinuedReply(ChatAdapter):
    """ChatAdapter whose reply starts with `prefix` (see the module docstring). It never falls back
    to the JSON adapter on its own: a JSON reply cannot be prefilled this way.

    `partial=True` accepts a reply that stops before its last output fields (a model stopped after
    one more step): the fields it did not reach are None."""

    def __init__(self, prefix: str, partial: bool = False, **kwargs):
        super().__init__(use_json_adapter_fallback=False, **kwargs)
        self.prefix, self.partial = prefix, partial

    def format(self, signature, demos, inputs):
        return [*super().format(signature, demos, inputs), {"role": "assistant", "content": self.prefix}]

    def parse(self, signature, completion: str):
        try:
            return super().parse(signature, self.whole_reply(completion))
        except AdapterParseError as error:
            reached = error.parsed_result
            if not (self.partial and isinstance(reached, dict) and reached):
                raise
            return {name: reached.get(name) for name in signature.output_fields}

    def whole_reply(self, completion: str) -> str:
        """prefix + continuation, whether the server returned the continuation alone or with the prefix."""
        completion = completion or ""
        if completion.startswith(self.prefix.rstrip()):  # the server echoed the prefix (llama.cpp)
            return completion
        header = self.prefix.split("\n", 1)[0]
        if completion.lstrip().startswith(header):
            raise PrefillIgnored(
                f"the server started a new reply ({completion.lstrip()[:60]!r}...) instead of continuing the one "
                f"instret began; it does not support a prefilled assistant message. Use --handoff prompt "
                f"(handoff='prompt'), which passes the given steps in the prompt.")
        return self.prefix + completion


__all__ = ["ContinuedReply", "PrefillIgnored", "reply_prefix"]
