"""The evidence part of `bench_real_models.py`: accuracy of every answering method on real models.

    .venv/bin/python benchmarks/bench_real_models.py accuracy --gsm8k 100 --svamp 100

Runs what a user runs: the README's main job (`instret corpus build`, local teacher) and then
`instret eval` of every answering method with the local student on the first N GSM8K test and
SVAMP questions, and writes the table to benchmarks/results/real-models.md (date, hardware, model
files). Accuracy with a 95% Wilson interval, paired McNemar against zero-shot and CoT, parse
failures and recovery paths, tokens and wall time all come from that one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "math" / "gsm8k"
SVAMP = REPO.parent / "shared" / "data" / "math" / "svamp" / "SVAMP.json"
ANSWERING = "zero_shot,cot,passage_rag,generic_guide,instruction_retrieval"


def _run(command: list[str], log: Path) -> float:
    """Run one `instret` command as a user would; its output goes to `log`; returns wall seconds."""
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
    if code not in (0,):
        sys.exit(f"{' '.join(command)} exited {code}; see {log}")
    return time.perf_counter() - started


def _hardware() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) / 2**20
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, no GPU"


def _model_line(model: str) -> str:
    from instret.lm.local.catalog import CATALOG

    entry = CATALOG[model.split("/", 1)[1]]
    return f"`{model}` ({entry.description}, {entry.size:,} bytes, sha256 {entry.sha256[:12]}…)"


def accuracy(args) -> None:
    """The README main job with the local teacher, then `instret eval` of every answering method
    with the local student on the first N GSM8K and SVAMP test questions; a markdown table."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus"
    instret = [str(REPO / ".venv" / "bin" / "instret")]
    load_before = os.getloadavg()[0]
    build_s = _run(instret + ["corpus", "build", "--teacher", args.teacher, "--out", str(corpus)], work / "build.log")
    sections, walls = [], {}
    for name, path, n in (("GSM8K test", GSM8K / "test.jsonl", args.gsm8k), ("SVAMP", SVAMP, args.svamp)):
        if not n:
            continue
        out = work / name.split()[0].lower()
        config = ["--config", args.config] if args.config else []
        walls[name] = _run(instret + config + ["eval", "--corpus", str(corpus), "--test", str(path), "--limit", str(n),
                                      "--student", args.student, "--methods", args.methods,
                                      "--threads", str(args.threads), "--out", str(out), "--no-progress"],
                           work / f"eval-{out.name}.log")
        rows = [r for r in json.loads((out / "summary.json").read_text()) if r.get("n")]
        sections.append((name, n, rows, (out / "results.jsonl")))
    lines = [f"# Real small models: instruction retrieval and its baselines",
             "",
             f"Measured {time.strftime('%Y-%m-%d')} by `benchmarks/bench_real_models.py accuracy "
             f"--gsm8k {args.gsm8k} --svamp {args.svamp} --threads {args.threads}"
             + (f" --config {Path(args.config).name}`" if args.config else "`")
             + "; answers are journaled, so a run cut short resumes: the wall times below are this invocation's.",
             f"Hardware: {_hardware()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.",
             f"Teacher {_model_line(args.teacher)}; student {_model_line(args.student)}; both through the embedded "
             "llama.cpp engine (xllamacpp).",
             f"Corpus: the README's main job (`instret corpus build`, the bundled 200 GSM8K training questions), "
             f"{build_s:.0f} s; build log summary below.", ""]
    build_log = (work / "build.log").read_text().strip().splitlines()
    lines += ["```", *[line for line in build_log if line.strip() and "%|" not in line][-12:], "```", ""]
    for name, n, rows, results in sections:
        lines += [f"## {name}, first {n} questions ({walls[name]:.0f} s for all methods)", "",
                  "| method | accuracy [95% CI] | vs zero-shot (p) | vs CoT (p) | parse failures | recovery paths "
                  "| prompt/completion tokens | teacher tokens/q | s/answer |", "|---|---|---|---|---|---|---|---|---|"]
        paths = _recovery_paths(results, questions=n)
        for row in rows:
            versus = [f"{row[f'vs_{b}_diff']:+.1%} ({row[f'vs_{b}_p']:.3f})" if f"vs_{b}_diff" in row else "—"
                      for b in ("zero_shot", "cot")]
            latency = f"{row['mean_latency_s']:.1f}" if row.get("mean_latency_s") is not None else "cached"
            lines.append(f"| {row['method']} | {row['correct']}/{row['n']} = {row['accuracy']:.1%} "
                         f"[{row['ci_low']:.1%}, {row['ci_high']:.1%}] | {versus[0]} | {versus[1]} | "
                         f"{row['parse_failures']} | {paths.get(row['method'], '')} | "
                         f"{row['mean_prompt_tokens']:.0f}/{row['mean_completion_tokens']:.0f} | "
                         f"{row.get('teacher_tokens_per_question', 0):.0f} | {latency} |")
        lines += [f"\nTeacher tokens/q of {row['method']}: the corpus's guides, {row['teacher_setup_tokens']:,} "
                  f"teacher tokens written once, amortised over these {row['n']} questions."
                  for row in rows if row.get("teacher_setup_tokens")]
        lines.append("")
    Path(args.results).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _recovery_paths(results: Path, questions: int) -> dict[str, str]:
    """Recovery paths per method over the first `questions` questions of the file (a folder may
    also hold answers from an earlier, larger run: the summary leaves those out, and so does this)."""
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    first = {qid: None for qid in (row["question_id"] for row in sorted(rows, key=lambda r: r["line"]))}
    kept = set(list(first)[:questions])
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        if row["question_id"] not in kept:
            continue
        paths = counts.setdefault(row["method"], {})
        paths[row["recovery"]] = paths.get(row["recovery"], 0) + 1
    return {method: ", ".join(f"{k} {v}" for k, v in sorted(paths.items(), key=lambda kv: -kv[1]))
            for method, paths in counts.items()}
