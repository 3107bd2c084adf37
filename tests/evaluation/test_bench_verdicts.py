"""benchmarks/bench_verdicts.py's design table: AUROC of the whole solution's verdict and of its
step verdicts taken three ways, from a scripted journal; the hand-written notes survive a rewrite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_verdicts  # noqa: E402
from bench_domains import NOTES  # noqa: E402


def verdict(n: int, correct: bool, whole: float, steps: list) -> dict:
    return {"key": f"q{n}|yes_no", "question_id": f"q{n}", "line": n + 1, "design": "yes_no", "correct": correct,
            "solution_verdict": whole, "step_verdicts": steps, "steps": len(steps), "teacher_written": 10,
            "teacher_read": 100, "teacher_cached": 40, "seconds": 2.0}


# Right A, B; wrong C, D, E. Least steps: right {.2, .6} against wrong {.45, .1}: 3 of 4 pairs
# ordered, 0.75. Means: right {.55, .7} against wrong {.72, .525}: 2 of 4, 0.50. First steps:
# right {.9, .8} above wrong {.45, .1}: 1.00. E has no step verdict read: left out of those three.
RECORDS = [verdict(0, True, 0.9, [0.9, 0.2]), verdict(1, True, 0.8, [0.8, 0.6]),
           verdict(2, False, 0.1, [0.45, 0.99]), verdict(3, False, 0.2, [0.1, 0.95]),
           verdict(4, False, 0.0, [None])]


def cells(text: str) -> list[str]:
    row = next(line for line in text.splitlines() if line.startswith("| yes_no |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_each_step_score_ranks_right_solutions_by_its_own_rule():
    row = cells(bench_verdicts.table(RECORDS, ["yes_no"], answered=5))
    assert row[1] == "5 of 5"
    assert row[2].startswith("1.00 [") and row[2].endswith("(n = 5)")
    assert [c.split(" [")[0] for c in row[3:6]] == ["0.75", "0.50", "1.00"]
    assert all(c.endswith("(n = 4)") for c in row[3:6])
    assert row[6:] == ["10.0", "100", "40", "2.0"]


def test_the_report_keeps_what_is_written_below_the_notes_marker(tmp_path):
    out, results = tmp_path / "verdicts", tmp_path / "verdicts.md"
    (out / "cot").mkdir(parents=True)
    (out / "verdicts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    solutions = [{"method": "cot", "student": "local/qwen2.5-coder-0.5b", "line": r["line"],
                  "question_id": r["question_id"], "correct": r["correct"]} for r in RECORDS]
    (out / "cot" / "results.jsonl").write_text("".join(json.dumps(s) + "\n" for s in solutions), encoding="utf-8")
    results.write_text(f"# an older table\n\n{NOTES}\n\n## Read with care\n\nby hand\n", encoding="utf-8")
    bench_verdicts.main(["--report-only", "--designs", "yes_no", "--out", str(out), "--results", str(results)])
    text = results.read_text(encoding="utf-8")
    assert "an older table" not in text and "right on 2 of them" in text
    assert cells(text)[1] == "5 of 5"
    assert text.endswith(f"{NOTES}\n\n## Read with care\n\nby hand\n")


def test_a_recovered_answer_is_judged_on_the_reasoning_of_its_raw_reply():
    """The lenient extractor keeps only the raw reply: its steps are read from there, not lost."""
    raw = "[[ ## reasoning ## ]]\nShe read 12 × 2 = 24 pages.\nThen 120 - 24 = 96 are left.\n[[ ## answer ## ]]\n96"
    recovered = {"outputs": {"raw": raw, "unparsed_replies": []}}
    assert bench_verdicts.reasoning_of(recovered) == "She read 12 × 2 = 24 pages.\nThen 120 - 24 = 96 are left."
    assert bench_verdicts.steps_of(bench_verdicts.reasoning_of(recovered)) == [
        "She read 12 × 2 = 24 pages.", "Then 120 - 24 = 96 are left."]
    parsed = {"outputs": {"reasoning": "Step 1: 2 + 2 = 4", "raw": "ignored"}}
    assert bench_verdicts.reasoning_of(parsed) == "Step 1: 2 + 2 = 4"
    assert bench_verdicts.reasoning_of({"outputs": {}}) == ""


def test_a_verdict_judged_without_the_solutions_steps_is_asked_again():
    raw = {"question_id": "q1", "outputs": {"raw": "[[ ## reasoning ## ]]\n3 + 4 = 7.\n[[ ## answer ## ]]\n7"}}
    empty = {"question_id": "q2", "outputs": {"raw": ""}}
    done = {"q1|yes_no": {"steps": 0}, "q1|score": {"steps": 1}, "q2|yes_no": {"steps": 0}}
    asked = bench_verdicts.to_ask([raw, empty], ["yes_no", "score"], done)
    # q1's yes_no was judged on no steps though it has one; q2 has none to judge; q2|score is new
    assert [(row["question_id"], design) for row, design in asked] == [("q1", "yes_no"), ("q2", "score")]


def test_the_table_leaves_out_verdicts_judged_without_the_solutions_text(tmp_path):
    out, results = tmp_path / "verdicts", tmp_path / "verdicts.md"
    (out / "cot").mkdir(parents=True)
    stale = {**RECORDS[0], "steps": 0, "step_verdicts": []}  # journaled before its raw reply was read
    journaled = [stale, *RECORDS[1:]]
    (out / "verdicts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in journaled), encoding="utf-8")
    raw = "[[ ## reasoning ## ]]\n2 + 2 = 4.\n[[ ## answer ## ]]\n4"
    solutions = [{"method": "cot", "student": "local/qwen2.5-coder-0.5b", "line": r["line"],
                  "question_id": r["question_id"], "correct": r["correct"], "outputs": {"raw": raw}} for r in RECORDS]
    (out / "cot" / "results.jsonl").write_text("".join(json.dumps(s) + "\n" for s in solutions), encoding="utf-8")
    bench_verdicts.main(["--report-only", "--designs", "yes_no", "--out", str(out), "--results", str(results)])
    assert cells(results.read_text(encoding="utf-8"))[1] == "4 of 5"
