"""Is a model ready to answer? The probes made before long runs and by `instret doctor`.

    >>> ensure_models_present({"teacher": settings.teacher, "student": settings.student})
    ['the Ollama server at http://localhost:11434 does not have qwen2.5:14b: run `ollama pull qwen2.5:14b` ...']
    >>> [check.line() for check in presence_checks("local/qwen2.5-coder-0.5b")]
    ['OK       local/qwen2.5-coder-0.5b weights: ... (sha256 verified)']

`presence_checks` is instret's one probe of "is the server up, is the model there", for every
backend: `ensure_models_present`, `server_problem` (before `instret corpus build` calls the
teacher) and `instret doctor` all go through it. Ollama servers are asked for their models,
OpenAI-compatible servers answer GET /models, and local models have their weights and adapters
checked (and, with `start`, the engine started). It sits above both backends, so neither
imports the other.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Iterable, Mapping

from instret.lm.local import catalog
from instret.lm.local.engine import ENGINE_SETTINGS, LocalEngineError, LocalModel, local_server, parse_local
from instret.lm.local.gguf import GGUFError, check_gguf
from instret.lm.servers.ollama import (PROBE_TIMEOUT, OllamaUnavailable, default_host, list_models, ollama_name,
                                       show_model, tagged)
from instret.lm.spec import ModelSpec, as_spec


@dataclass(frozen=True)


class Check:
    """One line of `instret doctor`: `problem` is None when it passed and otherwise says the fix."""

    name: str
    detail: str = ""
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        return f"{'OK' if self.ok else 'PROBLEM':<8} {self.name}: {self.detail if self.ok else self.problem}"


def ensure_models_present(specs: "Iterable[ModelSpec | str] | Mapping[str, ModelSpec | str]", *,
                          timeout: float = PROBE_TIMEOUT) -> list[str]:
    """Problems (each with its fix) that stop the given models from answering; [] when all look ready.

    Ollama models must be installed on their server; OpenAI-compatible servers given an api_base
    must answer /models; hosted providers are not checked (that would spend tokens). Pass a mapping
    such as `{"teacher": settings.teacher, "student": settings.student}` to name roles in the fixes.
    """
    named = specs.items() if isinstance(specs, Mapping) else ((None, spec) for spec in specs)
    problems: list[str] = []
    for role, spec in named:
        problem = model_problem(spec, role=role, timeout=timeout)
        if problem and problem not in problems:  # teacher and student often share a server
            problems.append(problem)
    return problems


def model_problem(spec: "ModelSpec | str", *, role: str | None = None, timeout: float = PROBE_TIMEOUT) -> str | None:
    """The first thing that stops `spec` from answering, in words a user can act on; None if ready."""
    return next((check.problem for check in presence_checks(spec, role=role, timeout=timeout) if not check.ok), None)


def presence_checks(spec: "ModelSpec | str", *, role: str | None = None, timeout: float = PROBE_TIMEOUT,
                    with_context: bool = False) -> list[Check]:
    """Server reachable, then model present (Ollama), then optionally its context window.

    Stops at the first problem: nothing after it can be checked. Returns [] for a model no
    server probe applies to (a hosted provider, or no api_base).
    """
    spec = as_spec(spec)
    label = role or spec.model
    base = spec.resolved_api_base
    if spec.backend == "ollama":
        return _ollama_checks(spec, label, base, role, timeout, with_context)
    if spec.backend == "openai" and base:
        return [_openai_server_check(label, base, timeout)]
    if spec.backend == "local":  # weights and adapters only: the engine starts at first use
        return local_checks(spec, role=role)
    return []


def _ollama_checks(spec: ModelSpec, label: str, base: str, role: str | None, timeout: float,
                   with_context: bool) -> list[Check]:
    from ollama import ResponseError

    name = ollama_name(spec.model)
    pull = f"`ollama pull {name}` (or `instret models pull {name}{'' if base == default_host() else f' --host {base}'}`)"
    where = f"api_base under [{role}] in instret.toml or INSTRET_{role.upper()}_API_BASE" if role else "api_base"
    try:
        installed = {tagged(model.name) for model in list_models(base, timeout=timeout)}
    except OllamaUnavailable as error:
        return [Check(f"{label} server", problem=f"{error} (or point {where} at the right server), then {pull}.")]
    except ResponseError as error:
        return [Check(f"{label} server", problem=(
            f"the server at {base} does not answer like Ollama (/api/tags: {error}); for an OpenAI-compatible "
            f"server write the model as openai/{name} with api_base ending in /v1."))]
    checks = [Check(f"{label} server", detail=f"Ollama answers at {base}")]
    if tagged(name) not in installed:
        checks.append(Check(f"{label} model", problem=f"the Ollama server at {base} does not have {name}: run {pull}."))
        return checks
    checks.append(Check(f"{label} model", detail=f"{name} is present on {base}"))
    if with_context:
        checks.append(_context_check(spec, label, base, timeout))
    return checks


def _context_check(spec: ModelSpec, label: str, base: str, timeout: float) -> Check:
    from ollama import ResponseError

    try:
        info = show_model(spec.model, base, timeout=timeout)
    except (OllamaUnavailable, ResponseError) as error:
        return Check(f"{label} context", problem=f"`ollama show {ollama_name(spec.model)}` failed ({error}).")
    trained = f"{info.context_length} tokens" if info.context_length else "unknown"
    if spec.num_ctx and info.context_length and spec.num_ctx > info.context_length:
        return Check(f"{label} context", problem=(
            f"num_ctx {spec.num_ctx} is larger than {info.name}'s trained window ({trained}): "
            f"lower num_ctx to at most {info.context_length}."))
    if spec.num_ctx or info.num_ctx:
        window = spec.num_ctx or info.num_ctx
        source = "from instret's settings" if spec.num_ctx else "from the Modelfile"
        return Check(f"{label} context", detail=f"trained window {trained}; num_ctx {window} ({source})")
    # Not a problem, but the commonest cause of silently truncated prompts with Ollama.
    return Check(f"{label} context", detail=(
        f"trained window {trained}; num_ctx not set, so Ollama's default window applies "
        f"(set num_ctx in the model's section of instret.toml for long prompts)"))


def _openai_server_check(label: str, base: str, timeout: float) -> Check:
    try:
        with urllib.request.urlopen(f"{base}/models", timeout=timeout) as response:  # noqa: S310 (user's URL)
            json.loads(response.read().decode("utf-8") or "null")
    except urllib.error.HTTPError:
        pass  # it answered; some servers do not implement /models
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return Check(f"{label} server", problem=(
            f"no OpenAI-compatible server answers at {base} ({reason}): start it, or fix api_base."))
    return Check(f"{label} server", detail=f"OpenAI-compatible server answers at {base}")


PROBE_SENTENCE = "A baker has 12 loaves and sells 5. How many are left?"


def server_problem(lm, timeout: float = 3.0) -> str | None:
    """What stops `lm` from answering, in words a user can act on; None when it looks ready.

    Only servers instret can check without spending tokens are checked (Ollama and
    OpenAI-compatible servers given an api_base); hosted providers and in-process engines pass.
    """
    if isinstance(lm, ModelSpec):  # a spec is checked as written, several servers included
        return model_problem(lm, timeout=timeout)
    if not isinstance(getattr(lm, "_engine_spec", "litellm"), str):
        return None
    spec = ModelSpec(model=lm.model, api_base=(lm.kwargs.get("api_base") or "").rstrip("/") or None)
    return model_problem(spec, timeout=timeout)


def local_checks(spec: "ModelSpec | str", *, role: str | None = None, start: bool = False) -> list:
    """What `instret doctor` and the checks before a run say about a local model.

    Weights present (a catalog model not yet downloaded is fine: it is pulled at first use),
    GGUF files whole and of the right kind, and with `start`, that the engine starts and answers.
    """
    spec = as_spec(spec)
    label = role or spec.model
    try:
        model = parse_local(spec.model)
    except ValueError as error:
        return [Check(f"{label} model", problem=str(error))]
    checks = []
    if model.in_catalog:
        item = catalog.entry(model.weights)
        state = catalog.status(model.weights)
        if state == "absent":
            checks.append(Check(f"{label} weights", detail=(
                f"{model.weights} ({item.size / 1e6:,.0f} MB) is not downloaded yet: it is fetched at first use, "
                f"or now with `instret models pull {spec.model.split('+')[0]}`")))
            start = False
        elif state != "present" or catalog.cached_path(model.weights) is None:
            return checks + [Check(f"{label} weights", problem=(
                f"the cached {catalog.model_path(model.weights)} is damaged: run "
                f"`instret models pull {spec.model.split('+')[0]}` to fetch it again"))]
        else:
            checks.append(Check(f"{label} weights", detail=f"{catalog.model_path(model.weights)} (sha256 verified)"))
    else:
        try:
            info = check_gguf(model.weights_path())
        except (GGUFError, OSError) as error:
            return checks + [Check(f"{label} weights", problem=str(error))]
        checks.append(Check(f"{label} weights", detail=f"{info.path}: {info.name or info.architecture}, "
                                                       f"trained window {info.context_length} tokens"))
    for path, _ in model.adapters:
        try:
            check_gguf(path, adapter=True)
        except (GGUFError, OSError) as error:
            return checks + [Check(f"{label} adapter", problem=str(error))]
        checks.append(Check(f"{label} adapter", detail=f"{path} is a GGUF LoRA adapter"))
    if start:
        checks.append(_engine_check(spec, model, label))
    return checks


def _engine_check(spec: ModelSpec, model: LocalModel, label: str):
    try:
        settings = {key: spec.extra[key] for key in ENGINE_SETTINGS if key in spec.extra}
        server = local_server(model, n_ctx=spec.num_ctx, progress=False, **settings)
        body = json.dumps({"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 4}).encode()
        request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            json.loads(response.read())
    except (LocalEngineError, OSError, ValueError) as error:
        return Check(f"{label} engine", problem=str(error))
    started = f" (started in {server.started_seconds:.1f} s)" if server.started_seconds else ""
    return Check(f"{label} engine", detail=(f"llama.cpp answers at {server.url}{started}: {server.settings.n_parallel} "
                                            f"slots × {server.n_ctx} tokens"))
