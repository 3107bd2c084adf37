"""Model strings → `dspy.LM`, with the engine pinned for each backend.

One place decides how a teacher or student string reaches its server, so the CLI, the TOML
config and notebooks all behave alike::

    >>> lm = make_lm("ollama_chat/qwen2.5:3b", num_ctx=8192)
    >>> with dspy.context(lm=lm):
    ...     program(question="...")
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace

DEFAULT_OLLAMA_BASE = "http://localhost:11434"


@dataclass(frozen=True)
class ModelSpec:
    """A model string plus the options that reach its server.

    `api_key` is never written anywhere by instret (see `public_dict`); prefer leaving it
    empty and letting litellm read the provider's usual environment variable.
    """

    model: str
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    max_tokens: int | None = None
    temperature: float | None = None
    num_ctx: int | None = None
    timeout: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return backend_of(self.model)

    @property
    def resolved_api_base(self) -> str | None:
        if self.api_base:
            return self.api_base.rstrip("/")
        if self.backend == "ollama":
            host = os.environ.get("OLLAMA_HOST", DEFAULT_OLLAMA_BASE)
            return host if host.startswith("http") else f"http://{host}"
        return None

    def public_dict(self) -> dict:
        """What may be written to manifests, results and logs: everything but the key."""
        data = asdict(self)
        data.pop("api_key")
        return {key: value for key, value in data.items() if value not in (None, {})}

    def with_overrides(self, **overrides) -> "ModelSpec":
        return replace(self, **{key: value for key, value in overrides.items() if value is not None})


def backend_of(model: str) -> str:
    """'ollama' for Ollama's native API, 'openai' for OpenAI-compatible servers, else the provider."""
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    if provider in ("ollama", "ollama_chat"):
        return "ollama"
    return provider


def as_spec(model: "str | ModelSpec", **overrides) -> ModelSpec:
    spec = model if isinstance(model, ModelSpec) else ModelSpec(model=model)
    return spec.with_overrides(**overrides)


def make_lm(model: "str | ModelSpec", **overrides):
    """Build a `dspy.LM` for a model string or `ModelSpec`.

    Every string backend runs on DSPy's litellm engine: `engine="auto"` may route a request
    to the native lm15 engine, which speaks Ollama only through its `/v1` OpenAI shim and
    would ignore Ollama options such as `num_ctx`. Pinning keeps one tested path per backend.
    """
    from instret import _env  # noqa: F401  (no network from litellm)
    import dspy

    spec = as_spec(model, **overrides)
    kwargs: dict = dict(spec.extra)
    if spec.max_tokens is not None:
        kwargs["max_tokens"] = spec.max_tokens
    if spec.temperature is not None:
        kwargs["temperature"] = spec.temperature
    if spec.timeout is not None:
        kwargs["timeout"] = spec.timeout
    api_base = spec.resolved_api_base
    if api_base:
        kwargs["api_base"] = api_base
    if spec.api_key:
        kwargs["api_key"] = spec.api_key
    if spec.backend == "ollama" and spec.num_ctx:
        kwargs["num_ctx"] = spec.num_ctx
    if spec.backend == "openai" and api_base and not spec.api_key and not os.environ.get("OPENAI_API_KEY"):
        # Local OpenAI-compatible servers (vLLM, llama.cpp, LM Studio) need no key, but the
        # OpenAI client refuses to start without one.
        kwargs["api_key"] = "not-needed"
    return dspy.LM(spec.model, engine="litellm", **kwargs)
