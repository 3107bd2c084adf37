"""Several servers of one model behind one `dspy.LM`, and retry waits that a `ModelSpec` sets.

    >>> lm = make_lm(ModelSpec("ollama_chat/qwen2.5:3b", api_base="http://gpu1:11434,http://gpu2:11434",
    ...                        num_retries=2, retry_backoff=0.5, timeout=60))

`make_lm` builds such an LM with `endpoint_lm`. Its engine, `EndpointEngine`, is a DSPy engine
(`complete(Request) -> Response`, one attempt per call): DSPy still owns caching, history,
usage and retries. The engine converts with DSPy's own helpers (`request_kwargs`,
`response_value`, `litellm_errors`) and sends through litellm's `Router` when several servers
are listed, so balancing, failover and cooldown are litellm's, not instret's.
"""

from __future__ import annotations

import threading

from instret.lm.spec import MAX_RETRY_WAIT, PLACEHOLDER_KEY, ModelSpec, is_secret_setting, needs_placeholder_key

GROUP = "instret-endpoints"  # the Router's name for "any server of this model"
DEFAULT_COOLDOWN = 5.0  # seconds a failing server rests before the Router tries it again
# Settings `dspy.LM` keeps itself, or carries in its canonical Request; everything else in
# `ModelSpec.extra` (num_ctx, keep_alive, headers ...) is a server option the engine sends.
LM_SETTINGS = frozenset({"cache", "num_retries", "callbacks", "rollout_id", "use_developer_role", "model_type",
                         "temperature", "max_tokens", "top_p", "top_k", "stop", "seed", "frequency_penalty",
                         "presence_penalty", "n", "logprobs", "response_format"})


def endpoint_lm(spec: ModelSpec):
    """A `dspy.LM` for `spec` running on an `EndpointEngine` (see `make_lm`)."""
    import dspy

    lm_settings = {key: value for key, value in spec.extra.items() if key in LM_SETTINGS}
    options = {key: value for key, value in spec.extra.items() if key not in LM_SETTINGS}
    if lm_settings.get("model_type", "chat") != "chat":
        raise ValueError(f"{spec.model}: several endpoints or retry_backoff work with chat models only")
    for name in ("max_tokens", "temperature", "num_retries"):
        if getattr(spec, name) is not None:
            lm_settings[name] = getattr(spec, name)
    if spec.timeout is not None:
        options["timeout"] = spec.timeout
    if spec.backend == "ollama" and spec.num_ctx:
        options["num_ctx"] = spec.num_ctx
    key = spec.api_key or (PLACEHOLDER_KEY if needs_placeholder_key(spec) else None)
    if key:
        options["api_key"] = key
    servers = [{"model": spec.model, **({"api_base": url} if url else {}), **options} for url in spec.endpoints or [None]]
    return dspy.LM(spec.model, engine=EndpointEngine(servers, retry_backoff=spec.retry_backoff), **lm_settings)


class EndpointEngine:
    """Sends each request to one server of a model; tells DSPy how long to wait before a retry.

    `servers`: litellm's parameters for each server (`model`, `api_base`, `api_key`, `timeout`,
    `num_ctx` ...). With several, litellm's Router picks one at random per request, re-sends a
    request that failed on one server to another (`enable_weighted_failover`), and rests a server
    that keeps failing for `cooldown_time` seconds. What still fails goes back to DSPy, which
    retries it `num_retries` times; before each retry it sleeps the error's `retry_after`, which
    this engine sets to the server's own Retry-After, else to `retry_backoff` doubling per failure
    of the same request, either way at most `MAX_RETRY_WAIT`. With neither, DSPy waits its own
    1 s, 2 s, 4 s ... (at most 60 s).
    """

    def __init__(self, servers: list[dict], *, retry_backoff: float | None = None,
                 cooldown_time: float = DEFAULT_COOLDOWN):
        self.servers = servers
        self.retry_backoff = retry_backoff
        self.cooldown_time = cooldown_time
        self._router = None
        self._router_lock = threading.Lock()
        self._last_failure = threading.local()  # DSPy retries a request on the thread that sent it

    def complete(self, request):
        from dspy.clients.engines.base import validate_request
        from dspy.clients.engines.litellm_errors import litellm_errors
        from dspy.clients.lm15_boundary import request_kwargs, response_value

        validate_request(request)
        data = request_kwargs(request, "chat")
        if request.config.top_k is not None:  # not in OpenAI's dialect; litellm maps it per provider
            data["top_k"] = request.config.top_k
        if "max_completion_tokens" in data:
            # The dialect's name for it; older local servers (llama.cpp, vLLM < 0.6) read only
            # max_tokens, which litellm renames for each provider (num_predict for Ollama).
            data["max_tokens"] = data.pop("max_completion_tokens")
        try:
            with litellm_errors(model=request.model):
                raw = self._send(data)
        except Exception as error:
            self._set_retry_wait(error, request)
            raise
        self._last_failure.request = None
        return response_value(raw, "chat", request)

    def stream(self, request):
        """The whole reply as stream events: evaluation needs no token-by-token output."""
        from dspy.lm15 import response_to_events

        yield from response_to_events(self.complete(request))

    def close(self) -> None:
        pass

    def __deepcopy__(self, memo):
        return self  # engines are borrowed: copies of an LM share its servers and their cooldowns

    def dump_state(self) -> dict:
        """Lets `program.save` keep an LM set on a predictor: servers without keys or headers."""
        servers = [{key: value for key, value in server.items() if not is_secret_setting(key)} for server in self.servers]
        return {"servers": servers, "retry_backoff": self.retry_backoff, "cooldown_time": self.cooldown_time}

    @classmethod
    def load_state(cls, state: dict) -> "EndpointEngine":
        return cls(state["servers"], retry_backoff=state.get("retry_backoff"),
                   cooldown_time=state.get("cooldown_time", DEFAULT_COOLDOWN))

    def _send(self, data: dict):
        from dspy.clients._litellm import get_litellm

        litellm = get_litellm(feature="instret endpoints")  # with DSPy's defaults: no telemetry, no banners
        if len(self.servers) == 1:
            # A Router over one server adds nothing but its cooldown, which would turn a few
            # failures into "no deployments available" for every request.
            return litellm.completion(**{**self.servers[0], **data}, num_retries=0)
        return self.router().completion(model=GROUP, **data)

    def router(self):
        """litellm's Router over the servers, built on first use."""
        with self._router_lock:
            if self._router is None:
                from dspy.clients._litellm import get_litellm

                self._router = get_litellm(feature="instret endpoints").Router(
                    model_list=[{"model_name": GROUP, "litellm_params": dict(server)} for server in self.servers],
                    routing_strategy="simple-shuffle", enable_weighted_failover=True,
                    num_retries=0,  # DSPy retries; the Router only fails over between servers
                    cooldown_time=self.cooldown_time)
            return self._router

    def _set_retry_wait(self, error: BaseException, request) -> None:
        from dspy import lm15

        if not isinstance(error, (lm15.TransportError, lm15.TimeoutError, lm15.RateLimitError, lm15.ServerError)):
            return  # DSPy does not retry the others
        state = self._last_failure
        failures = state.failures + 1 if getattr(state, "request", None) is request else 1
        state.request, state.failures = request, failures
        wait = error.retry_after
        if wait is None and self.retry_backoff is not None:
            wait = self.retry_backoff * 2 ** (failures - 1)
        if wait is not None:
            error.retry_after = min(float(wait), MAX_RETRY_WAIT)
