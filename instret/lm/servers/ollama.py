"""Ollama models: list, pull (with a byte progress bar), show.

    >>> [model.name for model in list_models()]             # what the Ollama server holds
    ['qwen2.5:3b', 'qwen2.5:14b']
    >>> pull_model("qwen2.5:3b")                            # tqdm bar in bytes; 'success'
    >>> show_model("qwen2.5:3b").context_length             # the model's trained window
    32768

The checks made before long runs ("is the server up, is the model there") are in `instret.lm.checks`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from instret.lm.spec import ModelSpec, backend_of

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


