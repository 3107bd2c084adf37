"""What each model call cost, whose it was (teacher or student), and whether DSPy's cache served it.

    >>> log = CallLog(teacher=teacher_lm)
    >>> with log.recording(), dspy.context(lm=student_lm):
    ...     program(question="...")
    >>> log.tokens("teacher"), log.tokens("student"), log.cached_calls, log.truncated
    >>> log.prompt_cached_tokens("teacher")   # of its prompt tokens, those the server's prompt cache held

DSPy's usage tracker skips cache hits, so a rerun would record a cached answer as free. DSPy
keeps the response, with the usage it reported when it was produced, in each call's history
entry; `CallLog` reads that entry, so a cached call counts what it cost when it was made and is
marked `cached`. It also reads the finish reason ("length": the call stopped at `max_tokens`).

Two caches, two names. `cached` is DSPy's: the whole reply came from it and no server saw the call.
`prompt_cached_tokens` is the server's: of the call's `prompt_tokens` (which include them), how many
it read from its prompt cache (KV cache) instead of computing them, as it reported in OpenAI's
`usage.prompt_tokens_details.cached_tokens` (llama.cpp's server, vLLM, OpenAI; Anthropic's
cache reads via litellm and lm15). None where the server did not say, which is not 0: Ollama
through litellm reports no such count.

How: the log joins `dspy.settings.caller_modules` for the duration of `recording()`, so DSPy
appends every history entry made in this thread (and in threads DSPy starts from it) to the log
as it does to the calling module's history, and it is a DSPy callback, which tells it which LM
object made the call. Both are thread-local, so threads recording at once never mix.

A call is the teacher's when it was made through the `teacher` LM object, or through another
LM with the teacher's model string while the student's (`student`, if given) differs; every
other call is the student's. With the same model string for both, only calls through the
teacher object itself count as the teacher's.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from dspy.utils.callback import BaseCallback

ROLES = ("student", "teacher")


@dataclass(frozen=True)
class Call:
    model: str
    role: str
    prompt_tokens: int
    completion_tokens: int
    #: Served from DSPy's cache: the tokens are what the reply cost when it was produced.
    cached: bool
    #: The server's reason for ending the reply: "stop", "length" (stopped at max_tokens) ...
    finish_reason: str | None
    #: Wall time of the call here; a cached call's is the cache's, not the model's.
    seconds: float
    #: Of `prompt_tokens`, those the server read from its prompt cache; None: it did not report them.
    prompt_cached_tokens: int | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class _Entries:
    """Stands in for a module's `history` list: DSPy appends each call's entry; it never fills up."""

    def __init__(self, log: "CallLog"):
        self._log = log

    def __len__(self) -> int:  # DSPy drops the oldest entry of a full history; this one never is
        return 0

    def append(self, entry: dict) -> None:
        self._log._record(entry)


class CallTotals:
    """What a list of calls (`self.calls`) adds up to; shared by the call log and a recovery attempt."""

    calls: list[Call]

    @property
    def lm_calls(self) -> int:
        return len(self.calls)

    @property
    def cached_calls(self) -> int:
        return sum(c.cached for c in self.calls)

    @property
    def truncated(self) -> bool:
        return any(c.truncated for c in self.calls)

    def prompt_cached_tokens(self, role: str | None = None) -> int | None:
        """Prompt tokens of `role` (every call's when None) the server read from its prompt cache;
        None unless each of those calls reported it (see `total_prompt_cached`)."""
        return total_prompt_cached(self.calls, role)


@dataclass(eq=False)
class CallLog(CallTotals, BaseCallback):
    teacher: object = None
    student: object = None
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self):
        self.history = _Entries(self)
        self._lock = threading.Lock()
        self._running: dict[int, list[tuple[str, object, float]]] = {}  # thread -> (call id, LM, start)

    @contextmanager
    def recording(self):
        """Log every LM call made inside the block by this thread and the threads DSPy starts from it."""
        import dspy

        callbacks = [*dspy.settings.get("callbacks", []), self]
        modules = [self, *(dspy.settings.get("caller_modules") or [])]
        # History off would leave no entry to read; on here, only for this thread and this block.
        with dspy.context(callbacks=callbacks, caller_modules=modules, disable_history=False):
            yield self

    # -- DSPy callback: which LM object is making the call in this thread
    def on_lm_start(self, call_id, instance, inputs):
        with self._lock:
            self._running.setdefault(threading.get_ident(), []).append((call_id, instance, time.perf_counter()))

    def on_lm_end(self, call_id, outputs, exception=None):
        with self._lock:
            stack = self._running.get(threading.get_ident(), [])
            if stack and stack[-1][0] == call_id:
                stack.pop()

    def _record(self, entry: dict) -> None:
        with self._lock:
            stack = self._running.get(threading.get_ident()) or [(None, None, None)]
            _, lm, started = stack[-1]
        prompt, completion, cached, finish, prompt_cached = read_entry(entry, lm)
        call = Call(model=str(entry.get("model") or getattr(lm, "model", "")), role=self.role_of(lm, entry),
                    prompt_tokens=prompt, completion_tokens=completion, cached=cached, finish_reason=finish,
                    seconds=round(time.perf_counter() - started, 4) if started is not None else 0.0,
                    prompt_cached_tokens=prompt_cached)
        with self._lock:
            self.calls.append(call)

    def role_of(self, lm, entry: dict | None = None) -> str:
        if self.teacher is None:
            return "student"
        if lm is self.teacher:
            return "teacher"
        model = getattr(lm, "model", None) or (entry or {}).get("model")
        student_model = getattr(self.student, "model", None)
        return "teacher" if model == self.teacher.model and model != student_model else "student"

    # -- totals
    def tokens(self, role: str | None = None) -> dict[str, int]:
        """{"prompt_tokens", "completion_tokens"} over the calls of `role` (all calls when None)."""
        return total_tokens(self.calls, role)


def total_prompt_cached(calls, role: str | None = None) -> int | None:
    """Of the prompt tokens of `calls` of `role`, those the server read from its prompt cache.

    None unless every call that read a prompt reported the count: a sum over the calls that did
    would pass a partial count off as the whole. No prompt read at all is a known 0."""
    counts = [c.prompt_cached_tokens for c in calls if (role is None or c.role == role) and c.prompt_tokens]
    return None if None in counts else sum(counts)


def total_tokens(calls, role: str | None = None) -> dict[str, int]:
    """{"prompt_tokens", "completion_tokens"} over `calls` of `role` (all of them when None)."""
    chosen = [c for c in calls if role is None or c.role == role]
    return {"prompt_tokens": sum(c.prompt_tokens for c in chosen),
            "completion_tokens": sum(c.completion_tokens for c in chosen)}


def read_entry(entry: dict, lm=None) -> tuple[int, int, bool, str | None, int | None]:
    """(prompt tokens, completion tokens, served from DSPy's cache, finish reason, prompt tokens the
    server read from its prompt cache or None) of a DSPy history entry.

    On a cache hit DSPy writes `usage: {}` to the entry. DSPy's native engine keeps the cached
    response with the usage it had when it was produced; the litellm engine (Ollama, hosted
    providers) gets a copy whose usage DSPy cleared, so the stored record is read instead.
    """
    usage = dict(entry.get("usage") or {})
    response = entry.get("response")
    responses = list(response) if isinstance(response, (list, tuple)) else [response]
    produced = {"prompt_tokens": 0, "completion_tokens": 0, "prompt_cached": 0}
    finish, marked = None, False
    for item in responses:
        prompt, completion, reason, prompt_cached = _response_usage(item)
        produced["prompt_tokens"] += prompt
        produced["completion_tokens"] += completion
        produced["prompt_cached"] = _add(produced["prompt_cached"], prompt_cached)
        finish = finish or reason
        marked = marked or bool(getattr(item, "cache_hit", False))
    cached = marked or (not _count(usage) and bool(_count(produced)))
    if cached and not _count(produced) and lm is not None:
        stored = _stored_response(lm, entry)
        if stored is not None:
            prompt, completion, _, prompt_cached = _response_usage(stored)
            produced = {"prompt_tokens": prompt, "completion_tokens": completion, "prompt_cached": prompt_cached}
    if cached:
        source, prompt_cached = produced, produced.get("prompt_cached")
    else:
        source, prompt_cached = usage, _cached_of(usage)
    return (int(source.get("prompt_tokens") or 0), int(source.get("completion_tokens") or 0), cached, finish,
            prompt_cached)


def _count(usage: dict) -> int:
    return int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)


def _add(total: int | None, part: int | None) -> int | None:
    return None if total is None or part is None else total + part


def _cached_of(usage) -> int | None:
    """`prompt_tokens_details.cached_tokens` of an OpenAI-shaped usage (dict or object); None when absent."""
    from dspy.clients.legacy_outputs import value

    details = value(usage, "prompt_tokens_details", None)
    cached = value(details, "cached_tokens", None) if details is not None else None
    return None if cached is None else int(cached)


def _response_usage(response) -> tuple[int, int, str | None, int | None]:
    """Tokens, finish reason and server-cached prompt tokens of one response: DSPy's native
    `Response`, or an OpenAI-shaped one from litellm (an object, or a dict after the disk cache)."""
    if response is None:
        return 0, 0, None, None
    usage = getattr(response, "usage", None)
    if hasattr(usage, "input_tokens"):  # dspy.lm15 Response: its counters are None where not reported
        return (int(usage.input_tokens or 0), int(usage.output_tokens or 0), getattr(response, "finish_reason", None),
                usage.cache_read_tokens)
    from dspy.clients.legacy_outputs import value

    usage = value(response, "usage", None) or {}
    choices = value(response, "choices", None) or []
    finish = value(choices[0], "finish_reason", None) if choices else None
    return (int(value(usage, "prompt_tokens", 0) or 0), int(value(usage, "completion_tokens", 0) or 0), finish,
            _cached_of(usage))


def _stored_response(lm, entry: dict):
    """The response as DSPy's cache stored it, usage included, for a call DSPy served from it.

    The key is rebuilt by DSPy's own `prepare` from what the entry records (prompt, messages,
    call options) and the LM's own options, exactly as DSPy looked it up. None when it cannot be.
    """
    import dspy
    from dspy.clients.execution import IGNORED_CACHE_KEYS, prepare

    try:
        call = prepare(lm, entry.get("prompt"), entry.get("messages"), dict(entry.get("kwargs") or {}))
        cache = dspy.cache
        key = cache.cache_key(call.key(lm, False), IGNORED_CACHE_KEYS)
        with cache._lock:
            stored = cache.memory_cache.get(key) if cache.enable_memory_cache else None
        if stored is None and cache.enable_disk_cache:
            stored = cache.disk_cache.get(key)
        return stored
    except Exception:  # accounting must never fail a call that succeeded
        return None
