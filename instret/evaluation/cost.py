"""The teacher's cost, split three ways, and its price: what every method is read against.

    >>> parse_price("input=2.5,cached=1.25,output=10")     # `--price`, USD per million tokens
    >>> default_price(teacher_spec)                         # litellm's cost map, or the local ratio
    >>> price.of(computed=300, cached=700, written=100)     # what those tokens cost

The three kinds are the teacher's tokens *written* (completion), *read and computed* (prompt tokens
the server processed) and *read from the server's prompt cache* (prompt tokens it reused from an
earlier request). Where the server did not report its cache, every prompt token is priced as
computed, an upper bound, and the table says so.
"""

from __future__ import annotations

from dataclasses import dataclass

KEYS = ("input", "cached", "output")


@dataclass(frozen=True)
class Price:
    """Per million tokens: `input` read and computed, `cached` read from the prompt cache, `output` written."""

    input: float
    cached: float
    output: float
    unit: str = "USD"  # "USD", or "ratio" for the local default: relative cost, not money
    source: str = "--price"  # where the figures come from, for the table's footnote

    def of(self, computed: float, cached: float | None, written: float) -> float:
        """The price of those tokens; `cached` None (not reported): every prompt token as computed."""
        read_price = computed * self.input + (cached or 0) * self.cached
        return (read_price + written * self.output) / 1_000_000

    def describe(self) -> str:
        figures = f"input {self.input:g}, cached {self.cached:g}, output {self.output:g} per million tokens"
        unit = "a ratio, not dollars" if self.unit == "ratio" else self.unit
        return f"{figures} ({unit}; {self.source})"


#: The default for a self-hosted teacher (local/, Ollama, an OpenAI-compatible server): what it
#: costs is machine time, so a ratio, not dollars. Writing a token costs 4 of reading one: on this
#: repository's 2-core machine llama.cpp computes the 0.5B's prompt at 66 tokens/s and writes at
#: 21 tokens/s (3.1x), on a GPU the gap is wider (prompts are batched, writing is memory-bound),
#: and hosted list prices put output at 4x input (gpt-4o, gpt-4o-mini, gpt-4.1-mini; 5x Claude).
#: A prompt token read from the cache costs 0.1: llama.cpp skips its computation (776 cached of a
#: 784-token prompt took 0.2 s instead of 12 s), and providers charge 0.1x (Claude, Gemini,
#: DeepSeek) to 0.5x (gpt-4o) for it.
LOCAL_PRICE = Price(1.0, 0.1, 4.0, unit="ratio", source="the default for a self-hosted teacher")


def parse_price(text: str, flag: str = "--price") -> Price:
    """`input=X,cached=Y,output=Z` in USD per million tokens; `cached` left out: the input price."""
    given: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        key, equals, number = (s.strip() for s in part.partition("="))
        if not equals or key not in KEYS:
            raise ValueError(f"{flag}: {part!r} is not KEY=NUMBER with KEY one of {', '.join(KEYS)} "
                             f"(e.g. {flag} input=0.15,cached=0.075,output=0.6)")
        if key in given:
            raise ValueError(f"{flag}: {key} is given twice")
        try:
            value = float(number)
        except ValueError:
            raise ValueError(f"{flag}: {key}={number}: {number!r} is not a number") from None
        if not value >= 0 or value == float("inf"):  # also refuses nan
            raise ValueError(f"{flag}: {key}={number}: a price is a finite number of 0 or more")
        given[key] = value
    missing = [key for key in ("input", "output") if key not in given]
    if missing:
        raise ValueError(f"{flag}: give {' and '.join(f'{key}=' for key in missing)} too (USD per million tokens)")
    return Price(given["input"], given.get("cached", given["input"]), given["output"], source=flag)


def default_price(teacher) -> Price:
    """The price of `teacher` (a `ModelSpec`, model string or `dspy.LM`) when `--price` is not given:
    litellm's cost map for a hosted model, `LOCAL_PRICE` for a self-hosted one or one the map lacks."""
    model, hosted = _model_of(teacher)
    if not hosted:
        return LOCAL_PRICE
    try:
        import litellm

        info = litellm.get_model_info(model)
    except Exception:  # not in the map: litellm raises
        info = {}
    inputs, outputs = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if inputs is None or outputs is None:
        return Price(LOCAL_PRICE.input, LOCAL_PRICE.cached, LOCAL_PRICE.output, unit="ratio",
                     source=f"{model} is not in litellm's cost map; give --price")
    cached = info.get("cache_read_input_token_cost")
    source = f"litellm's cost map for {model}" + ("" if cached is not None else ", which has no cached price")
    return Price(inputs * 1e6, (inputs if cached is None else cached) * 1e6, outputs * 1e6, source=source)


def _model_of(teacher) -> tuple[str, bool]:
    """(model string, hosted or not). Self-hosted: local/, Ollama, a server URL, or an engine of its own."""
    from instret.lm.spec import ModelSpec, as_spec, backend_of

    if teacher is None or isinstance(teacher, (str, ModelSpec)):
        spec = as_spec(teacher or "")
        return spec.model, spec.backend not in ("local", "ollama") and not spec.endpoints and bool(spec.model)
    model = str(getattr(teacher, "model", ""))
    engine = getattr(teacher, "engine", None)  # an object: instret's local or routing engine, a test's script
    kwargs = getattr(teacher, "kwargs", {}) or {}
    self_hosted = (engine is not None and not isinstance(engine, str)) or bool(kwargs.get("api_base"))
    return model, not self_hosted and bool(model) and backend_of(model) not in ("local", "ollama")


def known_cached(pairs) -> int | None:
    """Sum of the cached counts of (prompt tokens, cached or None) pairs; None if one that read a
    prompt did not report it (a partial sum would pass for the whole). No prompt: a known 0."""
    counts = [cached for prompt, cached in pairs if prompt]
    return None if None in counts else sum(counts)


def teacher_columns(records: list[dict], one_off=None, price: Price = LOCAL_PRICE) -> dict:
    """The teacher's tokens written, read (= computed + read from the prompt cache), computed and
    cached, in all and per question, and their price per question; `one_off` (a `SetupCost`) is
    spread over the questions. Computed and cached are None where a call, or the one-off cost,
    did not report the server's cache, and the price then counts every prompt token as computed."""
    n = len(records)
    written = sum(r.get("teacher_completion_tokens", 0) for r in records)
    read = sum(r.get("teacher_prompt_tokens", 0) for r in records)
    pairs = [(r.get("teacher_prompt_tokens", 0), r.get("teacher_prompt_cached_tokens")) for r in records]
    if one_off is not None:
        written, read = written + one_off.completion_tokens, read + one_off.prompt_tokens
        pairs.append((one_off.prompt_tokens, one_off.prompt_cached_tokens))
    cached = known_cached(pairs)
    computed = None if cached is None else read - cached
    return {"teacher_written_tokens": written, "teacher_read_tokens": read, "teacher_computed_tokens": computed,
            "teacher_cached_tokens": cached, "teacher_cache_reported": cached is not None,
            "teacher_written_per_question": written / n, "teacher_read_per_question": read / n,
            "teacher_computed_per_question": None if computed is None else computed / n,
            "teacher_cached_per_question": None if cached is None else cached / n,
            "teacher_price_per_question": price.of(read if cached is None else computed, cached, written) / n,
            "price": price.describe(), "price_unit": price.unit}


def student_cache_columns(records: list[dict]) -> dict:
    """Of the student's prompt tokens, those its server read from its prompt cache (None: not reported)."""
    cached = known_cached([(r.get("prompt_tokens", 0), r.get("prompt_cached_tokens")) for r in records])
    return {"prompt_cached_tokens": cached, "mean_prompt_cached_tokens": None if cached is None else cached / len(records)}
