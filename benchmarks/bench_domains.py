"""Instruction retrieval where knowledge, not arithmetic, is missing: MedQA and MMLU professional
law, with the 0.5B and the 1.5B as students (issue 25).

    .venv/bin/python benchmarks/bench_domains.py build --guides 20           # both corpora; the 1.5B writes the guides
    .venv/bin/python benchmarks/bench_domains.py answer --limit 5 --threads 1 # timing probe, and the projected total
    .venv/bin/python benchmarks/bench_domains.py answer --limit 100           # the run (resumes)
    .venv/bin/python benchmarks/bench_domains.py report --results benchmarks/results/domains.md

build: `instret corpus build` as a user runs it, with `local/qwen2.5-coder-1.5b` as teacher, into
`--out/<domain>/corpus`. MedQA: its dev split is the corpus (training questions), its test split
is evaluated. MMLU professional law has no training split: the corpus is built from half of its
test file (`--holdout-fraction 0.5`) and the other half, recorded in the manifest, is evaluated;
the leakage guard refuses any corpus question. The build prints its teacher cost before calling
the teacher, journals each guide (a rerun writes only the missing ones) and its wall time goes to
`--out/<domain>/build.json`.

answer: the first `--limit` test questions of each domain (for law, of the held-out half), with
the methods of `PLAN` for each student, into `--out/<domain>/results.jsonl` (one line per answer,
resumable after any interruption with the same command). With the 1.5B as student it answers from
guides it wrote itself as teacher: the weaker case of the paper's setting, where the teacher is
larger than the student. Prints seconds per answer for each (domain, student, method) and the
projected time for the rest of the `--target` questions.

report: from the journals alone: per domain, accuracy [95% Wilson CI], paired exact McNemar
against zero_shot and cot, the teacher's tokens per question (the guides' tokens amortised over the
questions answered), parse failures and recoveries, seconds per answer; then the size table, cot
against instruction retrieval by domain and student, with the seed paper's gains beside them.
Nothing is asserted; every figure is from the journals.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
DATA = REPO.parent / "shared" / "data"
TEACHER, SMALL, LARGE = "local/qwen2.5-coder-1.5b", "local/qwen2.5-coder-0.5b", "local/qwen2.5-coder-1.5b"


@dataclass(frozen=True)
class Domain:
    train: Path
    test: Path
    subject: str  # told to the teacher: `corpus build --domain`
    holdout: float | None = None  # the fraction of `train` held out for evaluation (no training split)


DOMAINS = {
    "medqa": Domain(DATA / "medicine" / "medqa_us_4opt" / "phrases_no_exclude_dev.jsonl",
                    DATA / "medicine" / "medqa_us_4opt" / "phrases_no_exclude_test.jsonl", "medicine"),
    "law": Domain(DATA / "law" / "mmlu_law" / "professional_law_test.csv",
                  DATA / "law" / "mmlu_law" / "professional_law_test.csv", "law", holdout=0.5),
}
#: student -> methods. The 1.5B runs the two the size table needs (and the reply handoff).
PLAN = {SMALL: ["zero_shot", "cot", "generic_guide", "instruction_retrieval", "instruction_retrieval@reply"],
        LARGE: ["cot", "instruction_retrieval", "instruction_retrieval@reply"]}
#: The seed paper's gains of instruction retrieval over its baseline, students of 3B and more.
SEED_GAINS = {"medqa": "+9.4", "law": "+7.9", "gsm8k": "+5.1 (math)", "svamp": "+5.1 (math)"}
#: Math for the size table: the real-models benchmark's committed journals (the 0.5B student).
MATH = {name: REPO / "benchmarks" / "results" / "real-models" / name for name in ("gsm8k", "svamp")}
RUNS = "runs.jsonl"  # per domain: one line per `answer` invocation and student


def build(name: str, args, record: bool = True) -> None:
    """`instret corpus build` for `name`; `record`: write its wall time to build.json (a rerun that
    only restores the store from the committed guides is not the build's time)."""
    domain, folder = DOMAINS[name], args.out / name / "corpus"
    command = [sys.executable, "-c", "import sys; from instret.cli.main import main; sys.exit(main())"]
    if args.model_threads:  # the teacher is the only model running: give it the cores
        config = Path(tempfile.mkdtemp()) / "teacher-threads.toml"
        config.write_text(f'[teacher]\nmodel = "{args.teacher}"\nextra = {{n_threads = {args.model_threads}}}\n')
        command += ["--config", str(config)]
    command += ["corpus", "build", "--train", str(domain.train), "--domain", domain.subject, "--out", str(folder),
               "--teacher", args.teacher, "--guides", str(args.guides)]
    command += ["--holdout-fraction", str(domain.holdout)] if domain.holdout else []
    command += ["--no-progress"] if args.no_progress else []
    print("$ instret", " ".join(command[3:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    if not record:
        return
    record = {"guides": args.guides, "teacher": args.teacher, "model_threads": args.model_threads or "default",
              "seconds": round(time.perf_counter() - started, 1),
              "date": str(datetime.date.today())}
    (args.out / name / "build.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def test_questions(name: str, corpus, limit: int | None):
    from instret.data.loaders import load_questions
    from instret.evaluation.run import held_out_questions

    questions = load_questions(str(DOMAINS[name].test)).questions
    if DOMAINS[name].holdout:
        questions = held_out_questions(questions, corpus)
    return questions[:limit]


def answer(name: str, args) -> None:
    from bench_intervention import model

    from instret.corpus.corpus import Corpus
    from instret.evaluation.run import evaluate
    from instret.evaluation.setup_cost import setup_costs
    from instret.programs.methods import make_program

    if not (args.out / name / "corpus" / "chroma").exists():
        # The store and the embedding cache are not committed (benchmarks/results/.gitignore), the
        # guides are: the build re-embeds the questions (about a minute) and asks the teacher nothing.
        build(name, args, record=False)
    corpus = Corpus.open(args.out / name / "corpus")
    questions = test_questions(name, corpus, args.limit)
    for student, methods in PLAN.items():
        programs = {m: make_program(m, corpus, "choice", k=args.k) for m in methods}
        started = time.perf_counter()
        students = {student: model(student, "student", args.model_threads)}
        report = evaluate(questions, methods=programs, students=students, kind="choice",
                          out_dir=args.out / name, threads=args.threads, corpus=corpus,
                          setup=setup_costs(methods, corpus), progress=not args.no_progress)
        wall = time.perf_counter() - started
        print(f"{name}, {student}: {report.answered_now} answers now, {report.answered_before} before, "
              f"{wall:.0f} s" + (f"; failed: {report.failures}" if report.failures else ""))
        if report.answered_now:
            log_run(args.out / name, {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                                      "student": student, "answers": report.answered_now, "wall_s": round(wall, 1),
                                      "threads": args.threads, "model_threads": args.model_threads or "default"})


def log_run(folder: Path, run: dict) -> None:
    """One line per invocation and student: an answer's latency overlaps others' when several are in
    flight, so only the invocation's wall time gives the throughput a projection needs."""
    from instret.data.files import Journal

    journal = Journal(folder / RUNS, key="run")
    journal.append({"run": f"{run['date']}|{run['student']}", **run})
    journal.close()


def runs(folder: Path) -> list[dict]:
    from instret.data.files import Journal

    return list(Journal(folder / RUNS, key="run").read().values())


def journal(name: str, out: Path) -> list[dict]:
    from instret.data.files import Journal
    from instret.evaluation.run import RESULTS

    path = out / name / RESULTS
    return list(Journal(path, key="key").read().values()) if path.exists() else []


def projection(records_by_domain: dict[str, list[dict]], target: int, out: Path | None = None) -> list[str]:
    """Seconds per answer for each (domain, student, method), and the time the missing answers take."""
    lines, total = ["| domain | student | method | answered | seconds / answer | projected for the rest |",
                    "|---|---|---|---:|---:|---:|"], 0.0
    for name, records in records_by_domain.items():
        for student, methods in PLAN.items():
            for method in methods:
                rows = [r for r in records if r["student"] == student and r["method"] == method]
                timed = [r["latency_s"] for r in rows if not r.get("cached")]
                if not timed:
                    lines.append(f"| {name} | {student} | {method} | {len(rows)} | — | — |")
                    continue
                rest = max(0, target - len(rows)) * sum(timed) / len(timed)
                total += rest
                lines.append(f"| {name} | {student} | {method} | {len(rows)} | {sum(timed) / len(timed):.1f} | "
                             f"{rest / 60:.0f} min |")
    return lines + ["", f"Projected for the rest of {target} questions each: {total / 3600:.1f} h "
                        f"({total / 60:.0f} min) of model time (at the seconds per answer above; 2 cores)."] + \
        throughput(records_by_domain, target, out)


def throughput(records_by_domain: dict[str, list[dict]], target: int, out: Path | None) -> list[str]:
    """The projection again at each student's measured throughput: wall seconds per answer of its
    latest run with several answers in flight (the latencies above overlap there, so they overstate)."""
    lines, total = [], 0.0
    for name, records in records_by_domain.items():
        batched = [r for r in runs(out / name) if r["threads"] > 1] if out else []
        for student, methods in PLAN.items():
            latest = [r for r in batched if r["student"] == student][-1:]
            if not latest:
                return []
            missing = sum(max(0, target - sum(r["student"] == student and r["method"] == m for r in records))
                          for m in methods)
            run = latest[0]
            total += missing * run["wall_s"] / run["answers"]
            lines.append(f"- {name}, {student}: {run['wall_s'] / run['answers']:.1f} s per answer over "
                         f"{run['answers']} answers ({run['threads']} in flight, model threads {run['model_threads']}, "
                         f"{run['date'][:10]}); {missing} to go")
    return ["", "At the measured throughput of each student's latest run with several answers in flight:", "",
            *lines, "", f"Projected for the rest: {total / 3600:.1f} h ({total / 60:.0f} min) of model time."]


def domain_table(rows: list[dict]) -> list[str]:
    """One domain's methods × students, from `summarize`'s rows."""
    order = {m: i for i, m in enumerate(dict.fromkeys(PLAN[SMALL] + PLAN[LARGE]))}
    lines = ["| student | method | n | accuracy [95% CI] | vs zero_shot (p) | vs cot (p) | teacher tokens/q "
             "| parse failures | recovered | s / answer |", "|---|---|---:|---|---|---|---:|---:|---:|---:|"]
    for row in sorted(rows, key=lambda r: (r["student"], order.get(r["method"], 99))):
        recovered = sum(v for k, v in row.items() if k.startswith("recovered_") and k != "recovered_direct")
        latency = row.get("mean_latency_s")
        lines.append(f"| {row['student']} | {row['method']} | {row['n']} | {row['accuracy']:.1%} "
                     f"[{row['ci_low']:.1%}, {row['ci_high']:.1%}] | {_versus(row, 'zero_shot')} | "
                     f"{_versus(row, 'cot')} | {row['teacher_tokens_per_question']:.0f} | {row['parse_failures']} | "
                     f"{recovered} | {'—' if latency is None else f'{latency:.1f}'} |")
    return lines


def _versus(row: dict, baseline: str) -> str:
    diff = row.get(f"vs_{baseline}_diff")
    return "—" if diff is None else f"{diff:+.1%} (p={row[f'vs_{baseline}_p']:.3f})"


def size_table(rows_by_domain: dict[str, list[dict]]) -> list[str]:
    """cot against instruction retrieval, by domain and student size, with the seed's gains."""
    lines = ["| domain | student | cot | instruction_retrieval | difference (McNemar p) | @reply | seed gain (≥3B) |",
             "|---|---|---:|---:|---|---:|---:|"]
    for name, rows in rows_by_domain.items():
        for student in PLAN:
            by = {r["method"]: r for r in rows if r["student"] == student}
            if "cot" not in by or "instruction_retrieval" not in by:
                continue
            guided, reply = by["instruction_retrieval"], by.get("instruction_retrieval@reply")
            replied = "—" if reply is None else f"{reply['accuracy']:.1%}"
            lines.append(f"| {name} | {student} | {by['cot']['accuracy']:.1%} | {guided['accuracy']:.1%} | "
                         f"{_versus(guided, 'cot')} | {replied} | {SEED_GAINS.get(name, '—')} |")
    return lines


def report(args) -> str:
    from bench_intervention import machine, model_file

    from instret.corpus.corpus import Corpus
    from instret.evaluation.report import summarize
    from instret.evaluation.setup_cost import setup_costs

    records = {name: journal(name, args.out) for name in args.domains}
    sections, rows_by_domain = [], {}
    for name, folder in MATH.items():
        rows_by_domain[name] = [r for r in summarize(journal(name, folder.parent)) if "accuracy" in r]
    for name, answers in records.items():
        folder = args.out / name / "corpus"
        corpus = Corpus.open(folder) if (folder / "manifest.json").exists() else None
        methods = sorted({r["method"] for r in answers})
        rows = [r for r in summarize(answers, setup=setup_costs(methods, corpus)) if "accuracy" in r]
        rows_by_domain[name] = rows
        built, guides = args.out / name / "build.json", written_guides(folder)
        sections += [f"## {name}", "", f"Corpus: {_built(built, corpus)}", "", *domain_table(rows), "",
                     *guide_sample(guides), *guide_use(answers, guides), ""]
    return "\n".join([
        f"# Instruction retrieval by domain and student size ({datetime.date.today()})", "",
        f"Machine: {machine()}.", "",
        "Models: " + "; ".join(model_file(m) for m in dict.fromkeys([TEACHER, SMALL, LARGE])) + ".", "",
        "Command: `python benchmarks/bench_domains.py report`", "",
        "## Size table", "", *size_table(rows_by_domain), "",
        "With the 1.5B as student, the guides are its own (it was also the teacher): the weaker case. "
        "Math: the first 100 questions of each set, from `bench_real_models.py`'s journals (its own corpus).", "",
        *sections, "## Time", "", *projection(records, args.target, args.out), ""])


def written_guides(folder: Path) -> dict[str, dict]:
    """guide id -> guide, from the committed guide journal (the Chroma store is derived and may
    not be there yet)."""
    from instret.corpus.manifest import JOURNAL
    from instret.data.files import Journal

    path = folder / JOURNAL
    return {key: record["guide"] for key, record in Journal(path, key="guide_id").read().items()} \
        if path.exists() else {}


def guide_sample(guides: dict[str, dict], n: int = 3) -> list[str]:
    """The first `n` guides' titles and backgrounds, to read their quality beside the numbers."""
    first = list(guides.values())[:n]
    return [f"Guides, the first {len(first)} of {len(guides)} (title: background):", ""] + [
        f"- *{guide['title']}*: {guide['background'][:300]}" for guide in first] + [""] if guides else []


def guide_use(records: list[dict], guides: dict[str, dict]) -> list[str]:
    """Does retrieval tell questions apart, and does the reply use the guide? Per guided (student,
    method): how many distinct guides came first, the first's mean similarity, and the share of
    replies that repeat a 4-word run of a retrieved guide the question does not contain (for
    @reply, after the prefilled opening, which restates the guide by construction)."""
    from instret.programs.answering import GUIDE_OPENING_END

    lines = ["Retrieval and use: answers given no guide (none similar enough), distinct guides retrieved first, "
             "the first's mean similarity to the question, and the share of replies repeating 4 words in a row of a "
             "retrieved guide that the question lacks.", "",
             "| student | method | answers | no guide | distinct first guides | first guide's similarity "
             "| replies using a guide |", "|---|---|---:|---:|---:|---:|---:|"]
    retrieved = retrievals(records)
    for student, methods in PLAN.items():
        for method in (m for m in methods if m.startswith("instruction_retrieval")):
            rows = [r for r in records if r["student"] == student and r["method"] == method and r.get("outputs")]
            if not rows:
                continue
            firsts, scores, used, none = set(), [], 0, 0
            for row in rows:
                ids, similarity = retrieved.get(row["question_id"], ([], []))
                firsts.update(ids[:1])
                none += not ids
                scores += [float(similarity[0])] if similarity else []
                outputs = row["outputs"]
                reply = (outputs.get("reasoning") or outputs.get("raw") or "").rpartition(GUIDE_OPENING_END)[2]
                guide_runs = set().union(*(_runs(_guide_text(guides.get(i))) for i in ids)) if ids else set()
                used += bool((guide_runs - _runs(json.dumps(row.get("inputs", {})))) & _runs(reply))
            mean = f"{sum(scores) / len(scores):.2f}" if scores else "—"
            lines.append(f"| {student} | {method} | {len(rows)} | {none} | {len(firsts)} of {len(guides)} | {mean} | "
                         f"{used / len(rows):.0%} |")
    return lines if len(lines) > 4 else []


def retrievals(records: list[dict]) -> dict[str, tuple[list, list]]:
    """question id -> (guide ids, similarities). Retrieval depends on the question and the corpus
    only, so any answer to a question that kept them speaks for all: an answer recovered from its
    raw text (lenient_extract, truncated) lost its program's outputs, the retrieval's among them."""
    found = {}
    for row in records:
        outputs = row.get("outputs") or {}
        if "reference_ids" in outputs and row["question_id"] not in found:
            found[row["question_id"]] = tuple(_listed(outputs.get(k)) for k in ("reference_ids", "reference_scores"))
    return found


def _listed(value) -> list:
    """A journaled list; journals written before instret kept lists as lists hold its text."""
    return ast.literal_eval(value) if isinstance(value, str) and value.startswith("[") else list(value or [])


def _guide_text(guide: dict | None) -> str:
    return "" if guide is None else " ".join([guide.get("background", ""), *guide.get("procedure", [])])


def _runs(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _built(path: Path, corpus) -> str:
    if corpus is None:
        return "not built yet"
    record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    writing = corpus.manifest.guide_writing or {}
    return (f"{writing.get('guides', '?')} guides by {record.get('teacher', TEACHER)}, "
            f"{writing.get('prompt_tokens', 0):,} prompt + {writing.get('completion_tokens', 0):,} written teacher "
            f"tokens" + (f", {record['seconds'] / 60:.0f} min" if record.get("seconds") else ""))


#: In the results file, what follows this line is written by hand: the report keeps it.
NOTES = "<!-- Written by hand below this line; `report` keeps it. -->"


def kept_notes(path: Path) -> str:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return NOTES + text.partition(NOTES)[2] if NOTES in text else f"\n{NOTES}\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("build", "answer", "report"))
    parser.add_argument("--domains", default="medqa,law", type=lambda s: s.split(","), help=f"from {', '.join(DOMAINS)}")
    parser.add_argument("--guides", type=int, default=20, help="build: guides per domain (teacher requests)")
    parser.add_argument("--teacher", default=TEACHER)
    parser.add_argument("--limit", type=int, default=100, help="answer: the first N test questions of each domain")
    parser.add_argument("--target", type=int, default=100, help="the questions per domain the projection is for")
    parser.add_argument("--k", type=int, default=2, help="guides retrieved per question")
    parser.add_argument("--threads", type=int, default=4, help="answer: answers in flight")
    parser.add_argument("--model-threads", type=int, help="llama.cpp threads of the model running (default: the "
                        "engine's, one per two cores); on a machine kept quiet for this run, the core count")
    # The journals and corpora live under benchmarks/results and are committed: the run takes
    # longer than a working session on 2 cores, and the next session resumes it.
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "domains")
    parser.add_argument("--results", type=Path, help="report: also write the markdown here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    unknown = set(args.domains) - set(DOMAINS)
    if unknown:
        parser.error(f"unknown domain(s) {', '.join(sorted(unknown))}; choose from {', '.join(DOMAINS)}")
    for name in args.domains if args.stage != "report" else []:
        (args.out / name).mkdir(parents=True, exist_ok=True)
        build(name, args) if args.stage == "build" else answer(name, args)
    if args.stage == "answer":
        print("\n".join(projection({name: journal(name, args.out) for name in args.domains}, args.target, args.out)))
    if args.stage == "report":
        text = report(args)
        print(text)
        if args.results:
            from instret.data.files import atomic_write_text

            atomic_write_text(args.results, text + "\n" + kept_notes(args.results))
            print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
