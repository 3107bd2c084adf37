"""Row parsers: one benchmark row (a dict or CSV cells) → `Question` keyword arguments.

They raise `RowProblem(field, reason)`; `instret.data.loaders` adds the file and line.
"""

from __future__ import annotations

import json

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ROW = "<row>"  # the `field` of errors about a whole row (bad JSON, wrong column count)

class RowProblem(Exception):
    """Raised by row parsers, which don't know the path and line; the file loop adds them."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def _required(record: dict, key: str):
    if record.get(key) is None:
        raise RowProblem(key, "missing required field")
    return record[key]


def _string(record: dict, key: str) -> str:
    value = _required(record, key)
    if not isinstance(value, str):
        raise RowProblem(key, f"expected a string, got {type(value).__name__}")
    return value


def _optional_string(record: dict, key: str) -> str | None:
    return _string(record, key) if record.get(key) is not None else None


def _question_text(record: dict, key: str) -> str:
    text = _string(record, key).strip()
    if not text:
        raise RowProblem(key, "empty question text")
    return text


def _answer_text(value, key: str) -> str:
    """JSON answers may be numbers; 18.0 becomes "18" so scorers see one spelling."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowProblem(key, f"expected a string or number, got {type(value).__name__}")
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value).strip()
    if not text:
        raise RowProblem(key, "empty answer, so nothing to score against")
    return text


def _options(value, key: str) -> dict[str, str]:
    """A {letter: text} dict, or a list lettered A, B, C, ... in order."""
    if isinstance(value, list):
        value = dict(zip(_LETTERS, value))
    if not isinstance(value, dict) or not value:
        raise RowProblem(key, f"expected a non-empty dict or list, got {type(value).__name__}")
    if not all(isinstance(text, str) for text in value.values()):
        raise RowProblem(key, "every option must be a string")
    return {str(letter).strip(): text.strip() for letter, text in value.items()}


def last_boxed(solution: str) -> str | None:
    """Content of the last `\\boxed{...}`, braces balanced; None when absent or never closed.

    >>> last_boxed(r"so $x = \\boxed{\\frac{1}{2}}$")
    '\\\\frac{1}{2}'
    """
    start = solution.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    while i < len(solution):
        if solution[i] == "\\":  # `\{` and `\}` are literal braces in LaTeX, not grouping
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(solution[i], 0)
        if depth == 0:
            return solution[start + len("\\boxed{"):i].strip()
        i += 1
    return None


def _gsm8k(record: dict) -> dict:
    solution = _string(record, "answer")
    _, marker, gold = solution.rpartition("####")
    gold = gold.replace(",", "").strip()  # golds like "1,080" carry a thousands comma
    if not marker or not gold:
        raise RowProblem("answer", "no final answer after '####'")
    return {"text": _question_text(record, "question"), "answer": gold, "solution": solution}


def _math(record: dict) -> dict:
    """MATH train rows carry `answer` and `subject`; test rows `solution` (\\boxed{}) and `type`."""
    text = _question_text(record, "problem")
    subject = _optional_string(record, "subject") or _optional_string(record, "type")
    if record.get("answer") is not None:
        return {"text": text, "answer": _answer_text(record["answer"], "answer"),
                "solution": _optional_string(record, "solution"), "subject": subject}
    solution = _string(record, "solution")
    gold = last_boxed(solution)
    if gold is None:
        raise RowProblem("solution", "no \\boxed{...} with balanced braces holding the final answer")
    return {"text": text, "answer": gold, "solution": solution, "subject": subject}


def _svamp(record: dict) -> dict:
    body, question = _string(record, "Body").strip(), _question_text(record, "Question")
    if body and body[-1] not in ".?!":  # a third of the Bodies stop mid-sentence
        body += "."
    return {"text": f"{body} {question}".strip(),
            "answer": _answer_text(_required(record, "Answer"), "Answer"),
            "solution": _optional_string(record, "Equation"), "subject": _optional_string(record, "Type")}


def _medqa(record: dict) -> dict:
    options = _required(record, "options")
    if not isinstance(options, dict):
        raise RowProblem("options", f"expected a dict of letter -> text, got {type(options).__name__}")
    options = _options(options, "options")
    gold = _string(record, "answer_idx").strip()
    if gold not in options:
        raise RowProblem("answer_idx", f"{gold!r} is not one of the option letters {list(options)}")
    return {"text": _question_text(record, "question"), "answer": gold, "options": options,
            "subject": _optional_string(record, "meta_info")}


def _headqa(item: dict) -> dict:
    answers = _required(item, "answers")
    if not isinstance(answers, list) or not answers or not all(
            isinstance(a, dict) and type(a.get("aid")) is int and isinstance(a.get("atext"), str)
            for a in answers):
        raise RowProblem("answers", "expected a list of {'aid': int, 'atext': str}")
    answers = sorted(answers, key=lambda a: a["aid"])
    letter_of_aid = {str(a["aid"]): letter for letter, a in zip(_LETTERS, answers)}
    right = str(item.get("ra", "")).strip()
    if right not in letter_of_aid:
        raise RowProblem("ra", f"{right!r} is not one of the answer ids {list(letter_of_aid)}")
    return {"text": _question_text(item, "qtext"), "answer": letter_of_aid[right],
            "options": {letter: a["atext"].strip() for letter, a in zip(_LETTERS, answers)},
            "subject": item.get("_category")}


def _mmlu(row: list[str], subject: str) -> dict:
    if len(row) != 6:
        raise RowProblem(ROW, f"expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
    if row[5].strip() not in ("A", "B", "C", "D"):
        raise RowProblem("answer", f"{row[5].strip()!r} is not one of A, B, C, D")
    if not row[0].strip():
        raise RowProblem("question", "empty question text")
    return {"text": row[0].strip(), "answer": row[5].strip(), "subject": subject,
            "options": {letter: text.strip() for letter, text in zip("ABCD", row[1:5])}}


def _custom(record: dict, fields: dict[str, str], is_csv: bool) -> dict:
    """A user's row, read through `fields` (instret field -> key or column name)."""
    kwargs = {"text": _question_text(record, fields["text"])}
    if "answer" in fields:
        kwargs["answer"] = _answer_text(_required(record, fields["answer"]), fields["answer"])
    for name in ("solution", "subject"):  # empty is fine here: these are optional
        if name in fields:
            kwargs[name] = str(_required(record, fields[name])).strip() or None
    if "options" in fields:
        columns = _option_columns(fields["options"])
        if len(columns) > 1:  # "A,B,C,D": one column per option, lettered in order
            value = [_required(record, column) for column in columns]
        else:
            value = _required(record, columns[0])
            if is_csv:  # one CSV cell can only hold several options as JSON text
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    raise RowProblem(columns[0], "one options column must hold JSON") from None
        kwargs["options"] = _options(value, fields["options"])
    return kwargs


def _option_columns(spec: str) -> list[str]:
    return [column.strip() for column in spec.split(",")]
