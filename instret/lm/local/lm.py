"""`make_lm("local/...")`: a `dspy.LM` whose engine starts the embedded llama.cpp server at first use.

    >>> lm = make_lm("local/qwen2.5-coder-0.5b", max_tokens=512)   # nothing is loaded yet
    >>> with dspy.context(lm=lm):
    ...     program(question="...")                                 # the server starts here, once
    >>> make_lm("local/qwen2.5-coder-0.5b", logprobs=True, top_logprobs=5)   # token log-probabilities

`LocalEngine` is a DSPy engine (`complete(Request) -> Response`): DSPy still owns caching,
history, usage and retries, and calls the engine only on a cache miss. It sends each request
through DSPy's own native lm15 client to the server's OpenAI-compatible `/v1`, after making
sure the server's slots hold the request (prompt estimated from its characters, plus
`max_tokens`); a request that still overflows moves the model to a server with a larger window.
"""

from __future__ import annotations

import re
import threading
from dataclasses import replace

from instret.lm.local.engine import (ENGINE_SETTINGS, PREFIX, LocalModel, LocalServer, local_server,
                                     parse_local, slot_context)
from instret.lm.spec import END_OF_REPLY, PLACEHOLDER_KEY, ModelSpec


# Seconds to wait for a reply. A reply arrives whole, after the last token: a 2,000-token guide from
# the 1.5B sharing 2 busy cores with three other requests can take longer than lm15's 600 s, and a
# timeout would only send the same work again.
LOCAL_TIMEOUT = 3600.0


def local_lm(spec: ModelSpec):
    """The `dspy.LM` for a `local/...` spec (see the module docstring)."""
    import dspy

    model = parse_local(spec.model)
    if spec.api_base:
        raise ValueError(f"{spec.model} runs in-process; drop its api_base ({spec.api_base}), or name the server's "
                         f"model as openai/<name> with that api_base")
    settings = {key: spec.extra[key] for key in ENGINE_SETTINGS if key in spec.extra}
    lm_kwargs = {key: value for key, value in spec.extra.items() if key not in ENGINE_SETTINGS}
    for name in ("max_tokens", "temperature", "num_retries"):
        if getattr(spec, name) is not None:
            lm_kwargs[name] = getattr(spec, name)
    lm_kwargs.setdefault("stop", [END_OF_REPLY])  # as for any llama.cpp server (see `stop_sequences`)
    engine = LocalEngine(str(model), n_ctx=spec.num_ctx, timeout=spec.timeout, **settings)
    return dspy.LM(f"openai/{model.alias}", engine=engine, **lm_kwargs)


def on_idle_cores(spec: ModelSpec) -> ModelSpec:
    """`spec`, where it is a local model with no thread count, set to use every core the machine
    has idle when its server starts (`n_threads="auto"`): for jobs in which this model is the
    only busy thing in the process, such as writing guides."""
    if not spec.model.startswith(PREFIX) or "n_threads" in spec.extra:
        return spec
    return replace(spec, extra={**spec.extra, "n_threads": "auto"})


class LocalEngine:
    """Starts (or reuses) the model's server at the first request, then sends through lm15.

    It tells DSPy's adapters what llama.cpp's server does (DSPy does not know a local model's
    name): `response_format` with a JSON schema is enforced by grammar-constrained sampling, so
    DSPy's JSON adapter gets replies that parse even from a 0.5B model; log-probabilities too.
    """

    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = frozenset({"temperature", "max_tokens", "max_completion_tokens", "top_p", "stream", "stop",
                                  "seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
                                  "logit_bias", "response_format"})

    def __init__(self, model: str, *, n_ctx: int | None = None, timeout: float | None = None, **settings):
        unknown = set(settings) - set(ENGINE_SETTINGS)
        if unknown:
            raise ValueError(f"unknown local engine settings {sorted(unknown)}; allowed: {list(ENGINE_SETTINGS)}")
        self.model: LocalModel = parse_local(model)
        self.n_ctx, self.timeout, self.settings = n_ctx, timeout, settings
        self._server: LocalServer | None = None
        self._clients: dict[str, object] = {}
        self._lock = threading.Lock()

    def complete(self, request):
        from dspy import lm15

        server = self.server_for(request)
        while True:
            try:
                return self._client(server).complete(request)
            except lm15.InvalidRequestError as error:  # llama.cpp: "request (N tokens) exceeds the available context size"
                if "context size" not in str(error) or not server.context_length or server.n_ctx >= server.context_length:
                    raise
                counted = re.search(r"request \((\d+) tokens\)", str(error))
                need = int(counted.group(1)) + (request.config.max_tokens or 0) if counted else server.n_ctx * 2
                server = self._use(slot_context(max(need, server.n_ctx + 1), 0, server.context_length))

    def stream(self, request):
        """The whole reply as stream events: instret's programs need no token-by-token output."""
        from dspy.lm15 import response_to_events

        yield from response_to_events(self.complete(request))

    def close(self) -> None:
        pass  # the server outlives this LM: other LMs of the same model share it; it stops at exit

    def __deepcopy__(self, memo):
        return self  # engines are borrowed: copies of an LM share the server

    def dump_state(self) -> dict:
        return {"model": str(self.model), "n_ctx": self.n_ctx, "timeout": self.timeout, **self.settings}

    @classmethod
    def load_state(cls, state: dict) -> "LocalEngine":
        state = dict(state)
        return cls(state.pop("model"), **state)

    def server_for(self, request=None) -> LocalServer:
        """The server this request goes to, started (and the weights pulled) on first use."""
        if self.n_ctx:  # set by the user or sized from the programs' prompts: exactly that
            server = self._server
            return server if server is not None and server.running else self._use(self.n_ctx)
        need = _tokens_needed(request) if request is not None else 0
        server = self._server
        if server is not None and server.running and (server.n_ctx >= need or server.n_ctx >= (server.context_length or need)):
            return server  # fits, or already the model's whole trained window
        return self._use(slot_context(need, 0, server.context_length if server else None))

    def _use(self, n_ctx: int | None) -> LocalServer:
        with self._lock:
            self._server = local_server(self.model, n_ctx=n_ctx, **self.settings)
            return self._server

    def _client(self, server: LocalServer):
        """DSPy's native OpenAI-chat client pointed at `server` (one per server, reused)."""
        with self._lock:
            client = self._clients.get(server.url)
            if client is None:
                from dspy.clients.engines.lm15_engine import LM15Engine, timeouts_for
                from dspy.lm15 import RouterConfig

                provider = LM15Engine(RouterConfig(env={}), model_type="chat").resolve(
                    f"openai/{self.model.alias}").provider
                client = LM15Engine(RouterConfig(env={}, api_keys={provider: PLACEHOLDER_KEY},
                                                 base_urls={provider: server.base_url},
                                                 timeouts=timeouts_for(self.timeout or LOCAL_TIMEOUT)),
                                 model_type="chat")
                self._clients[server.url] = client
            return client


def _tokens_needed(request) -> int:
    from dspy.clients.lm15_boundary import history_messages

    from instret.lm.context import DEFAULT_ANSWER_TOKENS, estimate_tokens

    answer = request.config.max_tokens or DEFAULT_ANSWER_TOKENS
    return estimate_tokens(history_messages(request)) + answer
