"""benchmarks/bench_domains.py's tables come from its journals: a small scripted journal gives
known exact McNemar p-values and Wilson intervals."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_domains  # noqa: E402

SMALL = bench_domains.SMALL


def record(method: str, n: int, correct: bool, latency: float = 2.0) -> dict:
    return {"key": f"{method}|{SMALL}|q{n}", "method": method, "student": SMALL, "question_id": f"q{n}",
            "correct": correct, "parse_failed": False, "recovery": "direct" if n else "json", "cached": False,
            "truncated": False, "prompt_tokens": 300, "completion_tokens": 60, "teacher_prompt_tokens": 0,
            "teacher_completion_tokens": 0, "latency_s": latency}


@pytest.fixture
def out(tmp_path):
    """10 questions: zero_shot right on 3, cot on 5, instruction retrieval on 9 (each a superset)."""
    folder = tmp_path / "medqa"
    folder.mkdir()
    rows = [record(method, n, n < right) for method, right in (("zero_shot", 3), ("cot", 5),
                                                                ("instruction_retrieval", 9)) for n in range(10)]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return tmp_path


def test_the_report_reads_accuracy_intervals_and_paired_tests_from_the_journal(out, monkeypatch):
    monkeypatch.setattr(bench_domains, "MATH", {})
    args = argparse.Namespace(domains=["medqa"], out=out, target=100)
    text = bench_domains.report(args)
    # 9 of 10: Wilson [59.6%, 98.2%]; 6 and 4 discordant pairs, all one way: p = 2 / 2^6 and 2 / 2^4
    assert (f"| {SMALL} | instruction_retrieval | 10 | 90.0% [59.6%, 98.2%] | +60.0% (p=0.031) | "
            f"+40.0% (p=0.125) | 0 | 0 | 1 | 2.0 |") in text
    assert f"| {SMALL} | cot | 10 | 50.0% [23.7%, 76.3%] | +20.0% (p=0.500) | — |" in text
    assert f"| medqa | {SMALL} | 50.0% | 90.0% | +40.0% (p=0.125) | — | +9.4 |" in text
    assert "Corpus: not built yet" in text


def test_the_size_table_has_math_from_the_real_models_journals(out, monkeypatch):
    """GSM8K's rows come from the real-models benchmark's journal, beside the domains' own."""
    folder = out / "real-models" / "gsm8k"
    folder.mkdir(parents=True)
    rows = [record(method, n, n < right) for method, right in (("cot", 2), ("instruction_retrieval", 1),
                                                                ("instruction_retrieval@reply", 4)) for n in range(10)]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setattr(bench_domains, "MATH", {"gsm8k": folder})
    text = bench_domains.report(argparse.Namespace(domains=["medqa"], out=out, target=100))
    assert f"| gsm8k | {SMALL} | 20.0% | 10.0% | -10.0% (p=1.000) | 40.0% | +5.1 (math) |" in text
    assert f"| medqa | {SMALL} | 50.0% | 90.0% |" in text


def test_the_projection_times_the_missing_answers(out):
    lines = bench_domains.projection({"medqa": bench_domains.journal("medqa", out)}, target=100)
    assert f"| medqa | {SMALL} | cot | 10 | 2.0 | 3 min |" in lines  # 90 more at 2 s
    assert f"| medqa | {SMALL} | generic_guide | 0 | — | — |" in lines
    assert "each: 0.1 h (9 min) of model time" in lines[-1]  # 3 methods × 90 answers × 2 s


def test_guide_use_counts_distinct_first_guides_and_replies_that_repeat_a_guide(tmp_path):
    guide = {"title": "Negligence", "background": "Duty of care is owed to foreseeable plaintiffs.",
             "procedure": ["Identify the duty owed by the defendant", "Check breach and causation"]}
    (tmp_path / "guides.jsonl").write_text(
        "".join(json.dumps({"guide_id": g, "guide": guide}) + "\n" for g in ("g1", "g2")), encoding="utf-8")
    method = "instruction_retrieval"

    def answer(n: int, ids, reasoning: str) -> dict:
        return {**record(method, n, True), "inputs": {"question": "Was the duty owed by the defendant breached?"},
                "outputs": {"reasoning": reasoning, "reference_ids": ids, "reference_scores": [0.5, 0.1]}}

    rows = [answer(0, ["g1", "g2"], "First I identify the duty owed by the defendant here."),  # in the question
            answer(1, "['g2', 'g1']", "Then check breach and causation: both hold."),  # a fallback's text form
            answer(2, ["g1"], "B."), answer(3, [], "No guide: C.")]
    lines = bench_domains.guide_use(rows, bench_domains.written_guides(tmp_path))
    # 'identify the duty owed' is the guide's, but 'the duty owed by' is the question's: reply 0 still
    # repeats the guide's 'identify the duty owed'; reply 1 repeats 'check breach and causation'; 2 and 3 do not
    assert f"| {SMALL} | {method} | 4 | 1 | 2 of 2 | 0.50 | 50% |" in lines
    # @reply: the prefilled opening restates the guide; only what follows it counts
    opening_then_own = "Check breach and causation. Following it for this question: B."
    reply = {**rows[2], "method": "instruction_retrieval@reply",
             "outputs": {**rows[2]["outputs"], "reasoning": opening_then_own}}
    lines = bench_domains.guide_use([reply], bench_domains.written_guides(tmp_path))
    assert f"| {SMALL} | instruction_retrieval@reply | 1 | 0 | 1 of 2 | 0.50 | 0% |" in lines


def test_the_report_keeps_the_notes_written_below_its_marker(out):
    results = out / "domains.md"
    bench_domains.main(["report", "--domains", "medqa", "--out", str(out), "--results", str(results)])
    first = results.read_text(encoding="utf-8")
    assert first.rstrip().endswith(bench_domains.NOTES)
    results.write_text(first.replace("## Size table", "## Size table, stale") + "What the run shows.\n")
    bench_domains.main(["report", "--domains", "medqa", "--out", str(out), "--results", str(results)])
    again = results.read_text(encoding="utf-8")
    assert "stale" not in again and again.endswith(f"{bench_domains.NOTES}\nWhat the run shows.\n")


def test_an_answer_recovered_from_its_raw_text_keeps_its_questions_retrieval(tmp_path):
    """A lenient_extract answer journals only `raw`: its question's guides come from another answer
    to it (retrieval depends on the question alone), and its raw reply is what is read for use."""
    guide = {"title": "Negligence", "background": "Duty of care is owed to foreseeable plaintiffs.",
             "procedure": ["Check breach and causation"]}
    (tmp_path / "guides.jsonl").write_text(json.dumps({"guide_id": "g1", "guide": guide}) + "\n", encoding="utf-8")
    kept = {**record("instruction_retrieval", 0, True), "inputs": {"question": "Liable?"},
            "outputs": {"reasoning": "B.", "reference_ids": ["g1"], "reference_scores": [0.5]}}
    recovered = {**kept, "method": "instruction_retrieval@reply", "recovery": "lenient_extract",
                 "outputs": {"raw": "[[ ## reasoning ## ]]\nI check breach and causation: yes. Answer: B"}}
    lines = bench_domains.guide_use([kept, recovered], bench_domains.written_guides(tmp_path))
    assert f"| {SMALL} | instruction_retrieval@reply | 1 | 0 | 1 of 1 | 0.50 | 100% |" in lines


def test_the_projection_also_uses_each_students_measured_throughput(out):
    """Latencies overlap when answers are in flight together: the run log's wall time says more."""
    bench_domains.log_run(out / "medqa", {"date": "2026-12-07T21:00:00", "student": SMALL, "answers": 30,
                                          "wall_s": 300.0, "threads": 4, "model_threads": 2})
    records = {"medqa": bench_domains.journal("medqa", out)}
    assert bench_domains.throughput(records, 100, out) == []  # the 1.5B has no batched run yet
    bench_domains.log_run(out / "medqa", {"date": "2026-12-07T21:05:00", "student": bench_domains.LARGE,
                                          "answers": 10, "wall_s": 200.0, "threads": 4, "model_threads": 2})
    lines = bench_domains.throughput(records, 100, out)
    # 0.5B: 5 methods × 100 minus the 30 journaled = 470 at 10 s; 1.5B: none journaled, 300 at 20 s
    assert f"- medqa, {SMALL}: 10.0 s per answer over 30 answers (4 in flight, model threads 2, 2026-12-07); " \
           "470 to go" in lines
    assert lines[-1] == "Projected for the rest: 3.0 h (178 min) of model time."  # 4,700 + 6,000 s
