"""Scoring per answer kind: numbers (GSM8K, SVAMP), final expressions (MATH), option letters.

    >>> score("numeric", "$1,000", "1000")
    True
    >>> score("expression", r"\\boxed{\\dfrac{1}{2}}", "0.5")
    True
    >>> score_answer("choice", "I cannot tell", "B")
    ScoredAnswer(correct=False, parsed=None, parse_failed=True)

A prediction that cannot be parsed scores wrong and is reported as a parse failure, never
raised: one malformed student answer must not stop an evaluation run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from instret.data.math_answers import boxed_answer, expressions_equal, normalize_math, strip_math_wrappers
from instret.data.questions import Question, normalize_text

NUMERIC, EXPRESSION, CHOICE = "numeric", "expression", "choice"
KINDS = (NUMERIC, EXPRESSION, CHOICE)
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class ScoredAnswer:
    """`parsed` is the canonical form of the prediction; None (a parse failure) always scores wrong."""

    correct: bool
    parsed: str | None
    parse_failed: bool


def score(kind: str, predicted, gold) -> bool:
    return score_answer(kind, predicted, gold).correct


def score_answer(kind: str, predicted, gold) -> ScoredAnswer:
    """Compare a typed prediction (float, str) or free text with the gold answer."""
    kind = _checked(kind)
    parsed = canonical_answer(kind, predicted)
    announced = isinstance(predicted, str) and ("####" in predicted or _ANSWER_PHRASE.search(predicted))
    if isinstance(predicted, str) and (parsed is None or (kind == EXPRESSION and announced)):
        parsed = extract_answer(kind, predicted) or parsed
    if parsed is None:
        return ScoredAnswer(False, None, True)
    expected = canonical_answer(kind, gold)
    if expected is None:  # an odd gold (data problem): fall back to comparing the text as written
        return ScoredAnswer(normalize_text(parsed) == normalize_text(str(gold or "")), parsed, False)
    return ScoredAnswer(_EQUAL[kind](parsed, expected), parsed, False)


def canonical_answer(kind: str, value) -> str | None:
    """The canonical text of an answer given on its own (a field value, a gold); None if unparseable."""
    kind = _checked(kind)
    if value is None or isinstance(value, bool):
        return None
    if kind == NUMERIC:
        number = parse_number(value)
        return None if number is None else format_number(number)
    if kind == CHOICE:
        return _letter(str(value))
    if isinstance(value, (int, float)):
        return None if not math.isfinite(value) else format_number(Fraction(str(value)))
    return normalize_math(str(value)) or None


def extract_answer(kind: str, text: str | None, options: dict[str, str] | None = None) -> str | None:
    """Leniently find the final answer in free text (a raw LM reply, a worked solution).

    Looks, in order, for `#### x`, `\\boxed{x}`, "the answer is x" / "Answer: x", then falls back
    to the last number (numeric), a short bare expression (expression) or a lone "(B)" (choice).
    With `options`, a reply that is exactly one option's text maps to its letter.
    """
    kind = _checked(kind)
    if not text or not str(text).strip():
        return None
    text = str(text)
    if kind == CHOICE:
        return _extract_letter(text, options)
    for candidate in _answer_candidates(text):
        found = canonical_answer(kind, candidate)
        if found is None and kind == NUMERIC:
            numbers = _NUMBER_IN_TEXT.findall(candidate)
            found = canonical_answer(kind, numbers[0]) if numbers else None
        if found is not None:
            return found
    if kind == NUMERIC:
        numbers = _NUMBER_IN_TEXT.findall(text)
        return canonical_answer(kind, numbers[-1]) if numbers else None
    bare = text.strip()
    return canonical_answer(kind, bare) if len(bare) <= 40 and "\n" not in bare else None


def recover_answer(kind: str, error: BaseException) -> str | None:
    """The answer inside a reply DSPy could not parse (`AdapterParseError.lm_response`), if any."""
    response = str(getattr(error, "lm_response", None) or "")
    section = re.search(r"\[\[ ## answer ## \]\]\s*(.*?)(?:\[\[ ## |\Z)", response, re.S)
    return (extract_answer(kind, section.group(1)) if section else None) or extract_answer(kind, response)


_DOMAIN_WORDS = (
    (CHOICE, ("medqa", "headqa", "head-qa", "mmlu", "multiple choice", "multiple-choice", "medic", "usmle", "choice")),
    (NUMERIC, ("gsm8k", "gsm", "svamp", "grade-school", "grade school", "arithmetic", "word problem", "numeric")),
    (EXPRESSION, ("math", "competition", "algebra", "geometry", "expression", "latex")))


def kind_of(thing) -> str:
    """The answer kind of a `Question`, a domain name or a dataset format.

    >>> kind_of("gsm8k"), kind_of("MATH"), kind_of("medqa")
    ('numeric', 'expression', 'choice')
    """
    if isinstance(thing, Question):
        if thing.options:
            return CHOICE
        if thing.solution and "\\boxed" in thing.solution:
            return EXPRESSION  # MATH: even a gold "5" is compared as an expression
        return NUMERIC if parse_number(thing.answer) is not None else EXPRESSION
    name = normalize_text(str(thing))
    if name in KINDS:
        return name
    for kind, words in _DOMAIN_WORDS:  # in order: "grade-school math" is numeric though it says "math"
        if any(word in name for word in words):
            return kind
    raise ValueError(f"cannot tell the answer kind of {thing!r}; pass one of {', '.join(KINDS)} "
                     f"(numeric for GSM8K/SVAMP, expression for MATH, choice for multiple choice)")


def _checked(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; use one of {', '.join(KINDS)} (kind_of picks one)")
    return kind


def _answer_candidates(text: str) -> list[str]:
    """Stretches of text that announce a final answer, most explicit first."""
    hashes = text.rsplit("####", 1)[1].strip().splitlines()[:1] if "####" in text else []
    phrases = list(_ANSWER_PHRASE.finditer(text))
    said = text[phrases[-1].end():].strip().splitlines()[:1] if phrases else []
    said = [re.sub(r"\.\s.*$", "", line.strip("*: ")) for line in said]  # up to the sentence's end
    return [c for c in hashes + [boxed_answer(text) or ""] + said if c.strip()]


_ANSWER_PHRASE = re.compile(r"\banswer\b\s*(?:is|was|would be|:|=)\s*:?", re.I)


# --- numbers -------------------------------------------------------------------------------

_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_IN_TEXT = re.compile(rf"[-−]?\$?\s?(?:(?:{_NUMBER})/(?:\d+)(?!\.\d)|{_NUMBER})")
_CURRENCY = r"(?:\\\$|\$|£|€|usd|rs\.?)"
# One number, optionally signed, with currency before it and a percent sign or unit words after.
_LONE_NUMBER = re.compile(
    rf"^(?P<sign>[-+−]?)\s*{_CURRENCY}?\s*(?P<sign2>[-−]?)\s*(?P<num>{_NUMBER})"
    rf"(?:\s*/\s*(?P<den>\d+))?\s*(?P<percent>%|\\%|percent)?\s*(?:[a-z][a-z .'-]*)?\.?$", re.I)
_LATEX_FRACTION = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")


def parse_number(value) -> Fraction | None:
    """An exact number from `18`, `18.0`, `$18`, `1,000`, `18 dollars`, `50%`, `3/4`, `\\frac{3}{4}`."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return Fraction(str(value)) if math.isfinite(value) else None
    text = strip_math_wrappers(str(value).strip())
    if _LATEX_FRACTION.match(text.replace(" ", "")):
        text = _LATEX_FRACTION.sub(r"\1\2/\3", text.replace(" ", ""))  # \frac{3}{4} -> 3/4
    match = _LONE_NUMBER.match(text)
    if not match:
        return None
    try:
        number = Fraction(Decimal(match["num"].replace(",", "")))
    except InvalidOperation:
        return None
    if match["den"]:
        if int(match["den"]) == 0:
            return None
        number /= int(match["den"])
    negative = (match["sign"] in ("-", "−")) != (match["sign2"] in ("-", "−"))
    return -number if negative else number


def format_number(number: Fraction) -> str:
    """`18`, `0.5`, `-3.25`; a non-terminating fraction stays exact as `1/3`."""
    if number.denominator == 1:
        return str(number.numerator)
    denominator = number.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return f"{number.numerator}/{number.denominator}"
    return format(Decimal(number.numerator) / Decimal(number.denominator), "f")


def _numbers_equal(a: str, b: str) -> bool:
    x, y = parse_number(a), parse_number(b)
    if x is None or y is None:
        return a == b
    # Exact for decimals; the tolerance only absorbs float noise such as 0.1 + 0.2.
    return x == y or math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)


# --- MATH final answers --------------------------------------------------------------------

# --- option letters ------------------------------------------------------------------------

# "B", "(B)", "B.", "B)", "B) text", "B: text", "[B]", "**B**", "Option B", "b".
_LETTER = re.compile(rf"^(?:(?:option|choice|answer)\s*:?\s*)?[(\[]?([{LETTERS}{LETTERS.lower()}])[)\].:]?"
                     rf"(?:$|(?<=[)\].:])\s*\S.*$|\s*$)", re.I | re.S)
_LETTER_AFTER_PHRASE = re.compile(
    rf"(?:answer|option|choice)\s*(?:is|would be|should be)?\s*:?\s*(?:option\s+|choice\s+)?\**[(\[]?"
    rf"(?:(?-i:([{LETTERS}]))\b|(?-i:([{LETTERS.lower()}]))(?=[)\].,;:]|\s*$))", re.I)


def _letter(value: str) -> str | None:
    text = value.strip().strip("*_`'\" ")
    match = _LETTER.match(text)
    if not match:
        return None
    letter = match.group(1).upper()
    others = set(re.findall(rf"\(([{LETTERS}])\)", text[match.end(1):])) - {letter}
    return None if others else letter  # "(A) or (B)" hedges between options


def _extract_letter(text: str, options: dict[str, str] | None) -> str | None:
    boxed = boxed_answer(text)
    for candidate in ([boxed] if boxed else []) + [text]:
        letter = _letter(strip_math_wrappers(candidate).replace("\\text{", "").rstrip("}"))
        if letter:
            return letter
    phrases = list(_LETTER_AFTER_PHRASE.finditer(text))
    if phrases:
        return (phrases[-1].group(1) or phrases[-1].group(2)).upper()
    if options:
        wanted = normalize_text(text).rstrip(".")
        for letter, option in options.items():
            if normalize_text(option).rstrip(".") == wanted:
                return letter.upper()
    lone = set(re.findall(rf"\(([{LETTERS}])\)", text)) | set(re.findall(rf"\*\*([{LETTERS}])\*\*", text))
    return lone.pop() if len(lone) == 1 else None


_EQUAL = {NUMERIC: _numbers_equal, EXPRESSION: expressions_equal, CHOICE: str.__eq__}
