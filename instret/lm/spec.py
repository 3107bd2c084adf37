"""A model as instret names it: a `ModelSpec` (model string, servers, settings) and what follows from it.

Plain data, with no client library imported: `instret.lm.models` turns a spec into a `dspy.LM`,
and `instret.lm.routing` spreads it over several servers.
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


PLACEHOLDER_KEY = "not-needed"


def needs_placeholder_key(spec: ModelSpec) -> bool:
    """Local OpenAI-compatible servers (vLLM, llama.cpp, LM Studio) need no key, but the
    OpenAI client refuses to start without one."""
    return (spec.backend == "openai" and bool(spec.endpoints) and not spec.api_key
            and not os.environ.get("OPENAI_API_KEY"))
