"""Which teacher, student and embedder to use: TOML file, then environment, then flags.

    # instret.toml
    [teacher]
    model = "ollama_chat/qwen2.5:14b"
    api_base = "http://gpu-box:11434"
    [student]
    model = "openai/Qwen2.5-3B-Instruct"
    api_base = "http://localhost:8000/v1"
    [embedder]
    model = "all-MiniLM-L6-v2"

Environment variables `INSTRET_TEACHER`, `INSTRET_STUDENT`, `INSTRET_EMBEDDER` (and
`..._API_BASE`) override the file; CLI flags override both.

Teacher and student always have a `max_tokens`: the file's, a flag's (`--max-tokens`,
`--teacher-max-tokens`), else the role's default in `instret.lm.spec.DEFAULT_MAX_TOKENS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from instret.lm.spec import ModelSpec, backend_of, with_role_cap

# Embedded defaults: llama.cpp in-process (instret.lm.local.engine), weights pulled on first use; Ollama,
# vLLM and hosted models are one model string away.
DEFAULT_TEACHER = "local/qwen2.5-coder-1.5b"
DEFAULT_STUDENT = "local/qwen2.5-coder-0.5b"
# A server named without a model (`--student-api-base URL`, `api_base` alone) keeps its meaning from
# before the embedded defaults: the Ollama default model on that server.
SERVER_DEFAULTS = {"teacher": "ollama_chat/qwen2.5:14b", "student": "ollama_chat/qwen2.5:3b"}
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
ROLES = ("teacher", "student", "embedder")
_SPEC_KEYS = {f.name for f in fields(ModelSpec)}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    teacher: ModelSpec
    student: ModelSpec
    embedder: ModelSpec
    source: str | None = None


def load_settings(path: str | os.PathLike | None = None, *, env=None, **flags) -> Settings:
    """Read settings; `flags` are `teacher=`, `student=`, `embedder=`, `<role>_api_base=` and
    `<role>_max_tokens=`.

    The file is `path`, else `$INSTRET_CONFIG`, else `./instret.toml` when present.
    """
    env = os.environ if env is None else env
    path = path or env.get("INSTRET_CONFIG") or ("instret.toml" if Path("instret.toml").exists() else None)
    table = _read_toml(Path(path)) if path else {}
    defaults = {"teacher": DEFAULT_TEACHER, "student": DEFAULT_STUDENT, "embedder": DEFAULT_EMBEDDER}
    specs = {}
    for role in ROLES:
        section = dict(table.get(role, {}))
        unknown = set(section) - _SPEC_KEYS
        if unknown:
            raise ConfigError(f"{path}: [{role}] has unknown keys {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}")
        chosen = "model" in section
        section.setdefault("model", defaults[role])
        for model, api_base in ((env.get(f"INSTRET_{role.upper()}"), env.get(f"INSTRET_{role.upper()}_API_BASE")),
                                (flags.get(role), flags.get(f"{role}_api_base"))):
            if model and backend_of(model) != backend_of(section["model"]):
                section.pop("api_base", None)  # an Ollama URL from the file means nothing to another backend
            section.update({key: value for key, value in (("model", model), ("api_base", api_base)) if value})
            chosen = chosen or bool(model)
        if not chosen and section.get("api_base") and role in SERVER_DEFAULTS:
            section["model"] = SERVER_DEFAULTS[role]
        if flags.get(f"{role}_max_tokens") is not None:
            section["max_tokens"] = int(flags[f"{role}_max_tokens"])
        specs[role] = with_role_cap(ModelSpec(**section), role)
    return Settings(**specs, source=str(path) if path else None)


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            table = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None
    unknown = set(table) - set(ROLES)
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)}; expected {list(ROLES)}")
    return table
