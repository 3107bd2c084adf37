"""Ollama models: list, pull (with a byte progress bar), show, and the check made before long runs.

    >>> [model.name for model in list_models()]             # what the Ollama server holds
    ['qwen2.5:3b', 'qwen2.5:14b']
    >>> pull_model("qwen2.5:3b")                            # tqdm bar in bytes; 'success'
    >>> show_model("qwen2.5:3b").context_length             # the model's trained window
    32768
    >>> ensure_models_present([settings.teacher, settings.student])
    ['the Ollama server at http://localhost:11434 does not have qwen2.5:14b: run `ollama pull qwen2.5:14b` ...']

`presence_checks` is instret's one probe of "is the server up, is the model there": `ensure_models_present`,
`server_problem` (before `instret corpus build` calls the teacher) and `instret doctor`
all go through it. OpenAI-compatible servers are probed here too (GET /models), so that a
pre-run check covers every configured model in one call.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Mapping

from instret.lm.spec import ModelSpec, as_spec, backend_of

PROBE_TIMEOUT = 3.0  # seconds; a probe must not hold up a run that would fail anyway
REQUEST_TIMEOUT = 30.0


class OllamaUnavailable(ConnectionError):
    """No Ollama server answers at `host`."""

    def __init__(self, host: str, reason: str):
        self.host, self.reason = host, reason
        super().__init__(f"no Ollama server answers at {host} ({reason}). Start one with `ollama serve`")


@dataclass(frozen=True)
class InstalledModel:
    """One entry of `ollama list`."""

    name: str
    size: int | None = None  # bytes on disk
    parameter_size: str | None = None  # e.g. "3.1B"
    quantization: str | None = None  # e.g. "Q4_K_M"
    modified_at: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What `ollama show` says about a model that matters to instret."""

    name: str
    context_length: int | None  # trained window, from model_info["<arch>.context_length"]
    num_ctx: int | None  # window set in the Modelfile's parameters; None: Ollama's default applies
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    capabilities: tuple[str, ...] = ()


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


def ollama_name(model: str) -> str:
    """'ollama_chat/qwen2.5:3b' → 'qwen2.5:3b'; other names are returned unchanged."""
    return model.split("/", 1)[1] if "/" in model and backend_of(model) == "ollama" else model


def tagged(name: str) -> str:
    """Ollama lists 'qwen2.5' as 'qwen2.5:latest'; compare names in that form."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def default_host() -> str:
    # The same rule as an `ollama_chat/...` string without api_base: $OLLAMA_HOST, else localhost.
    return ModelSpec(model="ollama/_").resolved_api_base


def ollama_client(host: str | None = None, timeout=REQUEST_TIMEOUT):
    import ollama

    return ollama.Client(host=host or default_host(), timeout=timeout)


@contextmanager
def _reaching(host: str):
    """Turn the client's transport errors (it raises several kinds) into `OllamaUnavailable`."""
    import httpx

    try:
        yield
    except httpx.TransportError as error:  # streamed requests raise these unwrapped
        raise OllamaUnavailable(host, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__) from None
    except ConnectionError as error:
        if isinstance(error, OllamaUnavailable):
            raise
        raise OllamaUnavailable(host, "cannot connect") from None


def list_models(host: str | None = None, *, timeout: float = REQUEST_TIMEOUT) -> list[InstalledModel]:
    """The models the Ollama server at `host` holds, by name."""
    host = host or default_host()
    with _reaching(host):
        listing = ollama_client(host, timeout).list()
    models = []
    for entry in listing.models:
        details = entry.details
        models.append(InstalledModel(
            name=entry.model or "", size=int(entry.size) if entry.size is not None else None,
            parameter_size=getattr(details, "parameter_size", None), quantization=getattr(details, "quantization_level", None),
            modified_at=entry.modified_at.strftime("%Y-%m-%d") if entry.modified_at else None))
    return sorted(models, key=lambda model: model.name)


def pull_model(name: str, host: str | None = None, *, progress: bool = True) -> str:
    """Download `name` onto the Ollama server, showing a tqdm bar in bytes; returns the last status.

    Ollama streams progress per layer (`digest`, `completed`, `total`); the bar sums the layers
    seen so far, so its total grows as new layers start.
    """
    import httpx
    from tqdm.auto import tqdm

    host, name = host or default_host(), ollama_name(name)
    # No read timeout: verifying a large download can leave the stream quiet for minutes.
    client = ollama_client(host, timeout=httpx.Timeout(None, connect=PROBE_TIMEOUT))
    totals: dict[str, int] = {}
    completed: dict[str, int] = {}
    status = ""
    with tqdm(total=None, desc=f"pulling {name}", unit="B", unit_scale=True, unit_divisor=1024,
              disable=not progress) as bar, _reaching(host):
        for update in client.pull(name, stream=True):
            status = update.status or status
            if update.digest and update.total:
                totals[update.digest] = update.total
                completed[update.digest] = update.completed or 0
                bar.total = sum(totals.values())
                bar.update(sum(completed.values()) - bar.n)
            bar.set_postfix_str(status)
    return status


def show_model(name: str, host: str | None = None, *, timeout: float = REQUEST_TIMEOUT) -> ModelInfo:
    """Context length and details of an installed model; raises `ollama.ResponseError` (404) if absent."""
    host, name = host or default_host(), ollama_name(name)
    with _reaching(host):
        shown = ollama_client(host, timeout).show(name)
    info = dict(shown.modelinfo or {})
    context_length = next((int(value) for key, value in info.items() if key.endswith(".context_length")), None)
    details = shown.details
    return ModelInfo(name=tagged(name), context_length=context_length, num_ctx=_parameter(shown.parameters, "num_ctx"),
                     family=getattr(details, "family", None), parameter_size=getattr(details, "parameter_size", None),
                     quantization=getattr(details, "quantization_level", None),
                     capabilities=tuple(shown.capabilities or ()))


def _parameter(modelfile_parameters: str | None, key: str) -> int | None:
    """An integer from `ollama show`'s parameters text ("num_ctx    8192" lines)."""
    for line in (modelfile_parameters or "").splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] == key:
            try:
                return int(parts[1].strip().strip('"'))
            except ValueError:
                return None
    return None


# ---------------------------------------------------------------- checks before long runs


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
        from instret.lm.local_lm import local_checks

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
