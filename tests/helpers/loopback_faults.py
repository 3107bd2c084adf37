"""Helpers for `tests/helpers/loopback.py`: fault kinds, request records and the default DSPy responder.

Stdlib only. `dspy_responder` reads the prompt DSPy's ChatAdapter (or JSONAdapter) wrote and
answers every output field it lists, in that adapter's format, with values of the right type;
the values depend only on the request's text, so a prompt always gets the same answer.
`answers(answer="Paris")` pins some fields and lets the rest be generated.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Mapping

__all__ = ["FAULT_KINDS", "MALFORMED_TEXT", "ChatRequest", "DSPyResponder", "Recorded", "answers", "chat_reply",
           "check_fault", "count_tokens", "digest", "dspy_responder", "embedding", "http_status", "tagged",
           "value_for_schema", "DEFAULT_PARAMETERS", "pieces", "ollama_tag_entry", "ollama_show_payload",
           "apply_stop", "logprob_tokens", "default_logprob", "openai_logprobs"]

#: Fault kinds a schedule may name; any "http<NNN>" (e.g. "http503") also works.
FAULT_KINDS = ("http500", "http429", "timeout", "refuse", "close", "truncated", "empty", "malformed")
#: What "malformed" answers: prose with no `[[ ## field ## ]]` markers and no JSON.
MALFORMED_TEXT = "Well, I have thought about it and I am fairly sure the answer is somewhere in there."


def http_status(kind: str) -> int | None:
    """The status code an "http<NNN>" fault sends, else None."""
    match = re.fullmatch(r"http(\d{3})", kind or "")
    return int(match.group(1)) if match else None


def check_fault(kind):
    if kind is not None and kind not in FAULT_KINDS and http_status(kind) is None:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS} or 'http<NNN>'")
    return kind


def digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def embedding(text: str, dim: int) -> list[float]:
    """A deterministic, L2-normalised vector for `text` (counter-mode SHA-256)."""
    raw = b"".join(hashlib.sha256(f"{i}\x1f{text}".encode()).digest() for i in range((dim + 7) // 8))
    values = [int.from_bytes(raw[4 * i : 4 * i + 4], "little") / 2**31 - 1.0 for i in range(dim)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


# ---------------------------------------------------------------- Ollama payloads

DEFAULT_PARAMETERS = {"temperature": "0.7", "stop": '"<|im_end|>"'}
OLLAMA_DETAILS = {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                  "parameter_size": "3.1B", "quantization_level": "Q4_K_M"}


def pieces(text: str) -> list[str]:
    """How streamed content is cut: 32-character pieces, so field markers may straddle chunks."""
    return re.findall(r".{1,32}", text, re.S)


def ollama_tag_entry(name: str) -> dict:
    return {"name": tagged(name), "model": tagged(name), "modified_at": "2025-01-01T00:00:00Z",
            "size": 1_900_000_000, "digest": digest(name), "details": dict(OLLAMA_DETAILS)}


def ollama_show_payload(model: str, context_length: int, dim: int, parameters: dict) -> dict:
    """/api/show as Ollama answers it: `parameters` is Modelfile text, `model_info` carries
    `<arch>.context_length` (the model's trained window, not num_ctx)."""
    info = {"general.architecture": "llama", "general.basename": model, "general.parameter_count": 3_085_938_688,
            "llama.context_length": context_length, "llama.embedding_length": dim, "llama.block_count": 28,
            "tokenizer.ggml.model": "gpt2"}
    return {"license": "", "modelfile": f"FROM {tagged(model)}\n",
            "parameters": "\n".join(f"{k:<30} {v}" for k, v in parameters.items()),
            "template": "{{ if .System }}{{ .System }}\n{{ end }}{{ if .Tools }}{{ .Tools }}{{ end }}{{ .Prompt }}",
            "details": dict(OLLAMA_DETAILS), "model_info": info, "capabilities": ["completion", "tools"],
            "modified_at": "2025-01-01T00:00:00Z"}


# ---------------------------------------------------------------- requests


def text_of(content) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def count_tokens(text: str) -> int:
    return max(1, len(re.findall(r"\w+|[^\w\s]", text)))


# ---------------------------------------------------------------- stop sequences, token cap, log-probabilities

def apply_stop(text: str, stop, max_tokens=None) -> tuple[str, str]:
    """(text, finish_reason) as a server that honours `stop` and a token cap would return them:
    cut before the first stop sequence ("stop"), else after `max_tokens` tokens ("length")."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cuts = [text.find(s) for s in stops if s and s in text]
    text = text[:min(cuts)] if cuts else text
    if max_tokens:
        ends = [m.end() for m in re.finditer(r"\w+|[^\w\s]", text)]
        if len(ends) > int(max_tokens):
            return text[:ends[int(max_tokens) - 1]], "length"
    return text, "stop"


def logprob_tokens(text: str) -> list[str]:
    """`text` cut into tokens (a word or a sign, with the spaces before it) that join back to it."""
    return re.findall(r"\s*\w+|\s*[^\w\s]|\s+", text)


def default_logprob(token: str, request) -> float:
    """A deterministic log-probability in [-0.5, 0] for a token in a request."""
    return -int(digest(request.text, token)[:6], 16) / 0xFFFFFF / 2


def openai_logprobs(tokens: list[str], request, logprob=None, top: int = 0) -> dict:
    """The `logprobs` of an OpenAI chat choice: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
    `logprob(token, request) -> float` scores each token (default `default_logprob`); a token it
    scores None is left out, as llama.cpp leaves out tokens it held back as a possible stop sequence."""
    score = logprob or default_logprob
    content = []
    for token in tokens:
        value = score(token, request)
        if value is None:
            continue
        value = float(value)
        alternatives = [{"token": token, "logprob": value, "bytes": list(token.encode())}]
        alternatives += [{"token": f"{token}~{i}", "logprob": value - i, "bytes": list(f"{token}~{i}".encode())}
                         for i in range(1, top)]
        content.append({"token": token, "logprob": value, "bytes": list(token.encode()),
                        "top_logprobs": alternatives[:top]})
    return {"content": content}


def tagged(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    model: str
    body: dict
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # case-insensitive lookups
    time: float = field(default_factory=time.time)

    @property
    def options(self) -> dict:
        """Ollama `options`, or the OpenAI sampling params (everything but model/messages)."""
        if self.path.startswith("/api/"):
            return dict(self.body.get("options") or {})
        return {k: v for k, v in self.body.items() if k not in ("model", "messages", "input")}


@dataclass
class ChatRequest:
    """What a responder sees: `options` are Ollama options or OpenAI params (`params` is an alias)."""

    model: str
    messages: list[dict]
    options: dict
    path: str = "/api/chat"
    stream: bool = False
    body: dict = field(default_factory=dict)

    @property
    def params(self) -> dict:
        return self.options

    @property
    def system(self) -> str:
        return next((text_of(m.get("content")) for m in self.messages if m.get("role") == "system"), "")

    @property
    def user(self) -> str:
        return next((text_of(m.get("content")) for m in reversed(self.messages) if m.get("role") == "user"), "")

    @property
    def text(self) -> str:
        return "\n\n".join(text_of(m.get("content")) for m in self.messages)

    @property
    def json_schema(self) -> dict | None:
        """The schema of a structured-output request (Ollama `format`, OpenAI `response_format`)."""
        if isinstance(self.body.get("format"), dict):
            return self.body["format"]
        fmt = self.body.get("response_format") or {}
        return (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None

    @property
    def wants_json(self) -> bool:
        fmt = self.body.get("response_format") or {}
        return self.body.get("format") == "json" or fmt.get("type") in ("json_object", "json_schema")


# ---------------------------------------------------------------- values from types and schemas


def value_for_schema(schema: dict, seed: str, defs: dict | None = None, name: str = "value", index: int = 0,
                     depth: int = 0):
    """A value that validates against a (pydantic-made) JSON schema; strings are never empty.

    Past depth 4 optional parts are left out (None, no optional keys, empty arrays) so that
    recursive models end.
    """
    defs = defs if defs is not None else schema.get("$defs", {})
    deep = depth >= 4
    seed = digest(seed, name, str(index))
    if "$ref" in schema:
        return value_for_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], seed, defs, name, index, depth)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][int(seed[:8], 16) % len(schema["enum"])]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            if deep and any(s.get("type") == "null" for s in schema[key]):
                return None
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return value_for_schema(options[0], seed, defs, name, index, depth)
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    number = int(seed[:8], 16)
    if kind == "object":
        props = schema.get("properties")
        if props:
            required = schema.get("required", props) if deep else props
            return {key: value_for_schema(sub, seed, defs, key, 0, depth + 1)
                    for key, sub in props.items() if key in required}
        extra = schema.get("additionalProperties")
        if extra is False:
            return {}
        sub = extra if isinstance(extra, dict) else {"type": "string"}
        return {f"key{i + 1}": value_for_schema(sub, seed, defs, name, i, depth + 1) for i in range(0 if deep else 3)}
    if kind == "array":
        if schema.get("prefixItems"):
            return [value_for_schema(s, seed, defs, name, i, depth + 1) for i, s in enumerate(schema["prefixItems"])]
        count = min(max(0 if deep else 3, schema.get("minItems", 0)), schema.get("maxItems", 3))
        items = [value_for_schema(schema.get("items", {}), seed, defs, name, i, depth + 1) for i in range(count)]
        if schema.get("uniqueItems"):
            unique = {json.dumps(item, sort_keys=True): item for item in items}
            items = list(unique.values())
        return items
    if kind == "integer":
        low = schema["minimum"] if "minimum" in schema else schema.get("exclusiveMinimum", -1) + 1
        high = schema["maximum"] if "maximum" in schema else schema.get("exclusiveMaximum", low + 100) - 1
        return int(low) + number % max(1, int(high) - int(low) + 1)
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 100))
        return low + (high - low) * (number % 998 + 1) / 1000
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    fmt = schema.get("format")
    if fmt == "date-time":
        return f"2024-01-{1 + index % 28:02d}T12:00:00Z"
    if fmt == "date":
        return f"2024-01-{1 + index % 28:02d}"
    if fmt == "time":
        return "12:00:00"
    if fmt == "uuid":
        return str(uuid.UUID(seed[:32]))
    if fmt == "email":
        return f"user{index}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{seed[:8]}"
    text = f"{name} {seed[:6]}"
    min_len, max_len = schema.get("minLength", 1), schema.get("maxLength")
    text = text.ljust(min_len, "x")
    return text[:max_len] if max_len else text


def value_for_note(note: str | None, seed: str, name: str):
    """A value for one output field from the `# note:` DSPy writes after its placeholder."""
    note = (note or "").strip()
    number = int(digest(seed, name)[:8], 16)
    if note.startswith("must be True or False"):
        return True
    if note.startswith("must be a single int value"):
        return number % 100
    if note.startswith("must be a single float value"):
        return round((number % 10000) / 100, 2)
    match = re.match(r"must (?:exactly match \(no extra characters\) one of|be one of): (.*)", note)
    if match:
        options = match.group(1).split("; ")
        return options[number % len(options)]
    if note.startswith("must adhere to the JSON schema: "):
        schema = json.loads(note[len("must adhere to the JSON schema: ") :])
        return value_for_schema(schema, seed, name=name)
    return f"{name} {digest(seed, name)[:6]}"


def render(value) -> str:
    """One field's text the way DSPy writes it: strings bare, containers as JSON, bools as Python."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def chat_reply(fields: dict) -> str:
    """A ChatAdapter-formatted answer: `[[ ## field ## ]]` sections, then `[[ ## completed ## ]]`."""
    body = "\n\n".join(f"[[ ## {name} ## ]]\n{render(value)}" for name, value in fields.items())
    return f"{body}\n\n[[ ## completed ## ]]"


# ---------------------------------------------------------------- reading DSPy prompts

FIELD_LINE = re.compile(r"^\d+\. `(\w+)` \(")
PLACEHOLDER = re.compile(r"^\{(\w+)\}(?:\s+# note: the value you produce (.*))?$")


def output_fields(system: str) -> tuple[dict[str, str | None], str]:
    """({field: note or None}, "chat" | "json") from a DSPy system prompt; ({}, "") if not one."""
    if "Your output fields are:" not in system:
        return {}, ""
    listing = system.split("Your output fields are:", 1)[1].split("All interactions will be structured", 1)[0]
    names = [m.group(1) for line in listing.splitlines() if (m := FIELD_LINE.match(line))]
    notes: dict[str, str | None] = {}
    style = "chat"
    if "Outputs will be a JSON object with the following fields." in system:
        style = "json"
        block = system.split("Outputs will be a JSON object with the following fields.", 1)[1]
        block = block.split("In adhering to this structure", 1)[0].strip()
        try:
            lines = [str(v) for v in json.loads(block).values()]
        except ValueError:
            lines = block.splitlines()
    else:
        lines = system.splitlines()
    for line in lines:
        match = PLACEHOLDER.match(line.strip())
        if match and match.group(1) in names:
            notes[match.group(1)] = match.group(2)
    return {name: notes.get(name) for name in names}, style


class DSPyResponder:
    """Answers a DSPy prompt; `fields` pins values (or `callable(request) -> value`) by field name.

    A request that carries a JSON schema (Ollama `format`, OpenAI `response_format`) gets an
    object built from that schema; a prompt with no DSPy output fields gets `fallback` (or a
    short deterministic sentence).
    """

    def __init__(self, fields: dict | None = None, fallback: str | None = None):
        self.fields = dict(fields or {})
        self.fallback = fallback

    def __call__(self, request) -> str:
        seed = digest(request.user, request.system)
        fields, style = output_fields(request.system or request.text)
        schema = request.json_schema
        if schema is not None:
            style = "json"
            values = value_for_schema(schema, seed) if schema else {}
            values = values if isinstance(values, dict) else {"value": values}
        else:
            values = {name: value_for_note(note, seed, name) for name, note in fields.items()}
        if not values and style != "json":
            return self.fallback if self.fallback is not None else f"Loopback reply {seed[:8]}."
        for name, value in self.fields.items():
            if name in values or not fields:
                values[name] = value(request) if callable(value) else value
        if style == "json" or request.wants_json:
            return json.dumps({k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v for k, v in values.items()})
        return chat_reply(values)


dspy_responder = DSPyResponder()


def answers(**fields) -> DSPyResponder:
    """`answers(answer="Paris")`: the DSPy responder with some fields pinned."""
    return DSPyResponder(fields)
