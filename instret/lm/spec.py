"""A model as instret names it: a `ModelSpec` (model string, servers, settings) and what follows from it.

Plain data, with no client library imported: `instret.lm.models` turns a spec into a `dspy.LM`,
and `instret.lm.servers.routing` spreads it over several servers.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, replace

DEFAULT_OLLAMA_BASE = "http://localhost:11434"


@dataclass(frozen=True)
class ModelSpec:
    """A model string plus the options that reach its server.

    `api_key` is never written anywhere by instret (see `public_dict`); prefer leaving it
    empty and letting litellm read the provider's usual environment variable.

    `api_base` may list several servers of the same model (a list, or URLs separated by
    commas): `make_lm` then load-balances over them with litellm's Router. Transient failures
    are retried by DSPy `num_retries` times (DSPy's default: 3); `retry_backoff` is the wait
    before the first retry in seconds, doubling after each, never above `MAX_RETRY_WAIT`
    (unset: DSPy's own 1 s, 2 s, 4 s ...). `timeout` bounds each attempt.
    """

    model: str
    api_base: str | list[str] | None = None
    api_key: str | None = field(default=None, repr=False)
    max_tokens: int | None = None
    temperature: float | None = None
    num_ctx: int | None = None
    timeout: float | None = None
    extra: dict = field(default_factory=dict)
    num_retries: int | None = None
    retry_backoff: float | None = None

    @property
    def backend(self) -> str:
        return backend_of(self.model)

    @property
    def endpoints(self) -> list[str]:
        """Every server URL of this model, in the order given; [] for a hosted provider."""
        listed = self.api_base.split(",") if isinstance(self.api_base, str) else (self.api_base or [])
        urls = [url.strip().rstrip("/") for url in listed if url and url.strip()]
        if not urls and self.backend == "ollama":
            host = os.environ.get("OLLAMA_HOST", DEFAULT_OLLAMA_BASE)
            urls = [host if host.startswith("http") else f"http://{host}"]
        return urls

    @property
    def resolved_api_base(self) -> str | None:
        """The first server: the one probes and embedders use when several are listed."""
        return next(iter(self.endpoints), None)

    def public_dict(self) -> dict:
        """What may be written to manifests, results and logs: everything but credentials."""
        data = asdict(self)
        data.pop("api_key")
        data["extra"] = {key: value for key, value in data["extra"].items() if not is_secret_setting(key)}
        return {key: value for key, value in data.items() if value not in (None, {})}

    def __repr__(self) -> str:  # specs reach logs and tracebacks: show them without credentials
        return f"ModelSpec({', '.join(f'{key}={value!r}' for key, value in self.public_dict().items())})"

    def with_overrides(self, **overrides) -> "ModelSpec":
        return replace(self, **{key: value for key, value in overrides.items() if value is not None})


MAX_RETRY_WAIT = 30.0  # seconds; caps `retry_backoff` doublings and a server's Retry-After alike
# `extra` reaches litellm as is, so a key or a header may hide there too ("max_tokens" does not match).
_SECRET_NAME = re.compile(r"(?:^|_)(?:api_?key|key|token|secret|password|credentials?|authorization|headers)$", re.I)


def is_secret_setting(name: str) -> bool:
    return bool(_SECRET_NAME.search(str(name)))


def backend_of(model: str) -> str:
    """'ollama' for Ollama's native API, 'openai' for OpenAI-compatible servers, else the provider."""
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    if provider in ("ollama", "ollama_chat"):
        return "ollama"
    return provider


def as_spec(model: "str | ModelSpec", **overrides) -> ModelSpec:
    spec = model if isinstance(model, ModelSpec) else ModelSpec(model=model)
    return spec.with_overrides(**overrides)


#: What each role may generate at most (max_tokens), unless its config or a flag says otherwise.
#: Sized from reference outputs, counted with cl100k plus one token per digit (as Qwen2.5 counts):
#: - student: a chain-of-thought reply in DSPy's field format. GSM8K worked solutions: median 125,
#:   p99 302, max 467 tokens; MATH test solutions: median 171, p99 978. 1024 holds a MATH p99
#:   solution and twice the longest GSM8K one, and stops a looping 0.5B after ~45 s (23 tokens/s)
#:   instead of the 2,800 tokens it once ran to.
#: - teacher: one guide as JSON; a concise one (2-3 sentences, 3-6 steps) is ~300 tokens, a
#:   detailed one (5-10 steps) under 1,000.
#: - guidance: a plan of the solution (understanding + decomposition, no arithmetic), about half
#:   a worked solution: MATH p99 978 / 2 < 768.
#: - first_step: the opening of a solution. GSM8K first lines: p99 61, max 114 tokens; MATH first
#:   paragraphs: median 109, p90 280; 384 holds those with headroom.
DEFAULT_MAX_TOKENS = {"student": 1024, "teacher": 2000, "guidance": 768, "first_step": 384}


def with_role_cap(spec: ModelSpec, role: str) -> ModelSpec:
    """`spec` with its role's default `max_tokens` when it sets none (see `DEFAULT_MAX_TOKENS`)."""
    if spec.max_tokens is not None or role not in DEFAULT_MAX_TOKENS:
        return spec
    return replace(spec, max_tokens=DEFAULT_MAX_TOKENS[role])


#: DSPy's ChatAdapter ends every reply with this marker. Small models often go on past it (a new
#: made-up turn, the same fields again) until the token cap; a server told to stop there returns
#: the reply without the marker, which the adapter does not need.
END_OF_REPLY = "[[ ## completed ## ]]"


def stop_sequences(spec: ModelSpec) -> list[str]:
    """Stop sequences instret adds to a spec's requests: the end-of-reply marker, for self-hosted
    OpenAI-compatible servers only (llama.cpp, vLLM, LM Studio all honour `stop`).

    Not for Ollama: a request's `stop` replaces the Modelfile's own stop list. Not for hosted
    providers: they do not loop like a 0.5B model, and some cap the number of stop sequences.
    No repetition penalty is added anywhere: it also penalizes the digits and field headers a
    correct answer must repeat (llama.cpp's DRY sampler counts the prompt's `[[ ## answer ## ]]`
    as a repeat), and Ollama already applies its own default `repeat_penalty` of 1.1.
    """
    if spec.backend != "openai" or not spec.endpoints or "stop" in spec.extra:
        return []
    return [END_OF_REPLY]


PLACEHOLDER_KEY = "not-needed"


def needs_placeholder_key(spec: ModelSpec) -> bool:
    """Local OpenAI-compatible servers (vLLM, llama.cpp, LM Studio) need no key, but the
    OpenAI client refuses to start without one."""
    return (spec.backend == "openai" and bool(spec.endpoints) and not spec.api_key
            and not os.environ.get("OPENAI_API_KEY"))
