"""Model strings → `dspy.LM`, with the engine pinned for each backend.

One place decides how a teacher or student string reaches its server, so the CLI, the TOML
config and notebooks all behave alike::

    >>> lm = make_lm("ollama_chat/qwen2.5:3b", num_ctx=8192)
    >>> with dspy.context(lm=lm):
    ...     program(question="...")
    >>> lm = make_lm("ollama_chat/qwen2.5:3b", api_base="http://gpu1:11434,http://gpu2:11434")  # load-balanced
"""

from __future__ import annotations

import logging
from dataclasses import replace

from instret.lm.spec import (DEFAULT_OLLAMA_BASE, MAX_RETRY_WAIT, PLACEHOLDER_KEY, ModelSpec,  # noqa: F401
                             as_spec, backend_of, is_secret_setting, needs_placeholder_key, stop_sequences)


def make_lm(model: "str | ModelSpec", **overrides):
    """Build a `dspy.LM` for a model string or `ModelSpec`.

    The engine is pinned per backend (`engine_for`), never left to `engine="auto"`, so each
    backend has one tested path.
    Several endpoints, or a `retry_backoff`, need instret's engine (`instret.lm.servers.routing`): DSPy
    waits between retries only as long as its engine's `retry_after` hint says.
    """
    from instret import _env  # noqa: F401  (no network from litellm)
    import dspy

    spec = as_spec(model, **overrides)
    if stops := stop_sequences(spec):  # end a reply at DSPy's end-of-reply marker (see stop_sequences)
        spec = replace(spec, extra={**spec.extra, "stop": stops})
    if spec.backend == "local":  # the embedded llama.cpp engine, started at the model's first request
        from instret.lm.local.lm import local_lm

        return local_lm(spec)
    hide_in_logs(spec)
    register_self_hosted(spec)
    if len(spec.endpoints) > 1 or spec.retry_backoff is not None:
        from instret.lm.servers.routing import endpoint_lm

        return endpoint_lm(spec)
    kwargs: dict = dict(spec.extra)
    if spec.num_retries is not None:
        kwargs["num_retries"] = spec.num_retries
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
    if needs_placeholder_key(spec):
        kwargs["api_key"] = PLACEHOLDER_KEY
    return dspy.LM(spec.model, engine=engine_for(spec), **kwargs)


# Client settings DSPy's native engine takes; anything else (headers, api_version ...) is litellm's.
_NATIVE_CLIENT_SETTINGS = {"api_key", "api_base", "timeout"}
_CLIENT_SETTINGS = {"api_key", "api_base", "base_url", "headers", "extra_headers", "timeout", "api_version",
                    "organization", "project", "extra_query", "custom_llm_provider"}


def engine_for(spec: ModelSpec) -> str:
    """The DSPy engine a spec runs on, pinned rather than left to `engine="auto"`.

    OpenAI-compatible servers (vLLM, llama.cpp, LM Studio) run on DSPy's native `lm15` engine,
    which costs a third of litellm's client CPU per call, so a 16-thread evaluation is not held
    back by the GIL. Ollama stays on litellm: lm15 reaches it only through its `/v1` shim,
    which ignores `num_ctx`. So do hosted providers and specs with litellm-only client settings.
    """
    client_settings = set(spec.extra) & _CLIENT_SETTINGS
    if spec.backend == "openai" and spec.endpoints and client_settings <= _NATIVE_CLIENT_SETTINGS:
        return "lm15"
    return "litellm"


def register_self_hosted(spec: ModelSpec) -> None:
    """Tell litellm a self-hosted model costs nothing.

    For a model missing from its price map, litellm looks the price up after every call: for
    Ollama that is an extra `/api/show` request, and every lookup raises and formats an
    exception internally (8x slower Ollama calls on loopback). Hosted models keep their prices.
    """
    if not spec.endpoints or spec.backend not in ("ollama", "openai"):
        return
    import litellm

    if spec.model not in litellm.model_cost:
        litellm.register_model({spec.model: {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
                                             "litellm_provider": spec.model.split("/", 1)[0], "mode": "chat"}})


# Client libraries that log request details at DEBUG. The openai SDK logs custom headers (a key
# in `extra.extra_headers`) verbatim; litellm masks its own, but is listed in case it does not.
_CLIENT_LOGGERS = ("openai._base_client", "httpx", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


class _SecretRedactor(logging.Filter):
    """Replaces every secret instret was given with '***' in the client libraries' log records."""

    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(secret in message for secret in self.secrets):
                for secret in sorted(self.secrets, key=len, reverse=True):
                    message = message.replace(secret, "***")
                record.msg, record.args = message, None
        return True


_REDACTOR = _SecretRedactor()


def hide_in_logs(spec: ModelSpec) -> None:
    """Register the spec's key and secret-named `extra` values with the log redactor."""
    values = [spec.api_key] + [value for key, value in spec.extra.items() if is_secret_setting(key)]
    found: set[str] = set()
    while values:
        value = values.pop()
        if isinstance(value, dict):
            values.extend(value.values())
        elif isinstance(value, str) and len(value) >= 8:  # short strings would blank out ordinary words
            found.update({value, value.split()[-1]} if len(value.split()[-1]) >= 8 else {value})
    if found - _REDACTOR.secrets:
        _REDACTOR.secrets |= found
        for name in _CLIENT_LOGGERS:
            logger = logging.getLogger(name)
            if _REDACTOR not in logger.filters:
                logger.addFilter(_REDACTOR)
