"""Reasoning steps: what one step is, how to stop a model after k of them, how sure it was of one.

**A step is one line of the solution, numbered `Step n: ...`.** The programs ask for that
format, and small instruction-tuned models (Qwen2.5 0.5B/1.5B) keep to it: they write one step
per line and rarely leave blank lines, so SMART's blank-line boundary would see one step in a
whole solution. The numbered marker also gives the server a boundary it can act on: a model
asked for k steps is stopped by the stop sequence `Step k+1:` *before* it writes step k+1, and
a token cap (`step_cap`) ends a model that ignores the format, so nobody pays for a whole
solution to keep its first line. Lines without a marker continue the step above them; text
without any marker falls back to one step per line.

**Confidence** of a step is the mean probability of its tokens, exp(logprob) averaged over the
tokens that make up the step's text (SMART's score), read from OpenAI-format log-probabilities:
`{"content": [{"token", "logprob", ...}, ...]}` as dicts (DSPy's native engine) or objects
(litellm). Field headers the adapter wraps around the step are not counted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol, Sequence

from instret.lm.spec import DEFAULT_MAX_TOKENS

#: Tokens of the adapter's field header around the steps (`[[ ## steps ## ]]`).
HEADER_TOKENS = 24
NO_STEPS = "(none yet: start with Step 1)"

_MARKER = re.compile(r"^\s*[*#_]*\s*(?:step\s*(\d+)\s*[:.)\-]|(\d+)[.)]\s)[*_]*\s*", re.I)
_FINAL = re.compile(r"final answer|the answer is|answer\s*[:=]|\\boxed", re.I)


def split_steps(text: str | None) -> list[str]:
    """The steps of a solution text, each stripped; marker-less lines join the step above them."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not any(_MARKER.match(line) for line in lines):
        return lines
    steps: list[str] = []
    for line in lines:
        if _MARKER.match(line) or not steps:
            steps.append(line)
        else:
            steps[-1] += "\n" + line
    return steps


def step_marker(number: int) -> str:
    return f"Step {number}:"


def numbered(step: str, number: int) -> str:
    """`step` as `Step <number>: ...`, whatever marker (or none) it had."""
    return f"{step_marker(number)} {_MARKER.sub('', step, count=1).strip()}"


def render_steps(steps: Sequence[str]) -> str:
    """Steps as the prompts show them, renumbered 1..n, one per line; a placeholder when none."""
    return "\n".join(numbered(step, n) for n, step in enumerate(steps, 1)) or NO_STEPS


def stop_before(number: int) -> list[str]:
    """Stop sequences that end a reply before it starts step `number` (OpenAI allows four)."""
    return [step_marker(number), f"\n{number}. ", "[[ ## completed ## ]]"]


def step_cap(steps: int, lm=None) -> int:
    """The token cap for a reply of `steps` steps, never above the LM's own `max_tokens`: each step
    may take the `first_step` role's cap (`DEFAULT_MAX_TOKENS`, sized from real solutions' opening
    lines). The stop sequence ends a well-behaved reply long before; the cap bounds one that
    ignores the step format."""
    cap = HEADER_TOKENS + steps * DEFAULT_MAX_TOKENS["first_step"]
    own = (getattr(lm, "kwargs", None) or {}).get("max_tokens")
    return min(cap, int(own)) if own else cap


def step_config(first: int, steps: int = 1, lm=None, logprobs: bool = False) -> dict:
    """Per-call settings for a reply that writes steps `first` .. `first + steps - 1` and stops."""
    config = {"stop": stop_before(first + steps), "max_tokens": step_cap(steps, lm)}
    return {**config, "logprobs": True} if logprobs else config


def is_final(step: str) -> bool:
    """Whether a step states the final answer, which ends step-by-step generation."""
    return bool(_FINAL.search(step or ""))


# --- log-probabilities ---------------------------------------------------------------------

class LogprobsUnavailable(RuntimeError):
    """The student's backend returns no token log-probabilities."""


def require_logprobs(lm, method: str = "on_uncertainty", role: str = "student", instead: str = "") -> None:
    """Refuse, before any call, a backend known not to return log-probabilities; `instead`: a
    method option that needs none, named in the error."""
    model = str(getattr(lm, "model", "") or "")
    if model.startswith(("ollama_chat/", "ollama/")):
        name = model.split("/", 1)[1]
        raise LogprobsUnavailable(
            f"{method} needs token log-probabilities from the {role}, and {model} (litellm's Ollama "
            f"client) does not return them. Use that server's OpenAI-compatible path instead: "
            f"--{role} openai/{name} --{role}-api-base http://<ollama host>:11434/v1 (or a local/, vLLM or "
            f"llama.cpp model)" + (f", or {instead}." if instead else "."))


def token_logprobs(logprobs) -> list[tuple[str, float]]:
    """(token, logprob) pairs from OpenAI-format log-probabilities, as dicts or objects."""
    content = _get(logprobs, "content") if logprobs is not None else None
    return [(str(_get(entry, "token") or ""), float(_get(entry, "logprob"))) for entry in content or []]


def mean_probability(logprobs, text: str) -> float | None:
    """Mean exp(logprob) over the tokens that make up `text` in the reply; None when unscored.

    The tokens are joined back into the reply and `text` is located in it, so the adapter's
    field headers around it are left out; if `text` cannot be found there (a tokenizer that
    splits characters into bytes), every token of the reply counts.
    """
    pairs = token_logprobs(logprobs)
    if not pairs:
        return None
    joined, spans, position = "", [], 0
    for token, logprob in pairs:
        spans.append((position, position + len(token), logprob))
        position += len(token)
        joined += token
    start = joined.find(text.strip()) if text and text.strip() else -1
    if start >= 0:
        end = start + len(text.strip())
        chosen = [logprob for first, last, logprob in spans if first < end and last > start]
    else:
        chosen = [logprob for _, _, logprob in spans]
    return sum(math.exp(logprob) for logprob in chosen) / len(chosen) if chosen else None


def _get(obj, name: str):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


# --- when to intervene ---------------------------------------------------------------------

class InterventionPolicy(Protocol):
    """Decides whether the teacher rewrites a student step, given its confidence (None: unscored)."""

    def should_intervene(self, confidence: float | None, interventions: int) -> bool: ...


@dataclass(frozen=True)
class UncertaintyPolicy:
    """Rewrite a step whose mean token probability is under `threshold`, at most
    `max_interventions` times per question. A step with no score (its reply did not parse)
    counts as uncertain."""

    threshold: float = 0.9
    max_interventions: int = 3

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1], got {self.threshold}")
        if self.max_interventions < 0:
            raise ValueError(f"max_interventions must be 0 or more, got {self.max_interventions}")

    def should_intervene(self, confidence: float | None, interventions: int) -> bool:
        return interventions < self.max_interventions and (confidence is None or confidence < self.threshold)
