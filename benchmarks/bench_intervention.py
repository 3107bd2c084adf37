"""Right-time teacher intervention on real local models: accuracy against the teacher tokens it costs.

    .venv/bin/python benchmarks/bench_intervention.py --limit 100 --results benchmarks/results/intervention.md
    .venv/bin/python benchmarks/bench_intervention.py --limit 2          # smoke run: does every method run?

On 2 cores each model runs on one llama.cpp thread, so both fit side by side. Methods that use one
model only run about twice as fast with that model on both cores; the answers journal lets a run
go in phases into the same `--out` (the last, full command only reads the journal and prints):
    ... --methods cot,quest_cot --student-threads 2
    ... --methods teacher_cot --teacher-threads 2
    ... --methods first_step,on_uncertainty
    ... --results benchmarks/results/intervention.md

Teacher `local/qwen2.5-coder-1.5b`, student `local/qwen2.5-coder-0.5b` (`--student`; `--students a,b`
for more, e.g. the 270M base if it follows the format), both in-process llama.cpp servers. Data:
the first `--limit` questions of the GSM8K test file and of SVAMP (`../shared/data/math`). Methods:
cot, quest_cot, first_step@k for each `--teacher-steps`, on_uncertainty@τ for each `--thresholds`,
teacher_cot. Each data set is one `evaluate` run into `--out/<data set>/` (results.jsonl with per-role
tokens, summary.json, accuracy.png and teacher_cost.png: accuracy against teacher tokens per
question, one point per method); interrupted, rerun the same command and only what is missing is asked.

Prints per data set and student: accuracy [95% Wilson CI], the paired difference to cot with its
exact McNemar p, teacher tokens per question and the teacher's share of all tokens, and the seed
paper's claim as measured here: the part of the cot → teacher_cot gap that first_step closes, for
what part of teacher_cot's teacher tokens. Nothing is asserted; every figure is from this run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `programs` and `signatures` are top-level packages of the repository
DATA = REPO.parent / "shared" / "data" / "math"
DATASETS = {"gsm8k": DATA / "gsm8k" / "test.jsonl", "svamp": DATA / "svamp" / "SVAMP.json"}


def methods(args) -> list[str]:
    """Every method and variant the run compares, in table order; `--methods` keeps some."""
    names = (["cot", "quest_cot"] + [f"first_step@{k}" for k in args.teacher_steps]
             + [f"on_uncertainty@{t:g}" for t in args.thresholds] + ["teacher_cot"])
    keep = set(args.methods.split(",")) if args.methods else None
    return [name for name in names if keep is None or name.split("@")[0] in keep]


def run_dataset(name: str, path: Path, args, teacher, students: dict) -> list[dict]:
    from instret.data.loaders import load_questions
    from instret.evaluation.run import evaluate
    from instret.programs.answering import make_program

    questions = load_questions(str(path)).questions[:args.limit]
    names = methods(args)
    programs = {m: make_program(m, None, "numeric", teacher=teacher, max_interventions=args.max_interventions,
                                handoff=args.handoff) for m in names}
    started = time.perf_counter()
    report = evaluate(questions, methods=programs, students=students, kind="numeric", out_dir=args.out / name,
                      threads=args.threads, teacher=teacher, progress=not args.no_progress)
    seconds = time.perf_counter() - started
    rows = with_teacher_split([row for row in report.summary if "accuracy" in row], args.out / name, questions)
    print(f"\n## {name}: first {len(questions)} questions of {path.name}; {report.answered_now} answers now, "
          f"{report.answered_before} from an earlier run, {seconds:.0f} s")
    if report.failures:
        print(f"failed items (rerun to ask them again): {report.failures}")
    print(table(rows, names))
    print(claim(rows))
    print(f"chart: {args.out / name / 'teacher_cost.png'}")
    return rows


def with_teacher_split(rows: list[dict], out: Path, questions) -> list[dict]:
    """Each summary row plus the teacher's tokens per question split into prompt (read) and
    completion (written) from results.jsonl: generating is several times slower than reading
    on a local model, and the seed paper counts what the teacher writes."""
    import json

    ids = {q.id for q in questions}
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        mine = [r for r in records if r["method"] == row["method"] and r["student"] == row["student"]
                and r["question_id"] in ids]
        for part in ("prompt", "completion"):
            tokens = sum(r.get(f"teacher_{part}_tokens", 0) for r in mine)
            row[f"teacher_{part}_per_question"] = tokens / max(1, len(mine))
    return rows


def table(rows: list[dict], order: list[str]) -> str:
    lines = ["| method | student | n | accuracy [95% CI] | vs cot (McNemar p) | teacher tokens/q (read + written) "
             "| teacher share |", "|---|---|---:|---|---|---:|---:|"]
    rank = {name: i for i, name in enumerate(order)}
    for row in sorted(rows, key=lambda r: (r["student"], rank.get(r["method"], len(rank)))):
        versus = (f"{row['vs_cot_diff']:+.1%} (p={row['vs_cot_p']:.3f})" if "vs_cot_diff" in row else "—")
        lines.append(f"| {row['method']} | {row['student']} | {row['n']} | {row['accuracy']:.1%} "
                     f"[{row['ci_low']:.1%}, {row['ci_high']:.1%}] | {versus} | "
                     f"{row.get('teacher_tokens_per_question', 0):.0f} ({row['teacher_prompt_per_question']:.0f} + "
                     f"{row['teacher_completion_per_question']:.0f}) | {row.get('teacher_share', 0):.1%} |")
    return "\n".join(lines)


def claim(rows: list[dict]) -> str:
    """First-Step Advantage's claim, per student: first_step closes much of the cot → teacher_cot
    gap for a small share of the teacher's tokens."""
    lines = []
    for student in sorted({r["student"] for r in rows}):
        by_method = {r["method"]: r for r in rows if r["student"] == student}
        cot, ceiling = by_method.get("cot"), by_method.get("teacher_cot")
        if not cot or not ceiling:
            continue
        gap = ceiling["accuracy"] - cot["accuracy"]
        for method in sorted(m for m in by_method if m.startswith(("first_step", "on_uncertainty"))):
            row = by_method[method]
            closed = f"{(row['accuracy'] - cot['accuracy']) / gap:.0%} of the gap" if gap > 0 else "no gap to close"
            cost, written = (row[key] / ceiling[key] if ceiling.get(key) else float("nan")
                             for key in ("teacher_tokens_per_question", "teacher_completion_per_question"))
            lines.append(f"{student} {method}: {row['accuracy']:.1%} between cot {cot['accuracy']:.1%} and "
                         f"teacher_cot {ceiling['accuracy']:.1%} ({closed}), for {cost:.0%} of teacher_cot's "
                         f"teacher tokens per question ({written:.0%} of those it writes)")
    return "\n".join(lines)


def model(text: str, role: str, threads: int | None = None):
    """`MODEL` or `MODEL@API_BASE` (an OpenAI-compatible or Ollama server) as a `dspy.LM`, with
    its role's default `max_tokens` as `instret eval` gives it; `threads`: a local model's
    llama.cpp threads (default: the engine's, one per two cores)."""
    from instret.lm.models import make_lm
    from instret.lm.spec import as_spec, with_role_cap

    name, _, api_base = text.partition("@")
    extra = {"n_threads": threads} if threads else {}
    return make_lm(with_role_cap(as_spec(name, api_base=api_base or None, extra=extra), role))


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (f"{platform.platform()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"load average {load[0]:.2f} at the end")


def model_file(model: str) -> str:
    """The catalog's file and sha256 for a `local/<name>` model string, else the string itself."""
    try:
        from instret.lm.catalog import entry

        item = entry(model.removeprefix("local/"))
        return f"`{model}`: {item.description}, {item.size:,} bytes, sha256 {item.sha256}"
    except Exception:  # a path, a server model, or a catalog without this name
        return f"`{model}`"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=100, help="first N questions of each data set")
    parser.add_argument("--datasets", default="gsm8k,svamp", help=f"from: {', '.join(DATASETS)}")
    parser.add_argument("--teacher", default="local/qwen2.5-coder-1.5b", help="MODEL or MODEL@API_BASE")
    parser.add_argument("--student", default="local/qwen2.5-coder-0.5b", help="MODEL or MODEL@API_BASE")
    parser.add_argument("--students", help="comma-separated students instead of --student")
    parser.add_argument("--teacher-steps", default="1,2", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--thresholds", default="0.5,0.7,0.9", type=lambda s: [float(v) for v in s.split(",")])
    parser.add_argument("--max-interventions", type=int, default=3)
    parser.add_argument("--methods", help="comma-separated method names to run (default: all)")
    parser.add_argument("--handoff", choices=("reply", "prompt"), default="reply",
                        help="first_step, on_uncertainty: steps a model did not write start its reply, or go in "
                             "its prompt")
    parser.add_argument("--threads", type=int, default=4, help="parallel questions (the local servers batch them)")
    parser.add_argument("--teacher-threads", type=int, help="the local teacher's llama.cpp threads (default: the "
                        "engine's); give it every core only when no student method runs beside it")
    parser.add_argument("--student-threads", type=int, help="the local student's llama.cpp threads, likewise")
    # The answers journal lives under benchmarks/results and is committed: a 100 + 100 run takes
    # longer than one working session on 2 cores, and the next session resumes it.
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "intervention")
    parser.add_argument("--results", type=Path, help="also write the tables as markdown here, with date and machine")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    teacher = model(args.teacher, "teacher", args.teacher_threads)
    names = args.students.split(",") if args.students else [args.student]
    students = {name.partition("@")[0]: model(name, "student", args.student_threads) for name in names}
    print(f"teacher {args.teacher}; students {', '.join(names)}; methods "
          f"{', '.join(methods(args))}")
    sections = []
    for name in args.datasets.split(","):
        rows = run_dataset(name, DATASETS[name], args, teacher, students)
        sections += [f"## {name} (first {args.limit})", "", table(rows, methods(args)),
                     "", claim(rows), ""]
    report = [f"# Teacher intervention on local models ({datetime.date.today()})", "",
              f"Machine: {machine()}.", "",
              "Models: " + "; ".join(model_file(m.partition("@")[0]) for m in [args.teacher, *names]) + ".",
              "", f"Command: `python benchmarks/bench_intervention.py {' '.join(argv or sys.argv[1:])}`", "", *sections]
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text("\n".join(report) + "\n", encoding="utf-8")
        print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
