"""Is a model's server there? Cheap checks made before long work, with the fix to print."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from instret.models import backend_of


def _get_json(url: str, timeout: float):
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (user-configured URL)
        return json.loads(response.read().decode("utf-8") or "null")


def server_problem(lm, timeout: float = 3.0) -> str | None:
    """What stops `lm` from answering, in words a user can act on; None when it looks ready.

    Only servers instret can check without spending tokens are checked (Ollama and
    OpenAI-compatible servers given an api_base); hosted providers and in-process engines pass.
    """
    if not isinstance(getattr(lm, "_engine_spec", "litellm"), str):
        return None
    model, api_base = lm.model, (lm.kwargs.get("api_base") or "").rstrip("/")
    backend = backend_of(model)
    name = model.split("/", 1)[1] if "/" in model else model
    if backend == "ollama":
        try:
            tags = _get_json(f"{api_base}/api/tags", timeout) or {}
        except (urllib.error.URLError, OSError, ValueError) as error:
            return (f"no Ollama server answers at {api_base} ({_reason(error)}). Start one with `ollama serve` "
                    f"(or pass --teacher-api-base / set api_base in instret.toml), then `ollama pull {name}`.")
        present = {m.get("name") for m in tags.get("models", [])} | {m.get("model") for m in tags.get("models", [])}
        if name not in present and f"{name}:latest" not in present:
            return f"the Ollama server at {api_base} does not have {name}: run `ollama pull {name}` (or `instret models pull {name}`)."
        return None
    if backend == "openai" and api_base:
        try:
            _get_json(f"{api_base}/models", timeout)
        except urllib.error.HTTPError:
            return None  # it answered; some servers do not implement /models
        except (urllib.error.URLError, OSError, ValueError) as error:
            return f"no OpenAI-compatible server answers at {api_base} ({_reason(error)}): start it, or fix api_base."
    return None


def _reason(error: Exception) -> str:
    return str(getattr(error, "reason", error))
