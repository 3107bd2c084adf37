"""Benchmark an evaluation against a faulty model server: completes, counts exactly, keeps its pace.

    .venv/bin/python benchmarks/bench_faults.py                  # 500 questions, 16 threads
    .venv/bin/python benchmarks/bench_faults.py --questions 100  # a quick run

The server is `tests/helpers/loopback.py`, in this process, standing in for a model server with
`--slots` parallel generation slots that each take `--generation` seconds per answer (as
Ollama's OLLAMA_NUM_PARALLEL or a vLLM batch would). A seeded RNG picks 5% of the questions
for each fault: HTTP 500, timeout (the server holds the connection past the client's timeout)
and malformed answer (prose without fields, generated like any answer). In each group the
first `--persistent` questions fail on every attempt, the others on their first attempt only,
so the number of faults that retries cannot cure is known before the run:

- HTTP 500 / timeout: cured by DSPy's retries (`num_retries`, `retry_backoff` from the spec),
  else the item is recorded as failed (`failed_server_error`, `failed_timeout`);
- malformed: cured by DSPy's JSON-adapter fallback, else by instret's lenient extractor or
  format retry (`instret.lm.recovery`), else the item is a parse failure (`recovered_failed`).

It prints what was injected, what the evaluation reported (its summary, not this script's
bookkeeping), and the throughput of the faulty run as a ratio to a fault-free run of the
same questions measured just before it. Exit status 1 if the reported count is not exact.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the loopback server lives with the tests

TARGET_RATIO = 0.8
FAULTS = ("http500", "timeout", "malformed")
REPORTED_AS = {"http500": "failed_server_error", "timeout": "failed_timeout", "malformed": "recovered_failed"}


@dataclass
class FaultPlan:
    """Which questions get which fault, and on how many attempts; counts attempts as they come."""

    groups: dict[str, list[int]]  # fault → question indices, persistent ones first
    persistent: int
    attempts: dict[tuple[str, int], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def draw(cls, n: int, fraction: float, persistent: int, seed: int) -> "FaultPlan":
        per_fault = round(n * fraction)
        chosen = random.Random(seed).sample(range(n), per_fault * len(FAULTS))
        groups = {fault: chosen[i * per_fault:(i + 1) * per_fault] for i, fault in enumerate(FAULTS)}
        return cls(groups, min(persistent, per_fault))

    def persistent_of(self, fault: str) -> set[int]:
        return set(self.groups[fault][:self.persistent])

    def strikes(self, fault: str, question: int | None) -> bool:
        """Whether this attempt at `question` gets `fault`: every attempt, or only the first."""
        if question is None or question not in self.groups[fault]:
            return False
        with self.lock:
            count = self.attempts[fault, question] = self.attempts.get((fault, question), 0) + 1
        return question in self.persistent_of(fault) or count == 1


def question_index(text: str) -> int | None:
    match = re.search(r"Q(\d{4}):", text)
    return int(match.group(1)) if match else None


def model_answer(question: int) -> float:
    """What the simulated student answers: right, except on every 25th question (96% accuracy)."""
    return float(question + 17 + (question % 25 == 24))


class ModelServer:
    """The loopback responder: `slots` answers at a time, `generation` seconds each; some malformed."""

    def __init__(self, plan: FaultPlan | None, slots: int, generation: float):
        from helpers.loopback import MALFORMED_TEXT, answers

        self.plan, self.generation, self.malformed = plan, generation, MALFORMED_TEXT
        self.slots = threading.BoundedSemaphore(slots)
        self.correct = answers(answer=lambda request: model_answer(question_index(request.user)))

    def __call__(self, request) -> str:
        with self.slots:
            time.sleep(self.generation)
        if self.plan is not None and self.plan.strikes("malformed", question_index(request.user)):
            return self.malformed
        return self.correct(request)


def http_faults(plan: FaultPlan):
    import json

    def fault(record):
        question = question_index(json.dumps(record.body))
        return next((kind for kind in ("http500", "timeout") if plan.strikes(kind, question)), None)

    return fault


def run_eval(questions, plan: FaultPlan | None, args, out_dir: Path) -> dict:
    import dspy
    from helpers.loopback import LoopbackServer

    from instret.evaluation.run import RESULTS, evaluate
    from instret.data.files import Journal
    from instret.lm.models import ModelSpec, make_lm

    from instret.programs import ChainOfThoughtQA

    responder = ModelServer(plan, args.slots, args.generation)
    with LoopbackServer(models=["m"], responder=responder, hang=args.hang,
                        faults=http_faults(plan) if plan else None) as server:
        suffix = "/v1" if args.backend == "openai" else ""
        spec = ModelSpec(f"{args.backend}/m", api_base=server.url + suffix, timeout=args.timeout,
                         num_retries=args.num_retries, retry_backoff=args.backoff, extra={"cache": False})
        started = time.perf_counter()
        report = evaluate(questions, methods={"cot": ChainOfThoughtQA("numeric")}, students={"m": make_lm(spec)}, kind="numeric",
                          out_dir=out_dir, threads=args.threads, progress=False)
        seconds = time.perf_counter() - started
        requests = len(server.requests)
    row = next(r for r in report.summary if "accuracy" in r)
    index = {q.id: i for i, q in enumerate(questions)}
    recovered = {index[r["question_id"]]: r["recovery"] for r in Journal(out_dir / RESULTS, key="key").read().values()}
    return {"seconds": seconds, "report": report, "row": row, "requests": requests, "recovered": recovered,
            "throughput": len(questions) / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--fraction", type=float, default=0.05, help="share of questions per fault kind")
    parser.add_argument("--persistent", type=int, default=5, help="questions per fault kind that fail every attempt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slots", type=int, default=4, help="answers the server generates at once")
    parser.add_argument("--generation", type=float, default=0.1, help="seconds per generated answer")
    parser.add_argument("--timeout", type=float, default=1.0, help="client timeout per attempt (ModelSpec.timeout)")
    parser.add_argument("--num-retries", type=int, default=1, help="DSPy retries (ModelSpec.num_retries)")
    parser.add_argument("--backoff", type=float, default=0.05, help="first retry wait (ModelSpec.retry_backoff)")
    parser.add_argument("--hang", type=float, default=5.0, help="seconds a timeout fault holds the connection")
    parser.add_argument("--backend", choices=("ollama_chat", "openai"), default="ollama_chat")
    args = parser.parse_args(argv)

    from instret import _env  # noqa: F401
    from instret.data.questions import Question

    questions = [Question(text=f"Q{i:04d}: what is {i} + 17?", answer=str(i + 17), source="bench", line=i)
                 for i in range(args.questions)]
    plan = FaultPlan.draw(args.questions, args.fraction, args.persistent, args.seed)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.questions} questions, {args.threads} threads, {args.backend}; server: {args.slots} slots × "
          f"{args.generation}s; client: timeout {args.timeout}s, num_retries {args.num_retries}, "
          f"retry_backoff {args.backoff}s; load average {load:.2f} on {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory() as folder:
        run_eval(questions[:32], None, args, Path(folder) / "warmup")  # imports, connection pools
        clean = run_eval(questions, None, args, Path(folder) / "clean")
        faulty = run_eval(questions, plan, args, Path(folder) / "faulty")

    for name, run in (("fault-free", clean), ("with faults", faulty)):
        report, row = run["report"], run["row"]
        failed = sum(report.failures.values())
        print(f"{name:<12} {row['n']} answered ({row['correct']} correct, {row['parse_failures']} parse failures), "
              f"{failed} failed items, {run['requests']} HTTP requests, {run['seconds']:.2f}s, "
              f"{run['throughput']:.1f} questions/s")

    reported = {"failed_server_error": faulty["report"].failures.get("server_error", 0),
                "failed_timeout": faulty["report"].failures.get("timeout", 0),
                "recovered_failed": faulty["row"].get("recovered_failed", 0)}
    others = {k: v for k, v in faulty["report"].failures.items() if k not in ("server_error", "timeout")}
    print(f"\n{'fault':<10}{'questions':>10}{'transient':>11}{'persistent':>12}   reported as uncured")
    for fault in FAULTS:
        size = len(plan.groups[fault])
        print(f"{fault:<10}{size:>10}{size - plan.persistent:>11}{plan.persistent:>12}   "
              f"{reported[REPORTED_AS[fault]]} ({REPORTED_AS[fault]})")
    expected, got = plan.persistent * len(FAULTS), sum(reported.values()) + sum(others.values())
    exact = not others and all(reported[REPORTED_AS[fault]] == plan.persistent for fault in FAULTS)
    print(f"uncured faults: expected {expected}, reported {got}"
          f"{f' (also {others})' if others else ''}  {'PASS' if exact else 'MISS'}")
    transient = [q for fault in FAULTS for q in plan.groups[fault][plan.persistent:]]
    cured = sum(faulty["recovered"].get(q, "failed") != "failed" for q in transient)
    print(f"transient faults cured by a retry or a fallback: {cured} of {len(transient)}; accuracy "
          f"{clean['row']['accuracy']:.1%} fault-free, {faulty['row']['accuracy']:.1%} with faults")
    ratio = faulty["throughput"] / clean["throughput"]
    print(f"throughput ratio {ratio:.2f} (target ≥ {TARGET_RATIO})  {'PASS' if ratio >= TARGET_RATIO else 'MISS'}")
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at end {end_load:.2f}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
