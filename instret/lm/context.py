"""How long a program's prompts are, and the Ollama window (`num_ctx`) that holds them.

Ollama gives every request a window of `num_ctx` tokens (2048 unless told otherwise) and cuts a
longer prompt from the front without an error: the instructions go first, and the student
answers something else. So measure the prompts the program really sends (guides + demos +
question), then ask for a window that holds the longest one plus the answer::

    >>> prompts = program_prompts(program, [{"question": q.text, "options": q.options} for q in questions])
    >>> spec = fit_num_ctx(settings.student, prompts, max_tokens=512)  # warns if a prompt cannot fit
    >>> student = make_lm(spec)

Tokens are estimated from characters, not with a tokenizer: each Ollama model has its own
(litellm's `token_counter` would count with OpenAI's cl100k), none can be downloaded offline, and
math text is dense for the common ones: on the bundled GSM8K sample cl100k counts 3.3 characters
per token, and tokenizers that split every digit (Qwen2.5, Llama 2, Mistral) about 2.9. Counting
2.5 characters per token stays above both; a window too large only costs memory, one too small
silently loses the prompt's start.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from instret.lm.spec import ModelSpec

logger = logging.getLogger(__name__)

CHARS_PER_TOKEN = 2.5
MESSAGE_OVERHEAD = 8  # template tokens around each chat message (role markers, separators)
MIN_NUM_CTX = 2048  # Ollama's own default; never ask for less
DEFAULT_ANSWER_TOKENS = 1024  # room kept for the answer when neither max_tokens nor the spec sets one


class ContextWarning(UserWarning):
    """A prompt would not fit the model's context window."""


@dataclass(frozen=True)
class ContextPlan:
    """What `plan_num_ctx` decided. `num_ctx` is None for a backend that has no such option."""

    num_ctx: int | None
    longest_prompt: int  # estimated tokens
    max_tokens: int
    context_length: int | None  # the model's trained window from /api/show; None when unknown
    warnings: list[str] = field(default_factory=list)


def estimate_tokens(prompt: "str | Sequence[dict] | int") -> int:
    """Estimated tokens of a prompt: a string, chat messages (`{"role", "content"}`) or a known count."""
    if isinstance(prompt, int):
        return prompt
    if isinstance(prompt, str):
        return math.ceil(len(prompt) / CHARS_PER_TOKEN)
    return sum(MESSAGE_OVERHEAD + estimate_tokens(_text(message.get("content"))) for message in prompt)


def plan_num_ctx(spec: ModelSpec, prompts_or_token_counts: Iterable, max_tokens: int | None = None, *,
                 context_length: int | None = None) -> ContextPlan:
    """The smallest power of two ≥ 2048 holding the longest prompt plus `max_tokens`, capped by
    the model's trained window (asked of the Ollama server unless `context_length` is given).

    A larger `num_ctx` already on the spec is kept. Prompts that cannot fit even the model's
    whole window, with room for the answer, are listed in `warnings`.
    """
    counts = [estimate_tokens(prompt) for prompt in prompts_or_token_counts]
    longest = max(counts, default=0)
    answer = max_tokens or spec.max_tokens or DEFAULT_ANSWER_TOKENS
    if spec.backend != "ollama":  # other servers refuse an over-long prompt with an error instead
        return ContextPlan(None, longest, answer, context_length)
    if context_length is None:
        context_length = ollama_context_length(spec)
    num_ctx = max(MIN_NUM_CTX, 1 << math.ceil(math.log2(max(longest + answer, 1))), spec.num_ctx or 0)
    problems = []
    if context_length:
        num_ctx = min(num_ctx, context_length)
        too_long = [count for count in counts if count + answer > context_length]
        if too_long:
            problems.append(
                f"{len(too_long)} of {len(counts)} prompts for {spec.model} need about {max(too_long)} + {answer} "
                f"tokens (prompt + max_tokens) but its context window is {context_length}: Ollama would cut them "
                f"from the front without an error. Retrieve fewer or shorter guides, use fewer demos, lower "
                f"max_tokens, or pick a model with a longer context.")
    return ContextPlan(num_ctx, longest, answer, context_length, problems)


def fit_num_ctx(spec: ModelSpec, prompts_or_token_counts: Iterable, max_tokens: int | None = None) -> ModelSpec:
    """`spec` with the `num_ctx` of `plan_num_ctx` (and `max_tokens`, if it had none, so the room
    kept for the answer holds); each warning is issued as a `ContextWarning` and logged."""
    plan = plan_num_ctx(spec, prompts_or_token_counts, max_tokens)
    for problem in plan.warnings:
        logger.warning(problem)
        warnings.warn(problem, ContextWarning, stacklevel=2)
    if plan.num_ctx is None:
        return spec
    return spec.with_overrides(num_ctx=plan.num_ctx, max_tokens=spec.max_tokens or plan.max_tokens)


def ollama_context_length(spec: ModelSpec) -> int | None:
    """The smallest trained window its Ollama servers report; None when none answers."""
    from instret.lm.servers.ollama import PROBE_TIMEOUT, show_model

    lengths = []
    for url in spec.endpoints:
        try:
            length = show_model(spec.model, url, timeout=PROBE_TIMEOUT).context_length
        except Exception as error:  # unreachable, model absent: decide without the cap
            logger.info("no context length for %s from %s (%s)", spec.model, url, error)
            continue
        if length:
            lengths.append(length)
    return min(lengths, default=None)


def program_prompts(program, inputs: Iterable[dict]) -> list[list[dict]]:
    """The chat messages `program` sends for each of `inputs`, as its adapters format them.

    The program runs under a stand-in LM that records each request and answers with
    placeholder values of the right types, so that later steps run too; no model is called.
    """
    import dspy
    from dspy.utils.callback import BaseCallback
    from dspy.utils.exceptions import AdapterParseError

    recorder = _PromptRecorder()

    class SignatureSpy(BaseCallback):  # tells the recorder which output fields a reply needs
        def on_adapter_format_start(self, call_id, instance, inputs):
            recorder.signature.value = inputs.get("signature")

    lm = dspy.LM("instret/prompt-recorder", engine=recorder, cache=False, num_retries=0)
    with dspy.context(lm=lm, callbacks=[*dspy.settings.get("callbacks", []), SignatureSpy()]):
        for kwargs in inputs:
            try:
                program(**kwargs)
            except AdapterParseError:
                pass  # an output type the placeholders cannot satisfy; the prompt is recorded
    return recorder.prompts


def _text(content) -> str:
    if isinstance(content, list):  # content parts
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _placeholder(annotation) -> str:
    import typing

    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "False"
    if annotation in (int, float):
        return "0"
    if origin is typing.Literal:
        return str(typing.get_args(annotation)[0])
    if annotation in (list, tuple, set) or origin in (list, tuple, set):
        return "[]"
    if annotation is dict or origin is dict:
        return "{}"
    return "placeholder"


class _PromptRecorder:
    """A DSPy engine that records each request and answers the output fields of `signature`."""

    def __init__(self):
        self.prompts: list[list[dict]] = []
        self.signature = threading.local()  # set per thread by the adapter-format callback
        self._lock = threading.Lock()

    def complete(self, request):
        from dspy.clients.lm15_boundary import history_messages
        from dspy.lm15 import Message, Response, TextPart, Usage

        messages = history_messages(request)
        with self._lock:
            self.prompts.append(messages)
        signature = getattr(self.signature, "value", None)
        fields = signature.output_fields.items() if signature is not None else []
        # A prefilled reply (handoff="reply") is continued, as a server would: its fields are not repeated.
        begun = _text(messages[-1].get("content")) if messages and messages[-1].get("role") == "assistant" else ""
        begun += "\n" if begun and not begun.endswith("\n") else ""
        text = begun + "\n\n".join(f"[[ ## {name} ## ]]\n{_placeholder(info.annotation)}" for name, info in fields
                                   if f"[[ ## {name} ## ]]" not in begun)
        return Response(id=None, model=request.model, message=Message.assistant([TextPart(text + "\n\n[[ ## completed ## ]]")]),
                        finish_reason="stop", usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0))

    def stream(self, request):
        from dspy.lm15 import response_to_events

        yield from response_to_events(self.complete(request))

    def close(self) -> None:
        pass
