"""Loaders on small byte-for-byte slices of the real benchmark files (tests/fixtures/data)."""

import json
from pathlib import Path

import pytest

from instret.data.loaders import (
    FORMATS, BadRowError, InputError, LoadReport, detect_format, holdout_split, last_boxed, load_questions,
    parse_field_mapping,
)
from instret.data.questions import Question

DATA = Path(__file__).parents[1] / "fixtures" / "data"


def fixture(name: str) -> str:
    return str(DATA / name)


def write(tmp_path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- each real format

def test_gsm8k_gold_is_after_the_marker_without_commas():
    report = load_questions(fixture("gsm8k_train.jsonl"))
    questions = report.questions
    assert [q.answer for q in questions] == ["72", "10", "850000"]  # "#### 850,000" in the file
    assert questions[0].text.startswith("Natalia sold clips to 48 of her friends in April")
    assert questions[0].solution.startswith("Natalia sold 48/2 = <<48/2=24>>24 clips in May.")
    assert questions[0].solution.endswith("#### 72")
    assert [q.line for q in questions] == [1, 2, 3]
    assert {q.source for q in questions} == {fixture("gsm8k_train.jsonl")}
    assert questions[0].options is None and questions[0].subject is None


def test_math_train_answer_subject_and_crlf_lines():
    report = load_questions(fixture("math_train.jsonl"))  # this file has CRLF line ends
    first, second = report.questions[:2]
    assert first.text.startswith("Chandra has four bowls.")
    assert (first.answer, first.subject, first.solution) == ("16", "Prealgebra", None)
    assert second.answer == "180\\text{ miles}"
    # rows 4 and 5 are the same problem with different spacing: the second is merged away
    assert report.duplicates_merged == 1
    assert [q.line for q in report.questions] == [1, 2, 3, 4]


def test_math_test_gold_is_the_last_balanced_boxed():
    questions = load_questions(fixture("math_test.jsonl")).questions
    assert [q.answer for q in questions] == ["2", "\\frac{x+2}{7}", "10", "315"]
    assert [q.subject for q in questions] == ["Algebra", "Algebra", "Algebra", "Precalculus"]
    assert questions[2].solution.count("\\boxed") == 2  # two methods, both boxed
    assert questions[1].solution.endswith("\\boxed{\\frac{x+2}{7}}.\\]")


def test_svamp_joins_body_and_question_and_finds_element_lines():
    questions = load_questions(fixture("SVAMP.json")).questions
    assert questions[0].text == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 "
                                 "dollars on each pack. How much do you have to pay to buy each pack?")
    assert questions[2].text.startswith("Paco had 26 salty cookies and 17 sweet cookies. He ate")
    assert ".. " not in questions[2].text  # the Body already ended with a full stop
    assert [q.answer for q in questions] == ["51", "1", "17"]  # 51.0 in the file
    assert questions[0].solution == "( 76.0 - 25.0 )"
    assert questions[0].subject == "Subtraction"
    assert [q.line for q in questions] == [2, 10, 18]
    lines = Path(fixture("SVAMP.json")).read_text().splitlines()
    assert all(lines[q.line - 1].strip() == "{" for q in questions)


def test_medqa_options_letter_and_step():
    questions = load_questions(fixture("phrases_no_exclude_dev.jsonl")).questions
    first = questions[0]
    assert first.options == {"A": "Gentamicin", "B": "Ciprofloxacin", "C": "Ceftriaxone",
                             "D": "Trimethoprim"}
    assert (first.answer, first.subject, first.line) == ("C", "step1", 1)
    assert [q.subject for q in questions] == ["step1", "step2&3", "step1"]


def test_headqa_letters_category_and_skipped_images():
    report = load_questions(fixture("train_HEAD_EN.json"))
    assert report.skipped_with_image == 1
    first, *_, placenta = report.questions
    assert first.text == "The excitatory postsynaptic potentials:"
    assert list(first.options) == ["A", "B", "C", "D", "E"]  # the train split has 5 answers
    assert first.options["C"] == "They can be added."
    assert first.answer == "C"  # ra "3"
    assert (first.subject, first.line) == ("biology", 1)
    assert (placenta.text, placenta.answer, placenta.subject) == (
        "The placenta is a derivative of:", "B", "medicine")
    assert len(report.questions) == 4


def test_mmlu_subject_from_file_name_and_options():
    questions = load_questions(fixture("professional_law_test.csv")).questions
    first = questions[0]
    assert first.subject == "professional_law"
    assert first.text.startswith("One afternoon, a pilot was flying a small airplane")
    assert list(first.options) == ["A", "B", "C", "D"]
    assert first.options["A"].startswith("admissible, because the")
    assert [q.answer for q in questions] == ["C", "B", "D"]
    assert [q.line for q in questions] == [1, 2, 3]


def test_mmlu_record_spanning_two_lines_keeps_its_start_line():
    questions = load_questions(fixture("jurisprudence_val.csv")).questions
    assert [q.line for q in questions] == [1, 2, 3, 5]  # record 3 runs over lines 3-4
    assert questions[2].text.endswith("moral criteria.'\nWhich proposition below is the most inconsistent "
                                      "with this description?")  # "\r\n" inside the quotes in the file
    assert questions[0].subject == "jurisprudence"


def test_duplicates_are_merged_across_files_keeping_the_first():
    files = [fixture("math_train.jsonl"), fixture("math_test.jsonl")]
    report = load_questions(files)
    triangle = [q for q in report.questions if q.text.startswith("The points $(0,0)")]
    assert len(triangle) == 1 and triangle[0].source == files[0]  # spacing differs between files
    assert triangle[0].subject == "Geometry"
    assert report.duplicates_merged == 2  # one inside math_train, one across the files
    assert len(report.questions) == 4 + 4 - 1
    assert load_questions(files[::-1]).questions[3].source == files[1]


def test_path_objects_and_summary():
    report = load_questions([DATA / "gsm8k_train.jsonl"])
    assert report.questions[0].source == str(DATA / "gsm8k_train.jsonl")
    assert isinstance(report, LoadReport)
    assert report.summary() == "3 questions (0 duplicates merged, 0 skipped for a missing image, 0 bad rows)"
    assert "\n" not in report.summary()


# ---------------------------------------------------------------- format detection

@pytest.mark.parametrize("name, expected", [
    ("gsm8k_train.jsonl", "gsm8k"), ("math_train.jsonl", "math"), ("math_test.jsonl", "math"),
    ("SVAMP.json", "svamp"), ("phrases_no_exclude_dev.jsonl", "medqa"),
    ("train_HEAD_EN.json", "headqa"), ("professional_law_test.csv", "mmlu"),
    ("jurisprudence_val.csv", "mmlu"),
])
def test_detect_format_on_real_files(name, expected):
    assert detect_format(fixture(name)) == expected
    assert expected in FORMATS


def test_detect_format_sniffs_content_not_the_name(tmp_path):
    disguised = tmp_path / "questions.txt"
    disguised.write_bytes((DATA / "phrases_no_exclude_dev.jsonl").read_bytes())
    assert detect_format(disguised) == "medqa"
    assert detect_format(write(tmp_path, "mine.data", '{"prompt": "hi", "target": "1"}\n')) == "jsonl"
    assert detect_format(write(tmp_path, "mine.data", "prompt,target\nhi,1\n")) == "csv"
    pretty = json.dumps(json.loads((DATA / "train_HEAD_EN.json").read_text()), indent=2)
    assert detect_format(write(tmp_path, "head.json", pretty)) == "headqa"


@pytest.mark.parametrize("content", ["", "just some words\n", '[{"a": 1}]', '"a string"\n',
                                     '{"question": \n{"question": "Q"}\n'])
def test_unknown_format_says_to_pass_format_and_fields(tmp_path, content):
    path = write(tmp_path, "odd.txt", content)
    with pytest.raises(ValueError, match="format") as error:
        detect_format(path)
    assert path in str(error.value)
    if content:
        assert "fields=" in str(error.value)


def test_missing_file_names_the_path(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_questions(missing)


# ---------------------------------------------------------------- bad rows

GSM_OK = '{"question": "One?", "answer": "so\\n#### 1"}\n'
MEDQA_ROW = {"question": "Q?", "options": {"A": "x", "B": "y"}, "answer_idx": "A", "meta_info": "step1"}
MATH_TEST_ROW = {"problem": "P?", "level": "Level 1", "type": "Algebra", "solution": "so $\\boxed{3}$"}


def jsonl(*rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def headqa(ra="2", aid_type=int) -> str:
    item = {"qid": "7", "qtext": "Q?", "ra": ra, "image": "",
            "answers": [{"aid": aid_type(1), "atext": "x"}, {"aid": aid_type(2), "atext": "y"}]}
    return json.dumps({"exams": {"Cuaderno_X": {"name": "Cuaderno_X", "category": "biology", "data": [item]}}})


BAD_INPUTS = {
    "invalid JSON": ("gsm8k", "a.jsonl", GSM_OK + '{"question": "Two?", "answer": \n', 2, "<row>"),
    "JSON not an object": ("gsm8k", "a.jsonl", GSM_OK + "[1, 2]\n", 2, "<row>"),
    "missing field": ("gsm8k", "a.jsonl", jsonl({"answer": "#### 1"}), 1, "question"),
    "empty text": ("medqa", "a.jsonl", jsonl(dict(MEDQA_ROW, question="  ")), 1, "question"),
    "options not a dict": ("medqa", "a.jsonl", jsonl(dict(MEDQA_ROW, options=["x", "y"])), 1, "options"),
    "text not a string": ("gsm8k", "a.jsonl", jsonl({"question": 5, "answer": "#### 1"}), 1, "question"),
    "gsm8k without ####": ("gsm8k", "a.jsonl", GSM_OK + jsonl({"question": "Q?", "answer": "1"}), 2, "answer"),
    "math without boxed": ("math", "a.jsonl", jsonl(dict(MATH_TEST_ROW, solution="it is 3")), 1, "solution"),
    "math boxed unclosed": ("math", "a.jsonl", jsonl(dict(MATH_TEST_ROW, solution="\\boxed{3")), 1, "solution"),
    "math empty answer": ("math", "a.jsonl", jsonl({"problem": "P?", "answer": ""}), 1, "answer"),
    "math no answer": ("math", "a.jsonl", jsonl({"problem": "P?", "level": "Level 1"}), 1, "solution"),
    "medqa letter": ("medqa", "a.jsonl", jsonl(dict(MEDQA_ROW, answer_idx="E")), 1, "answer_idx"),
    "headqa ra": ("headqa", "h.json", headqa(ra="9"), 1, "ra"),
    "headqa aid type": ("headqa", "h.json", headqa(aid_type=str), 1, "answers"),
    "headqa no exams": ("headqa", "h.json", '{"version": "1.0"}', 1, "exams"),
    "mmlu columns": ("mmlu", "law_test.csv", 'Q?,a,b,c,d,A\nQ2?,a,b,c,B\n', 2, "<row>"),
    "mmlu answer": ("mmlu", "law_test.csv", 'Q?,a,b,c,d,A\n\n"Q\n2?",a,b,c,d,E\n', 3, "answer"),
    "svamp answer type": ("svamp", "s.json", '[\n  {"Body": "B.", "Question": "Q?", "Answer": [1]}\n]', 2, "Answer"),
    "svamp broken JSON": ("svamp", "s.json", '[\n {"Body": "B", "Question": "Q?", "Answer": 1},\n {"Body": \n]', 3,
                          "<row>"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_names_file_line_and_field(tmp_path, case):
    format, name, content, line, field = BAD_INPUTS[case]
    path = write(tmp_path, name, content)
    with pytest.raises(BadRowError) as caught:
        load_questions(path, format=format)
    error = caught.value
    assert (error.path, error.line, error.field) == (path, line, field)
    assert str(error).startswith(f"{path}:{line}: field '{field}': ")


def test_headqa_error_names_exam_and_qid(tmp_path):
    with pytest.raises(BadRowError, match=r"exam Cuaderno_X, qid 7"):
        load_questions(write(tmp_path, "h.json", headqa(ra="9")))


def test_blank_lines_are_skipped_and_counted(tmp_path):
    path = write(tmp_path, "a.jsonl", "\n" + GSM_OK + "\n  \n" + GSM_OK.replace("One", "Two"))
    assert [q.line for q in load_questions(path).questions] == [2, 5]


def test_skip_mode_collects_bad_rows_and_goes_on(tmp_path):
    rows = GSM_OK + "{broken\n" + jsonl({"question": "Q?", "answer": "no marker"}) + GSM_OK.replace("One", "Two")
    broken_array = write(tmp_path, "s.json", '[\n {"Body": "B", "Question": "Q?", "Answer": 1},\n {oops\n]')
    report = load_questions([write(tmp_path, "a.jsonl", rows), broken_array], skip_bad_rows=True)
    assert [q.text for q in report.questions] == ["One?", "Two?", "B. Q?"]
    assert [(Path(e.path).name, e.line, e.field) for e in report.bad_rows] == [
        ("a.jsonl", 2, "<row>"), ("a.jsonl", 3, "answer"), ("s.json", 3, "<row>")]
    assert report.summary().endswith("3 bad rows)")
    with pytest.raises(BadRowError):
        load_questions(broken_array)


def test_invalid_json_line_has_one_line_number_and_the_parsers_words(tmp_path):
    path = write(tmp_path, "a.jsonl", GSM_OK + '{"question": "never closed\n' + '{"question": "Q", "answer": }\r\n')
    report = load_questions(path, skip_bad_rows=True)
    assert [(e.line, e.reason) for e in report.bad_rows] == [
        (2, "invalid JSON: Unterminated string starting at column 14"),
        (3, "invalid JSON: Expecting value at column 29")]


def test_bytes_that_are_not_utf8_are_reported_on_their_line(tmp_path):
    for name, good in (("a.csv", b"q,gold\nPick,A\n"), ("s.json", b'[\n {"Body": "B", "Question": "Q?", "Answer": 1}\n,')):
        path = tmp_path / name
        path.write_bytes(good + b"\xff\n")
        with pytest.raises(BadRowError, match="invalid UTF-8") as caught:
            load_questions(str(path), fields={"text": "q"} if name.endswith(".csv") else None,
                           format="auto" if name.endswith(".csv") else "svamp")
        assert (caught.value.path, caught.value.line) == (str(path), 3)
    path = tmp_path / "b.jsonl"
    path.write_bytes(GSM_OK.encode() + b'{"question": "\xff"}\n')
    assert load_questions(str(path), skip_bad_rows=True).bad_rows[0].line == 2


def test_mapping_mistakes_name_the_files_and_have_cli_wording(tmp_path):
    first, second = write(tmp_path, "a.csv", "q,gold\nPick,A\n"), write(tmp_path, "b.csv", "q,gold\nTwo,B\n")
    with pytest.raises(InputError) as caught:
        load_questions([first, second], fields={"answer": "gold"})
    assert str(caught.value).startswith(f"{first}, {second}: fields must map 'text'")
    assert caught.value.cli_message.startswith(f"{first}, {second}: add --field text=COLUMN")
    with pytest.raises(InputError) as caught:
        load_questions(first)
    assert "(its columns: q, gold)" in str(caught.value) and "fields={'text': COLUMN" in str(caught.value)
    assert "--field text=COLUMN --field answer=COLUMN" in caught.value.cli_message
    assert "}}" not in str(caught.value) + caught.value.cli_message


def test_bad_row_error_is_a_value_error_with_fields():
    error = BadRowError("x.jsonl", 3, "answer", "no final answer")
    assert isinstance(error, ValueError)
    assert str(error) == "x.jsonl:3: field 'answer': no final answer"
    assert (error.path, error.line, error.field, error.reason) == ("x.jsonl", 3, "answer", "no final answer")


# ---------------------------------------------------------------- custom files

def test_custom_jsonl_with_mapping(tmp_path):
    path = write(tmp_path, "mine.jsonl", jsonl(
        {"prompt": "Pick one", "target": "B", "choices": {"A": "x", "B": "y"}, "topic": "t"},
        {"prompt": "Pick again", "target": 2.0, "choices": ["p", "q"], "topic": "t"}))
    fields = {"text": "prompt", "answer": "target", "options": "choices", "subject": "topic"}
    questions = load_questions(path, fields=fields).questions
    assert [(q.text, q.answer, q.options, q.subject) for q in questions] == [
        ("Pick one", "B", {"A": "x", "B": "y"}, "t"), ("Pick again", "2", {"A": "p", "B": "q"}, "t")]
    assert load_questions(path, format="jsonl", fields=fields).questions == questions
    as_cli = ["text=prompt", "answer=target", "options=choices", "subject=topic"]
    assert load_questions(path, fields=as_cli).questions == questions


def test_custom_csv_with_header_and_option_columns(tmp_path):
    path = write(tmp_path, "mine.csv", "q,w,x,y,z,gold\nPick one,a,b,c,d,C\n\"Two\nlines\",a,b,c,d,A\n")
    fields = parse_field_mapping(["text=q", "options=w,x,y,z", "answer=gold"])
    questions = load_questions(path, fields=fields).questions
    assert questions[0].options == {"A": "a", "B": "b", "C": "c", "D": "d"}
    assert [(q.answer, q.line) for q in questions] == [("C", 2), ("A", 3)]


def test_custom_mapping_naming_an_absent_column_fails_the_file(tmp_path):
    csv_path = write(tmp_path, "mine.csv", "q,gold\nPick,A\n")
    with pytest.raises(BadRowError, match="field 'prompt'") as caught:
        load_questions(csv_path, fields={"text": "prompt"}, skip_bad_rows=True)
    assert caught.value.line == 1 and csv_path in str(caught.value)
    jsonl_path = write(tmp_path, "mine.jsonl", jsonl({"q": "Pick"}))
    with pytest.raises(BadRowError) as caught:
        load_questions(jsonl_path, fields={"text": "q", "answer": "gold"})
    assert (caught.value.line, caught.value.field) == (1, "gold")


def test_custom_files_need_fields(tmp_path):
    path = write(tmp_path, "mine.jsonl", jsonl({"prompt": "Pick"}))
    with pytest.raises(ValueError, match="fields="):
        load_questions(path)
    with pytest.raises(ValueError, match="fields="):
        load_questions(fixture("gsm8k_train.jsonl"), format="gsm8k", fields={"text": "question"})
    with pytest.raises(ValueError, match="unknown format"):
        load_questions(path, format="parquet")


def test_parse_field_mapping():
    assert parse_field_mapping(["text=prompt", "answer = target"]) == {"text": "prompt", "answer": "target"}
    assert parse_field_mapping("text=prompt") == {"text": "prompt"}
    for bad in (["prompt"], ["answer=target"], ["text=prompt", "colour=red"], ["text="]):
        with pytest.raises(ValueError):
            parse_field_mapping(bad)


# ---------------------------------------------------------------- helpers

def test_last_boxed():
    assert last_boxed("$\\boxed{1}$ or $\\boxed{\\frac{1}{2}}$") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert last_boxed("no answer") is None
    assert last_boxed("\\boxed{\\frac{1}{2}") is None


def test_holdout_split_is_deterministic_disjoint_and_complete():
    questions = [Question(text=f"Question number {i}?") for i in range(400)]
    kept, held_out = holdout_split(questions)
    assert holdout_split(list(reversed(questions))) == (kept[::-1], held_out[::-1])
    assert {q.id for q in kept}.isdisjoint({q.id for q in held_out})
    assert len(kept) + len(held_out) == 400 and 150 < len(held_out) < 250
    assert kept == [q for q in questions if q in kept]  # input order kept
    # the same text with other spacing goes to the same side
    twin = Question(text="  question NUMBER 0? ")
    assert (twin in holdout_split([twin])[1]) == (questions[0] in held_out)
    assert holdout_split(questions, salt="other") != (kept, held_out)
    assert len(holdout_split(questions, holdout_fraction=0.2)[1]) < len(held_out)
    assert holdout_split(questions, holdout_fraction=0.0) == (questions, [])
    with pytest.raises(ValueError):
        holdout_split(questions, holdout_fraction=1.5)
