"""Input mistakes a new user makes on the command line (issue 7): each error names the file (and line),
says the fix in the CLI's own options, and reports the JSON parser's real complaint once."""

from __future__ import annotations

import re

import pytest

from instret.cli.main import main


def write(folder, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def run(args) -> tuple[int, str]:
    """The command's exit code and what it printed as an error (in-process; nothing loads a model)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


def commands(path: str) -> dict[str, list[str]]:
    """The three commands that read question files, each reading `path`."""
    return {"corpus build": ["corpus", "build", "--train", path, "--domain", "math", "--out", "out", "--no-progress"],
            "eval": ["eval", "--test", path, "--methods", "zero_shot", "--out", "out", "--no-progress"],
            "compile": ["compile", "--method", "cot", "--train", path, "-o", "out.json"]}


@pytest.mark.parametrize("command", ["corpus build", "eval", "compile"])
def test_own_csv_without_field_gets_the_cli_hint_and_its_columns(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "mine.csv", "prompt,target\nWhat is 2+2?,4\n")
    code, error = run(commands(path)[command])
    assert code == 2 and error.startswith(f"instret: error: {path} is your own csv file")
    assert "(its columns: prompt, target)" in error
    assert "--field text=COLUMN --field answer=COLUMN" in error
    assert "fields=" not in error and "}}" not in error and not (tmp_path / "out").exists()


def test_field_without_text_names_the_file_and_the_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "mine.csv", "prompt,target\nWhat is 2+2?,4\n")
    code, error = run(commands(path)["corpus build"] + ["--field", "answer=target"])
    assert code == 2 and error.startswith(f"instret: error: {path}: add --field text=COLUMN")
    code, error = run(commands(path)["corpus build"] + ["--field", "text"])
    assert code == 2 and f"{path}: --field text should look like --field text=COLUMN" in error
    code, error = run(commands(path)["corpus build"] + ["--field", "text=question"])
    assert code == 2 and f"{path}:1: field 'question': no column 'question' (given for 'text')" in error


@pytest.mark.parametrize("line, expected", [
    ('{"q": "unterminated, "a": 3}', "invalid JSON: Expecting ',' delimiter at column 23"),
    ('{"q": "never closed', "invalid JSON: Unterminated string starting at column 7"),
])
def test_malformed_jsonl_line_reports_one_line_number_and_the_parsers_words(tmp_path, monkeypatch, line, expected):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "mine.jsonl", '{"q": "a", "a": 1}\n{"q": "b", "a": 2}\n\n' + line + "\n")
    code, error = run(commands(path)["corpus build"] + ["--field", "text=q"])
    assert code == 2
    assert error.strip() == f"instret: error: {path}:4: field '<row>': {expected}"
    assert not re.search(r"\bline \d", error) and "Invalid control character" not in error


def test_unknown_formats_name_the_file_and_the_cli_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = write(tmp_path, "notes.txt", "just some words\n")
    code, error = run(commands(text)["corpus build"])
    assert code == 2 and f"cannot tell the format of {text}" in error
    assert "pass --format (one of gsm8k, math" in error and "--field text=COLUMN" in error and "format=" not in error
    code, error = run(commands(text)["corpus build"] + ["--format", "xml"])
    assert code == 2 and f"{text}: unknown format 'xml'" in error
    csv = write(tmp_path, "mine.csv", "prompt,target\nWhat is 2+2?,4\n")
    code, error = run(commands(csv)["corpus build"] + ["--format", "gsm8k", "--field", "text=prompt"])
    assert code == 2 and f"{csv}: --field only applies to --format jsonl or csv, not gsm8k" in error


def test_the_documented_option_table_lists_domain():
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "instruction-retrieval.md").read_text(encoding="utf-8")
    table = page.split("Useful options of `corpus build`")[1].split("\n\n")[1]
    assert "| `--domain NAME` |" in table and "required with `--train`" in table


def test_answer_without_a_corpus_names_the_flags_not_a_python_call(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no corpora/ here, so nothing is picked up by default
    code, error = run(["answer", "What is 2 + 2?"])  # the default method retrieves guides
    assert code == 2
    assert "--corpus DIR" in error and "--method cot" in error and "make_program" not in error


def test_make_program_without_a_corpus_says_the_python_call():
    from instret.programs.methods import CorpusNeeded, make_program

    with pytest.raises(CorpusNeeded, match=r"make_program\('passage_rag', Corpus.open\(folder\), kind\)"):
        make_program("passage_rag")
