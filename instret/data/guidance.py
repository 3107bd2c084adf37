"""Is a piece of solution guidance a plan, or a solution in disguise? The validator says which, and why.

Solution guidance (seed paper 2) decomposes a problem without computing anything. Guidance
that states the gold answer, carries out a calculation or rambles teaches a guide model the
wrong thing and hands the solver the answer, so SG data generation keeps only guidance that
passes `check_guidance`, and `guidance_metric` scores programs the same way:

    >>> check_guidance("Asked: the cost of 3 pens. Steps: 1. Multiply 3 by 2 = 6.", "3 pens cost $2 each ...", "6")
    GuidanceCheck(ok=False, reasons=('states_answer', 'computes', 'new_number'), details=(...))

Rules (our own design: the paper published no filter), most telling first:
- `empty`: no guidance at all;
- `states_answer`: the gold answer appears where the question does not give it (a number, a
  LaTeX expression), or the text announces it ("the answer is B", "choose (B)");
- `computes`: an `=` followed by a number whose left side holds a number or an operator
  (`3 × 12 = 36`), or assigns a number the question does not give (`total = 36`);
- `new_number`: a number that is neither in the question (digits or words such as "twelve"),
  nor a step number ("2.", "Step 3", "3rd"), nor a unit constant (`ALLOWED_NUMBERS`: 0, 1, 2,
  7, 10, 12, 24, 52, 60, 100, 365, 1000; and 3-10 for `expression`, whose formulas need them);
- `too_long`: more than `max_words` words (default 250);
- `no_steps`: no numbered sub-problem ("1.", "2)", "Step 3"): a restated question is no plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from instret.data.scoring import CHOICE, EXPRESSION, NUMERIC, canonical_answer, parse_number, score_answer

REASONS = ("empty", "states_answer", "computes", "new_number", "too_long", "no_steps")
DEFAULT_MAX_WORDS = 250
#: Unit constants a plan may name without computing anything (percent, a dozen, hours, minutes ...).
ALLOWED_NUMBERS = frozenset(Fraction(n) for n in (0, 1, 2, 7, 10, 12, 24, 52, 60, 100, 365, 1000))
_FORMULA_CONSTANTS = frozenset(Fraction(n) for n in range(3, 11))

_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?(?![\w])|(?<![\w.])\.\d+")
# Step numbers: "1." / "2)" / "(3)" opening a line or a sentence, "Step 4", "sub-problem 2", "3rd".
_ENUMERATION = re.compile(r"(?:(?:^|\n|[.:;!?)]\s)\s*[-*]?\s*\(?(\d{1,2})[.):](?!\d)"
                          r"|\b(?:step|sub-?problem|part|stage)\s+(\d{1,2})\b|\b(\d{1,2})(?:st|nd|rd|th)\b)", re.I)
# A line that opens with a step number ("2.", "(3)", "**Step 4:**"), and the lead-ins with which
# small models turn from the plan to solving it ("Let's calculate ...", "Now, let's ...").
_STEP_LINE = re.compile(r"^\s*[-*]?\s*(?:\*\*)?\s*(?:\(?(\d{1,2})[.):](?!\d)|step\s+(\d{1,2})\b)", re.I)
_SOLVING = re.compile(r"^\s*(?:\*\*)?\s*(?:(?:first|now|next|then|so),?\s+)?(?:let'?s|let us)\b"
                      r"|^\s*here(?: is|'s) (?:the|a|how)", re.I)
_CLAUSE_END = re.compile(r"[:;,.!?](?=\s|$)")  # where a step's clause ends
_EQUALS = re.compile(r"=\s*[$£€]?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)")
_OPERATOR = re.compile(r"\d|[+*/×÷^]|\s[-x]\s")
_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
          "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
          "dozen": 12, "half": Fraction(1, 2), "quarter": Fraction(1, 4), "twice": 2, "double": 2, "triple": 3}


@dataclass(frozen=True)
class GuidanceCheck:
    """`ok` when no rule was broken; `reasons` (in `REASONS` order) and a `details` line each."""

    ok: bool
    reasons: tuple[str, ...] = ()
    details: tuple[str, ...] = ()

    @property
    def reason(self) -> str | None:
        """The most telling broken rule, or None."""
        return self.reasons[0] if self.reasons else None

    def __bool__(self) -> bool:
        return self.ok


def check_guidance(guidance: str | None, question: str, gold=None, *, kind: str = NUMERIC,
                   options: dict[str, str] | None = None, max_words: int = DEFAULT_MAX_WORDS) -> GuidanceCheck:
    """Check `guidance` written for `question` (with `options` for multiple choice) against the
    gold answer `gold` (None: the answer rule is skipped)."""
    text = (guidance or "").strip()
    if not text:
        return GuidanceCheck(False, ("empty",), ("the guidance is empty",))
    given = _numbers_in_question(question + "\n" + "\n".join((options or {}).values()))
    allowed = given | ALLOWED_NUMBERS | (_FORMULA_CONSTANTS if kind == EXPRESSION else frozenset())
    found: dict[str, list[str]] = {}
    answer = _stated_answer(text, question, gold, kind, given)
    if answer:
        found["states_answer"] = [answer]
    computed = _computations(_without_enumeration(text), given)
    if computed:
        found["computes"] = [f"computes: {', '.join(computed[:3])}"]
    new = [raw for raw, value in _numbers(_without_enumeration(text)) if value not in allowed]
    if new:
        found["new_number"] = [f"numbers the question does not give: {', '.join(dict.fromkeys(new))}"]
    words = len(text.split())
    if words > max_words:
        found["too_long"] = [f"{words} words, over the limit of {max_words}"]
    if not any(match.group(1) or match.group(2) for match in _ENUMERATION.finditer(text)):
        found["no_steps"] = ["no numbered sub-problem (1., 2., ... or Step 1)"]
    reasons = tuple(reason for reason in REASONS if reason in found)
    return GuidanceCheck(not reasons, reasons, tuple(detail for reason in reasons for detail in found[reason]))


def plan_only(guidance: str | None, question: str, *, kind: str = NUMERIC,
              options: dict[str, str] | None = None) -> str:
    """The guidance with its solving taken out: lines that compute before the first numbered step
    are dropped ("Pages read today = 12 * 2 = 24" under "Given:"); a numbered step is cut before
    its first clause that computes or brings a number the question does not give ("2. Add the
    slices: 32 + 16 = 48" keeps "2. Add the slices."); it stops at a step with nothing left, at a
    computing line after the steps, and at a line that turns to solving ("Let's calculate ...")
    or numbers the steps again from the start.

    Small guide models (the 1.5B and 0.5B coder models) often write the plan that was asked for
    and carry out each step as they name it; the plan is kept and the solving dropped, so it is
    still guidance (the validator then judges what is left). Our design, as are the rules above.
    """
    given = _numbers_in_question(question + "\n" + "\n".join((options or {}).values()))
    allowed = given | ALLOWED_NUMBERS | (_FORMULA_CONSTANTS if kind == EXPRESSION else frozenset())

    def solves(text: str) -> bool:
        plain = _without_enumeration(text)
        return bool(_computations(plain, given)) or any(value not in allowed for _, value in _numbers(plain))

    kept, last_step = [], 0
    for line in (guidance or "").strip().splitlines():
        step = _STEP_LINE.match(line)
        number = int(step.group(1) or step.group(2)) if step else 0
        if last_step and (_SOLVING.match(line) or 0 < number <= last_step):
            break
        if solves(line):
            if not step:
                if last_step:
                    break
                continue  # a worked note before the plan: not part of it
            line = _before_solving(line, step.end(), solves)
            if not line:
                break
        last_step = max(last_step, number)
        kept.append(line)
    return "\n".join(kept).strip()


def _before_solving(line: str, body_start: int, solves) -> str:
    """A step line cut at the last clause boundary (`:` `;` `,` `.`) before it computes; "" when
    fewer than two words of instruction would be left."""
    ends = [match.start() for match in _CLAUSE_END.finditer(line, body_start)]
    cut = next((end for end, after in zip([body_start] + ends, ends + [len(line)]) if solves(line[:after])), None)
    if cut is None or len(line[body_start:cut].split()) < 2:
        return ""
    return line[:cut].rstrip(" :;,.-*") + "."


def readable_solution(solution: str | None) -> str:
    """A worked solution as a teacher should read it: GSM8K's calculator annotations
    (`<<48/2=24>>`) and its `#### answer` line removed; other solutions are kept as they are."""
    text = re.sub(r"<<[^<>]*>>", "", solution or "")
    return re.sub(r"(?m)^\s*####.*$", "", text).strip()


def guidance_metric(kind: str, *, max_words: int = DEFAULT_MAX_WORDS, require_correct: bool = True):
    """A DSPy metric for programs whose prediction carries `guidance` (and `answer`): 1.0 when the
    guidance passes `check_guidance` and, with `require_correct`, the answer scores correct.
    Under GEPA (`pred_name` given) it returns the score with feedback naming what was wrong."""

    def metric(example, prediction, trace=None, pred_name=None, pred_trace=None):
        check = check_guidance(getattr(prediction, "guidance", None), example.question, example.get("answer"),
                               kind=kind, options=example.get("options"), max_words=max_words)
        scored = score_answer(kind, getattr(prediction, "answer", None), example.get("answer"))
        good = check.ok and (scored.correct or not require_correct)
        if pred_name is None:  # BootstrapFewShot/BootstrapFinetune want a bool while tracing, else a number
            return good if trace is not None else float(good)
        import dspy

        problems = list(check.details) + ([] if scored.correct or not require_correct
                                          else [f"the solver answered {scored.parsed!r}, expected {example.answer!r}"])
        return dspy.Prediction(score=float(good), feedback="Good guidance." if good else "; ".join(problems))

    return metric


# --- rules ---------------------------------------------------------------------------------

def _numbers(text: str) -> list[tuple[str, Fraction]]:
    found = []
    for match in _NUMBER.finditer(text):
        value = parse_number(match.group().replace(" ", ""))
        if value is not None:
            found.append((match.group(), abs(value)))
    return found


def _numbers_in_question(text: str) -> frozenset[Fraction]:
    values = {value for _, value in _numbers(text)}
    values |= {Fraction(_WORDS[word]) for word in re.findall(r"[a-z]+", text.lower()) if word in _WORDS}
    return frozenset(values)


def _without_enumeration(text: str) -> str:
    """The text with step numbers blanked out (they are labels, not quantities)."""
    return _ENUMERATION.sub(lambda match: re.sub(r"\d", " ", match.group()), text)


def _stated_answer(text: str, question: str, gold, kind: str, given: frozenset[Fraction]) -> str | None:
    if gold is None or str(gold).strip() == "":
        return None
    if kind == CHOICE:
        letter = canonical_answer(CHOICE, gold)
        if letter and re.search(
                rf"(?:(?:answer|option|choice)\s*(?:is|would be|should be|:)\s*(?:option\s*)?|"
                rf"(?:choose|pick|select)\s+(?:option\s*)?)\(?{letter}\)?(?![\w])", text, re.I):
            return f"announces the answer {letter}"
        return None
    compact = re.sub(r"\s+", "", str(gold))
    if kind == EXPRESSION and len(compact) >= 3 and compact in re.sub(r"\s+", "", text) \
            and compact not in re.sub(r"\s+", "", question):
        return f"states the gold answer {gold}"  # \frac{3}{4} is one answer, not the numbers 3 and 4
    number = parse_number(gold)
    if number is not None:
        said = re.search(r"\banswer\b\s*(?:is|will be|should be|:|=)\s*[$£€]?\s*(-?[\d,]*\.?\d+)", text, re.I)
        if said and parse_number(said.group(1)) == number:
            return f"announces the answer {said.group(1)}"
        if abs(number) not in given and any(value == abs(number) for _, value in _numbers(_without_enumeration(text))):
            return f"states the gold answer {canonical_answer(NUMERIC, gold)}"
        return None
    return None


def _computations(text: str, given: frozenset[Fraction]) -> list[str]:
    found = []
    for match in _EQUALS.finditer(text):
        start = max((at + len(mark) for mark in ("\n", ",", ";", ":", "(", ". ")
                     if (at := text.rfind(mark, 0, match.start())) >= 0), default=0)
        left = " ".join(text[start:match.start()].split())[-40:].strip(" .-*")
        right = parse_number(match.group(1))
        if _OPERATOR.search(left) or (right is not None and abs(right) not in given):
            found.append(f"{left} {match.group().strip()}".strip())
    return found


__all__ = ["REASONS", "DEFAULT_MAX_WORDS", "ALLOWED_NUMBERS", "GuidanceCheck", "check_guidance", "guidance_metric",
           "plan_only"]
