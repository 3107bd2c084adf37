"""Read benchmark and user question files into `Question` records.

Bad rows are reported as `path:line: field 'x': reason`, so a user can open the file and fix
the row instead of guessing which of 7,000 broke.

    >>> load_questions("../shared/data/math/gsm8k/test.jsonl").summary()  # doctest: +SKIP
    '1319 questions (0 duplicates merged, 0 skipped for a missing image, 0 bad rows)'
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from instret.data.formats import (ROW, RowProblem, _custom, _gsm8k, _headqa, _math, _medqa, _mmlu, _option_columns,
                             _svamp, last_boxed)
from instret.data.questions import Question, merge_duplicates

__all__ = ["FORMATS", "BadRowError", "InputError", "LoadReport", "load_questions", "detect_format",
           "parse_field_mapping", "holdout_split", "last_boxed"]

FORMATS = ("gsm8k", "math", "svamp", "medqa", "headqa", "mmlu", "jsonl", "csv")
MAPPABLE_FIELDS = ("text", "answer", "solution", "subject", "options")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


class BadRowError(ValueError):
    """A row that cannot become a `Question`, with the place to look for it."""

    def __init__(self, path, line: int, field: str, reason: str):
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        super().__init__(f"{self.path}:{line}: field '{field}': {reason}")


class InputError(ValueError):
    """The files and the options describing them do not fit together; the message names the files.

    `cli_message` says the same in the command line's terms (`--format`, `--field text=COLUMN`)
    where the message speaks Python's (`format=`, `fields={...}`).
    """

    def __init__(self, message: str, cli_message: str | None = None):
        super().__init__(message)
        self.cli_message = cli_message or message


class _MappingError(BadRowError):
    """`fields` names a column the file lacks: the caller's mistake, so never skipped."""


@dataclass
class LoadReport:
    questions: list[Question]
    bad_rows: list[BadRowError] = field(default_factory=list)
    duplicates_merged: int = 0
    skipped_with_image: int = 0

    def summary(self) -> str:
        return (f"{len(self.questions)} questions ({self.duplicates_merged} duplicates merged, "
                f"{self.skipped_with_image} skipped for a missing image, {len(self.bad_rows)} bad rows)")


def _jsonl_records(path: Path):
    """(line, record) per non-blank line; read as bytes so bad UTF-8 spoils one row, not the file."""
    with open(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                # Without its line break, an unclosed string reads as "Unterminated string", not
                # as an "Invalid control character" (the break) inside it.
                yield line, json.loads(raw.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n").decode("utf-8"))
            except UnicodeDecodeError as error:
                yield line, RowProblem(ROW, f"invalid UTF-8 at byte {error.start + 1}: {error.reason}")
            except json.JSONDecodeError as error:  # its own "line 1" would be a second, wrong line number
                yield line, RowProblem(ROW, _json_problem(error, line=False))


def _json_problem(error: json.JSONDecodeError, line: bool) -> str:
    """The parser's own words and where: 'invalid JSON: Expecting value at column 9'."""
    where = f"line {error.lineno} column {error.colno}" if line else f"column {error.colno}"
    return f"invalid JSON: {error.msg}{'' if error.msg.endswith(' at') else ' at'} {where}"


def _read_text(path: Path) -> str:
    """A whole file as text; bytes that are not UTF-8 are reported with their line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadRowError(path, data.count(b"\n", 0, error.start) + 1, ROW,
                          f"invalid UTF-8 at byte {error.start + 1}: {error.reason}") from None


def _csv_rows(path: Path):
    """(line where the record starts, cells); quoted cells may span lines (MMLU jurisprudence_val)."""
    # Decoded whole first, so a byte that is not UTF-8 is reported on its own line.
    reader, start = csv.reader(io.StringIO(_read_text(path), newline="")), 1
    for row in reader:
        if any(cell.strip() for cell in row):  # MMLU quoted cells hold Windows "\r\n" breaks
            yield start, [cell.replace("\r\n", "\n") for cell in row]
        start = reader.line_num + 1


def _csv_records(path: Path, fields: dict[str, str]):
    """Rows of a CSV with a header, as dicts; a mapped column missing from the header fails the file."""
    rows = _csv_rows(path)
    header_line, header = next(rows, (1, []))
    header = [name.strip() for name in header]
    for name, spec in fields.items():
        for column in _option_columns(spec) if name == "options" else [spec]:
            if column not in header:
                raise _MappingError(path, header_line, column,
                                    f"no column {column!r} (given for {name!r}) in the header {header}")
    for line, row in rows:
        if len(row) != len(header):
            yield line, RowProblem(ROW, f"expected {len(header)} columns as in the header, not {len(row)}")
        else:
            yield line, dict(zip(header, row))


def _json_array_elements(path: Path):
    """(line of the element's first character, element) for a JSON array file like SVAMP.json."""
    text = _read_text(path)
    decoder, position = json.JSONDecoder(), _JSON_SPACE.match(text).end()
    if not text.startswith("[", position):
        raise BadRowError(path, 1, ROW, "expected a JSON array")
    line, counted_to = 1, 0
    position = _JSON_SPACE.match(text, position + 1).end()
    while not text.startswith("]", position):
        line += text.count("\n", counted_to, position)  # counted as we go: O(file), not O(rows * file)
        counted_to = position
        try:
            element, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:  # report the element, and where inside it JSON broke
            raise BadRowError(path, line, ROW, _json_problem(error, line=True)) from None
        yield line, element
        position = _JSON_SPACE.match(text, position).end()
        if text.startswith(",", position):
            position = _JSON_SPACE.match(text, position + 1).end()
        elif not text.startswith("]", position):
            raise BadRowError(path, line + text.count("\n", counted_to, position), ROW,
                              "expected ',' or ']' after an array element")


def _load_json(path: Path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise BadRowError(path, error.lineno, ROW, _json_problem(error, line=False)) from None


def _headqa_items(path: Path):
    """(1, item) per question, as HEAD-QA files are one line; items carry `_exam` and `_category`."""
    exams = _load_json(path)
    exams = exams.get("exams") if isinstance(exams, dict) else None
    if not isinstance(exams, dict):
        raise BadRowError(path, 1, "exams", "expected an object of exams")
    for name, exam in exams.items():
        items = exam.get("data") if isinstance(exam, dict) else None
        if not isinstance(items, list):
            raise BadRowError(path, 1, "data", f"expected a list of questions (exam {name})")
        for item in items:
            if isinstance(item, dict):
                item = dict(item, _exam=name, _category=exam.get("category"))
            yield 1, item


def _mmlu_subject(path: Path) -> str:
    """`professional_law_test.csv` -> `professional_law`."""
    return re.sub(r"_(dev|val|test|train)$", "", path.stem)


def _records_and_parser(path: Path, fmt: str, fields: dict | None):
    if fmt == "mmlu":
        subject = _mmlu_subject(path)
        return _csv_rows(path), lambda row: _mmlu(row, subject)
    if fmt in ("jsonl", "csv"):
        records = _csv_records(path, fields) if fmt == "csv" else _jsonl_records(path)
        return records, lambda record: _custom(record, fields, is_csv=fmt == "csv")
    records = {"svamp": _json_array_elements, "headqa": _headqa_items}.get(fmt, _jsonl_records)(path)
    parsers = {"gsm8k": _gsm8k, "math": _math, "svamp": _svamp, "medqa": _medqa, "headqa": _headqa}
    return records, parsers[fmt]


def _first_json_line(path: Path):
    with open(path, "rb") as handle:
        raw = next((raw for raw in handle if raw.strip()), b"")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def detect_format(path) -> str:
    """Name of the format of `path`, judged from its content: one of FORMATS.

    Known benchmarks are recognised by their keys or columns; other JSON-lines files are
    "jsonl" and other CSV files "csv", and both of those need `fields=` to load.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head:
        raise InputError(f"{path} is empty; cannot tell its format")
    if head.startswith(b"["):
        _, first = next(_json_array_elements(path), (1, None))
        if isinstance(first, dict) and {"Body", "Question", "Answer"} <= first.keys():
            return "svamp"
        raise _unknown_format(f"{path} is a JSON array but not SVAMP; write it as JSON lines and")
    record = _first_json_line(path)
    if record is None and head.startswith(b"{"):  # a pretty-printed whole-file object?
        try:
            record = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _unknown_format(f"cannot tell the format of {path}: its first line is not JSON;") from None
    if isinstance(record, dict):
        if "exams" in record:
            return "headqa"
        if {"question", "options", "answer_idx"} <= record.keys():
            return "medqa"
        if "problem" in record and ("solution" in record or "answer" in record):
            return "math"
        if "question" in record and "####" in str(record.get("answer")):
            return "gsm8k"
        return "jsonl"
    if record is None:
        first_row = next(_csv_rows(path), (1, []))[1]
        if len(first_row) == 6 and first_row[5].strip() in ("A", "B", "C", "D"):
            return "mmlu"
        if len(first_row) >= 2 or path.suffix.lower() == ".csv":
            return "csv"
    raise _unknown_format(f"cannot tell the format of {path};")


def _unknown_format(problem: str) -> InputError:
    formats = ", ".join(FORMATS)
    return InputError(f"{problem} pass format= (one of {formats}) and, for your own files, "
                      f"fields={{'text': KEY, 'answer': KEY}}",
                      f"{problem} pass --format (one of {formats}) and, for your own files, "
                      f"--field text=COLUMN --field answer=COLUMN")


def parse_field_mapping(items, files: str | None = None) -> dict[str, str]:
    """["text=prompt", "answer=target"] -> {"text": "prompt", "answer": "target"} (for the CLI).

    `files` names the files the mapping is for, in error messages."""
    mapping = {}
    for item in [items] if isinstance(items, str) else items:
        name, equals, column = item.partition("=")
        if not equals or not name.strip() or not column.strip():
            raise InputError(f"{_for(files)}field mapping {item!r} should look like 'text=prompt'",
                             f"{_for(files)}--field {item} should look like --field text=COLUMN")
        mapping[name.strip()] = column.strip()
    return _checked_fields(mapping, files)


def _for(files: str | None) -> str:
    return f"{files}: " if files else ""


def _checked_fields(fields: dict, files: str | None = None) -> dict[str, str]:
    unknown = sorted(set(fields) - set(MAPPABLE_FIELDS))
    if unknown:
        raise InputError(f"{_for(files)}unknown field name(s) {unknown}; the fields are {', '.join(MAPPABLE_FIELDS)}")
    if "text" not in fields:
        raise InputError(f"{_for(files)}fields must map 'text' to the key or column holding the question",
                         f"{_for(files)}add --field text=COLUMN, naming the column (or JSON key) that holds "
                         f"the question")
    if not all(isinstance(column, str) and column.strip() for column in fields.values()):
        raise InputError(f"{_for(files)}every field needs a non-empty key or column name")
    return {name: column.strip() for name, column in fields.items()}


def load_questions(paths, *, format: str = "auto", fields: dict | None = None,
                   skip_bad_rows: bool = False) -> LoadReport:
    """Read one file or a list of files into Questions, merging exact duplicates across files.

    With `skip_bad_rows=False` the first bad row raises `BadRowError`; with True bad rows are
    collected in `report.bad_rows` (a file whose JSON is broken stops at the break). A CSV header
    lacking a column named in `fields` always raises: skipping every row would hide the mistake.
    (JSON-lines keys may vary by row, so there a missing key is a bad row.)

    >>> load_questions("mine.jsonl", fields={"text": "prompt", "answer": "target"})  # doctest: +SKIP
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = ", ".join(os.fspath(path) for path in paths)
    if format != "auto" and format not in FORMATS:
        raise InputError(f"{files}: unknown format {format!r}; use 'auto' or one of {', '.join(FORMATS)}")
    if isinstance(fields, (str, list, tuple)):  # the CLI passes ["text=prompt", ...]
        fields = parse_field_mapping(fields, files)
    if fields is not None:
        fields = _checked_fields(fields, files)
        if format not in ("auto", "jsonl", "csv"):
            raise InputError(f"{files}: fields= only applies to format='jsonl' or 'csv', not {format!r}",
                             f"{files}: --field only applies to --format jsonl or csv, not {format}")
    report, questions = LoadReport(questions=[]), []
    for given in paths:
        source, path = os.fspath(given), Path(given)
        if not path.is_file():
            raise FileNotFoundError(f"question file not found: {source}")
        fmt = format if format != "auto" else _auto_format(path, fields)
        if fmt in ("jsonl", "csv") and fields is None:
            raise _fields_needed(source, path, fmt)
        records, parse = _records_and_parser(path, fmt, fields)
        try:
            for line, record in records:
                if fmt == "headqa" and isinstance(record, dict) and record.get("image"):
                    report.skipped_with_image += 1  # the exam images are not distributed
                    continue
                try:
                    if isinstance(record, RowProblem):
                        raise record
                    if not isinstance(record, list if fmt == "mmlu" else dict):
                        raise RowProblem(ROW, f"expected a JSON object, got {type(record).__name__}")
                    questions.append(Question(**parse(record), source=source, line=line))
                except RowProblem as problem:
                    error = BadRowError(source, line, problem.field, problem.reason + _locator(record))
                    if not skip_bad_rows:
                        raise error from None
                    report.bad_rows.append(error)
        except BadRowError as error:  # the file's structure is broken: no later row can be trusted
            if not skip_bad_rows or isinstance(error, _MappingError):
                raise
            report.bad_rows.append(error)
    report.questions, report.duplicates_merged = merge_duplicates(questions)
    return report


def _fields_needed(source: str, path: Path, fmt: str) -> InputError:
    """A user's own file read without a field mapping: say which keys or columns it has."""
    if fmt == "csv":
        names, kind, name = [cell.strip() for cell in next(_csv_rows(path), (1, []))[1]], "columns", "COLUMN"
    else:
        first = _first_json_line(path)
        names, kind, name = (list(first) if isinstance(first, dict) else []), "keys", "KEY"
    problem = f"{source} is your own {fmt} file (its {kind}: {', '.join(names) or 'none found'}); say which {kind}"
    return InputError(f"{problem} hold the question and its answer with fields={{'text': {name}, 'answer': {name}}}",
                      f"{problem} hold the question and its answer with --field text={name} --field answer={name}")


def _locator(record) -> str:
    """HEAD-QA is one line, so its errors also name the exam and qid."""
    if isinstance(record, dict) and "_exam" in record:
        return f" (exam {record['_exam']}, qid {record.get('qid')})"
    return ""


def _auto_format(path: Path, fields: dict | None) -> str:
    if fields is None:
        return detect_format(path)
    return "jsonl" if isinstance(_first_json_line(path), dict) else "csv"


def holdout_split(questions, *, holdout_fraction: float = 0.5,
                  salt: str = "instret") -> tuple[list[Question], list[Question]]:
    """Split into (kept, held_out) by a stable hash of each question's id.

    The same question text always lands on the same side, on any machine and in any order, so a
    corpus built from `kept` never holds a held-out question (MMLU law has no train split).
    """
    if not 0.0 <= holdout_fraction <= 1.0:
        raise ValueError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
    kept, held_out = [], []
    for question in questions:
        digest = hashlib.sha256(f"{salt}:{question.id}".encode("utf-8")).digest()
        in_holdout = int.from_bytes(digest[:8], "big") / 2**64 < holdout_fraction
        (held_out if in_holdout else kept).append(question)
    return kept, held_out
