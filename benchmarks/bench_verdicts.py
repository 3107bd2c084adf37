"""Which teacher verdict tells a student's right solutions from its wrong ones? (issue 24, step 0)

    .venv/bin/python benchmarks/bench_verdicts.py --limit 100 --model-threads 2   # the design table, on GSM8K *train*
    .venv/bin/python benchmarks/bench_verdicts.py --limit 2 --teacher local/qwen2.5-coder-0.5b   # smoke
    .venv/bin/python benchmarks/bench_verdicts.py --report-only     # the table from the journals alone

1. The student (`--student`, default the 0.5B) answers the first `--limit` GSM8K train questions
   with cot, through `instret.evaluation.run.evaluate` into `--out/cot/` (its journal).
2. For each journaled solution, each verdict design of `programs/verdicts.py` (`--designs`)
   judges it from the teacher (`--teacher`, default the 1.5B): once as a whole solution and once
   per step (the solution's `Step n:` lines, else its lines, else its sentences; for an answer
   recovered from its raw reply, that reply's reasoning). One JSON line per (question, design) in
   `--out/verdicts.jsonl`, on disk before the next: interrupted, rerun the same command and only
   what is missing is asked.
3. Per design: the AUROC of the verdict for ranking right solutions above wrong ones (the whole
   solution's verdict, and its step verdicts taken as the least, the mean or the first), a seeded
   95% bootstrap interval, the share judged, the teacher's tokens written / read / read from its
   prompt cache per question, and wall seconds per question. Written with date, machine and model
   files to `--results`, keeping what is written by hand below its notes marker.

Designs are picked from this table for `teacher_check` and `first_error`, never from test
questions. Nothing is asserted; every figure is from this run's journals.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
TRAIN = REPO.parent / "shared" / "data" / "math" / "gsm8k" / "train.jsonl"
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
_HEADER = re.compile(r"^\s*\[\[ ## reasoning ## \]\]\s*")


def steps_of(reasoning: str) -> list[str]:
    """The solution's steps: its `Step n:` lines, else its lines, else its sentences."""
    from instret.lm.steps import split_steps

    steps = split_steps(reasoning)
    if len(steps) == 1:
        steps = [part.strip() for part in _SENTENCE.split(steps[0]) if part.strip()]
    return steps


def solutions(out: Path, student: str) -> list[dict]:
    """The student's journaled cot answers, in question order."""
    path = out / "cot" / "results.jsonl"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if row.get("method") == "cot" and row.get("student") == student:
            rows.append(row)
    return sorted(rows, key=lambda row: row["line"])


def reasoning_of(row: dict) -> str:
    """The solution's steps as the student wrote them: its `reasoning` output, or, for an answer
    the lenient extractor recovered (it keeps only the raw reply), the raw reply's reasoning field."""
    outputs = row.get("outputs") or {}
    if outputs.get("reasoning"):
        return outputs["reasoning"]
    raw = outputs.get("raw") or ""
    return _HEADER.sub("", raw, count=1).split("[[ ## ", 1)[0].strip()


def judge(row: dict, design: str, verdict, teacher) -> dict:
    """One design's verdicts on one solution, with the teacher tokens and seconds they cost."""
    from instret.lm.calls import CallLog, total_prompt_cached

    question = row["inputs"]["question"]
    reasoning = reasoning_of(row)
    answer = row.get("parsed")
    solution = f"{reasoning}\nThe final answer is {answer}." if answer is not None else reasoning
    steps = steps_of(reasoning)
    log = CallLog(teacher=teacher)
    started = time.perf_counter()
    with log.recording():
        if design == "final_answer":
            whole = verdict.solution(question, solution, answer=answer)
        else:
            whole = verdict.solution(question, solution)
        by_step = [verdict.step(question, steps[:i], step) for i, step in enumerate(steps)]
    tokens = log.tokens("teacher")
    return {"key": f"{row['question_id']}|{design}", "question_id": row["question_id"], "line": row["line"],
            "design": design, "correct": bool(row.get("correct")), "solution_verdict": whole,
            "step_verdicts": by_step, "steps": len(steps), "teacher_written": tokens["completion_tokens"],
            "teacher_read": tokens["prompt_tokens"],
            "teacher_cached": total_prompt_cached(log.calls, "teacher"), "seconds": time.perf_counter() - started}


def to_ask(rows: list[dict], designs: list[str], done: dict[str, dict]) -> list[tuple[dict, str]]:
    """The (solution, design) pairs with no verdict yet. A verdict journaled with no steps while the
    solution has some was judged without the solution's text (earlier runs read `reasoning` only):
    it is asked again."""
    def missing(row: dict, design: str) -> bool:
        found = done.get(f"{row['question_id']}|{design}")
        return found is None or (found["steps"] == 0 and bool(steps_of(reasoning_of(row))))

    return [(row, design) for row in rows for design in designs if missing(row, design)]


def least(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def mean(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def first(values: list) -> float | None:
    """The first step's verdict: small models fail mostly at starting (seed paper 3)."""
    return values[0] if values else None


#: How a solution's step verdicts become one score: its weakest step, their mean, its first step.
STEP_SCORES = {"least step": least, "mean step": mean, "first step": first}


def auroc(pairs: list[tuple[float, bool]], rounds: int = 2000, seed: int = 0):
    """AUROC of the score for `correct`, and a seeded 95% bootstrap interval; None if one class is missing."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    scores = np.array([s for s, _ in pairs], dtype=float)
    labels = np.array([c for _, c in pairs], dtype=bool)
    if len(set(labels)) < 2:
        return None, None, None
    rng, found = np.random.default_rng(seed), []
    for _ in range(rounds):
        pick = rng.integers(0, len(labels), len(labels))
        if len(set(labels[pick])) == 2:
            found.append(roc_auc_score(labels[pick], scores[pick]))
    low, high = np.percentile(found, [2.5, 97.5])
    return float(roc_auc_score(labels, scores)), float(low), float(high)


def table(records: list[dict], designs: list[str], answered: int) -> str:
    lines = [("| design | judged | AUROC [95% CI]: whole solution | " + " | ".join(STEP_SCORES) +
              " | teacher written / q | read / q | read from cache / q | seconds / q |"),
             "|---|---:|---|---|---|---|---:|---:|---:|---:|"]
    scores = [lambda r: r["solution_verdict"],
              *(lambda r, f=f: f(r["step_verdicts"]) for f in STEP_SCORES.values())]
    for design in designs:
        rows = [r for r in records if r["design"] == design]
        if not rows:
            continue
        cells = []
        for score_of in scores:
            pairs = [(score_of(r), r["correct"]) for r in rows if score_of(r) is not None]
            value, low, high = auroc(pairs) if pairs else (None, None, None)
            cells.append("—" if value is None else f"{value:.2f} [{low:.2f}, {high:.2f}] (n = {len(pairs)})")
        cached = [r["teacher_cached"] for r in rows]
        n = len(rows)
        cache = "not reported" if None in cached else f"{sum(cached) / n:,.0f}"
        lines.append(f"| {design} | {n} of {answered} | {' | '.join(cells)} | "
                     f"{sum(r['teacher_written'] for r in rows) / n:,.1f} | {sum(r['teacher_read'] for r in rows) / n:,.0f} "
                     f"| {cache} | {sum(r['seconds'] for r in rows) / n:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from bench_domains import kept_notes
    from bench_intervention import machine, model, model_file
    from instret.programs.verdicts import VERDICTS, make_verdict

    from instret.data.files import Journal, atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=100, help="first N GSM8K train questions")
    parser.add_argument("--train", type=Path, default=TRAIN)
    parser.add_argument("--student", default="local/qwen2.5-coder-0.5b")
    parser.add_argument("--teacher", default="local/qwen2.5-coder-1.5b")
    parser.add_argument("--designs", default=",".join(VERDICTS), help=f"from: {', '.join(VERDICTS)}")
    parser.add_argument("--threads", type=int, default=2, help="parallel student questions")
    parser.add_argument("--model-threads", type=int, help="llama.cpp threads of each local model (default: the "
                        "engine's, one per two cores; verdicts are asked one at a time: on a quiet machine, "
                        "the core count)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "verdicts")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "verdicts.md")
    parser.add_argument("--report-only", action="store_true", help="the table from the journals; no model is built")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    designs = [d for d in args.designs.split(",") if d]
    unknown = [d for d in designs if d not in VERDICTS]
    if unknown:
        parser.error(f"--designs: unknown {', '.join(unknown)}; choose from {', '.join(VERDICTS)}")
    journal = Journal(args.out / "verdicts.jsonl", key="key")

    if not args.report_only:
        from instret.programs.methods import make_program
        from tqdm import tqdm

        from instret.data.loaders import load_questions
        from instret.evaluation.run import evaluate

        questions = load_questions(str(args.train)).questions[:args.limit]
        student = model(args.student, "student", args.model_threads)
        started = time.perf_counter()
        report = evaluate(questions, methods={"cot": make_program("cot", None, "numeric")},
                          students={args.student: student}, kind="numeric", out_dir=args.out / "cot",
                          threads=args.threads, progress=not args.no_progress)
        print(f"student cot: {report.answered_now} answered now, {report.answered_before} before, "
              f"{time.perf_counter() - started:.0f} s")
        teacher = model(args.teacher, "teacher", args.model_threads)
        verdicts = {d: make_verdict(d, teacher) for d in designs}
        done = journal.read()
        todo = to_ask(solutions(args.out, args.student)[:args.limit], designs, done)
        bar, judging = tqdm(todo, desc="teacher verdicts", disable=args.no_progress), time.perf_counter()
        for i, (row, design) in enumerate(bar):
            journal.append(judge(row, design, verdicts[design], teacher))
            if i + 1 == 2 * len(designs) and len(todo) > i + 1:  # the projection, once a few are in
                per = (time.perf_counter() - judging) / (i + 1)  # tqdm's clock stops when it is disabled
                print(f"\nprojected: {per:.1f} s per (question, design), {per * len(todo) / 60:.0f} min for all "
                      f"{len(todo)}", flush=True)
        journal.close()

    rows, done = solutions(args.out, args.student), journal.read()
    stale = {f"{row['question_id']}|{design}" for row, design in to_ask(rows, designs, done)}
    records = [r for key, r in done.items() if r["design"] in designs and key not in stale]  # judged on the text
    answered, right = len(rows), sum(1 for r in rows if r.get("correct"))
    text = "\n".join([
        f"# Teacher verdicts on the student's cot solutions ({datetime.date.today()})", "",
        f"Machine: {machine()}.", "",
        f"Models: teacher {model_file(args.teacher)}; student {model_file(args.student)}.", "",
        f"Command: `python benchmarks/bench_verdicts.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
        (f"Questions: the first {answered} of `{args.train.name}` (GSM8K *train*); the student's cot is right on "
        f"{right} of them. AUROC 0.5 is chance; 1.0 ranks every right solution above every wrong one."), "",
        table(records, designs, answered), ""])
    print("\n" + text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results, text + "\n" + kept_notes(args.results))
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
