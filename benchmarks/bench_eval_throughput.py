"""Benchmark `evaluate` throughput against a loopback OpenAI-compatible student with a fixed latency.

    .venv/bin/python benchmarks/bench_eval_throughput.py                  # 160 questions, 16 threads, 200 ms
    .venv/bin/python benchmarks/bench_eval_throughput.py --repeats 1 --no-profile

Every figure comes from one run of this script, so compare figures with each other (ratios),
not with another machine or another day. Nothing here asserts a timing: the target prints PASS/MISS.

With a server that answers every request after exactly `latency` seconds, `threads` workers can
answer at most threads / latency questions per second (80/s at 16 threads and 200 ms). The
figure is the achieved questions/s of a whole `evaluate` call (answers, journal, summary and
report files) as a ratio to that ideal. Measures:
  1. the headline: the loopback server in its own process (as a real model server is), with
     TCP_NODELAY, so it answers after 200 ms and competes for no lock in this process;
  2. the same evaluation against the server as a thread of this process (sharing its GIL), against
     the stock loopback handler (Nagle's algorithm on), with the journal's fsync skipped
     (diagnostic only), and at 4 threads: each row isolates one suspected cost;
  3. where the time goes: this process's CPU per question, the mean LM call against the 200 ms the
     server waits, the time each answer spends in `Journal.append` (fsync included), the summary
     and report files, and a profile of one question's client-side work by package.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the loopback server lives with the tests
sys.path.insert(0, str(REPO))  # `programs` is a top-level package of the repository

TARGET_RATIO = 0.85
MODEL = "m"


def synthetic_questions(n: int, start: int = 0):
    """Numeric word problems, each with a distinct text (and so a distinct question id)."""
    from instret.data.questions import Question

    questions = []
    for i in range(start, start + n):
        pens, price = 3 + i % 17, 2 + i % 7
        questions.append(Question(text=f"Shop {i} sells pens at ${price} each. Ana buys {pens} pens and pays with "
                                       f"a $100 bill. How many dollars of change does she get?",
                                  answer=str(100 - pens * price)))
    return questions


# ---------------------------------------------------------------- the student server

def serve(latency: float) -> int:
    """`--serve LATENCY`: the loopback server as a process; stops when stdin closes (the parent exits)."""
    from helpers import loopback

    # The stock handler writes headers and body in two sends; with Nagle's algorithm on, the body
    # waits for the client's delayed ACK (~40 ms on Linux) on every keep-alive request. Real model
    # servers (Ollama's Go net/http) set TCP_NODELAY, so the benchmark does too.
    loopback._Handler.disable_nagle_algorithm = True
    with loopback.LoopbackServer(models=(MODEL,), latency=latency, responder=loopback.answers(answer="12")) as server:
        print(f"READY {server.url}", flush=True)
        for _ in sys.stdin:
            pass
    return 0


@contextlib.contextmanager
def server_process(latency: float):
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(latency)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"the loopback server process did not start (said {line!r})")
        yield line.split()[1], None
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def server_thread(latency: float, nodelay: bool):
    from helpers import loopback

    before = loopback._Handler.disable_nagle_algorithm
    loopback._Handler.disable_nagle_algorithm = nodelay
    try:
        with loopback.LoopbackServer(models=(MODEL,), latency=latency,
                                     responder=loopback.answers(answer="12")) as server:
            yield server.url, server
    finally:
        loopback._Handler.disable_nagle_algorithm = before


# ---------------------------------------------------------------- instruments

class LMTimeline:
    """A DSPy callback recording when each LM call started and ended."""

    def __init__(self):
        from dspy.utils.callback import BaseCallback

        timeline = self

        class _Callback(BaseCallback):
            def on_lm_start(self, call_id, instance, inputs):
                timeline.started[call_id] = time.perf_counter()

            def on_lm_end(self, call_id, outputs, exception):
                timeline.calls.append((timeline.started.pop(call_id, float("nan")), time.perf_counter()))

        self.callback = _Callback()
        self.started: dict = {}
        self.calls: list[tuple[float, float]] = []

    def clear(self) -> None:
        self.started.clear()
        self.calls.clear()


@contextlib.contextmanager
def timed_journal_appends(skip_fsync: bool = False):
    """Record how long each `Journal.append` takes (lock wait and fsync included).

    `skip_fsync` replaces the journal module's `os` with one whose fsync does nothing: a
    diagnostic of what fsync costs, never a setting to run an evaluation with.
    """
    import instret.data.files as journal

    durations: list[tuple[float, float]] = []
    original_append, original_os = journal.Journal.append, journal.os

    def append(self, record):
        clock = time.perf_counter()
        try:
            return original_append(self, record)
        finally:
            durations.append((clock, time.perf_counter()))

    class NoFsync:
        def __getattr__(self, name):
            return getattr(original_os, name)

        @staticmethod
        def fsync(fd):
            return None

    journal.Journal.append = append
    if skip_fsync:
        journal.os = NoFsync()
    try:
        yield durations
    finally:
        journal.Journal.append, journal.os = original_append, original_os


# ---------------------------------------------------------------- one evaluation

def run_evaluation(url: str, questions, threads: int, latency: float, timeline: LMTimeline, scratch: Path,
                   label: str, skip_fsync: bool = False, server=None) -> dict:
    from instret.evaluation.run import evaluate
    from instret.lm.models import ModelSpec, make_lm
    from programs.methods import make_program

    student = make_lm(ModelSpec(f"openai/{MODEL}", api_base=url + "/v1", extra={"cache": False, "num_retries": 0}))
    program = make_program("zero_shot", None, "numeric")
    kwargs = {"methods": {"zero_shot": program}, "students": {MODEL: student}, "kind": "numeric",
              "threads": threads, "progress": False}
    # Warm up: imports, the HTTP connection pool (one connection per thread), matplotlib.
    evaluate(synthetic_questions(threads, start=10**6), out_dir=tempfile.mkdtemp(dir=scratch), **kwargs)
    if server is not None:
        server.reset()
    timeline.clear()
    out_dir = tempfile.mkdtemp(dir=scratch)
    with timed_journal_appends(skip_fsync) as appends:
        cpu, clock = time.process_time(), time.perf_counter()
        report = evaluate(questions, out_dir=out_dir, **kwargs)
        wall, cpu = time.perf_counter() - clock, time.process_time() - cpu
    records = [json.loads(line) for line in (Path(out_dir) / "results.jsonl").read_text().splitlines()]
    ideal = threads / latency
    calls = [end - start for start, end in timeline.calls]
    last_answer = max(end for _, end in appends) - clock if appends else float("nan")
    return {"label": label, "n": len(questions), "threads": threads, "wall": wall, "rate": len(questions) / wall,
            "ratio": len(questions) / wall / ideal, "answers_rate": len(questions) / last_answer,
            "after_answers": wall - last_answer, "cpu_per_q": cpu / len(questions),
            "lm_mean": statistics.fmean(calls) if calls else float("nan"),
            "lm_p90": statistics.quantiles(calls, n=10)[-1] if len(calls) > 1 else float("nan"),
            "append_mean": statistics.fmean(end - start for start, end in appends) if appends else float("nan"),
            "answered": report.answered_now, "failures": sum(report.failures.values()),
            "lm_calls": sum(r["lm_calls"] for r in records),
            "server_hits": server.hits["/v1/chat/completions"] if server is not None else None}


# ---------------------------------------------------------------- profile of one question

def profile_one_question(url: str, questions, rounds: int) -> dict:
    """Sequential questions against a zero-latency server: CPU per question and where it goes."""
    import cProfile
    import pstats

    import dspy

    from instret.lm.models import ModelSpec, make_lm
    from instret.lm.recovery import answer_with_recovery
    from instret.data.scoring import score_answer
    from programs.methods import make_program

    student = make_lm(ModelSpec(f"openai/{MODEL}", api_base=url + "/v1", extra={"cache": False, "num_retries": 0}))
    program = make_program("zero_shot", None, "numeric")

    def ask(question):
        with dspy.context(lm=student):
            attempt = answer_with_recovery(program, "numeric", question.text)
        score_answer("numeric", attempt.answer, question.answer)

    for question in questions[:20]:
        ask(question)
    cpu, clock = time.process_time(), time.perf_counter()
    for question in questions[:rounds]:
        ask(question)
    wall, cpu = (time.perf_counter() - clock) / rounds, (time.process_time() - cpu) / rounds

    profiler = cProfile.Profile()
    profiler.enable()
    for question in questions[:rounds]:
        ask(question)
    profiler.disable()
    shares: collections.Counter = collections.Counter()
    for (filename, _, function), (_, _, own_time, _, _) in pstats.Stats(profiler).stats.items():
        shares[package_of(filename, function)] += own_time
    total = sum(shares.values())
    return {"wall": wall, "cpu": cpu, "shares": [(name, seconds / total) for name, seconds in shares.most_common()]}


def package_of(filename: str, function: str) -> str:
    if "site-packages" in filename:
        name = Path(filename.split("site-packages", 1)[1]).parts[1]
        return {"httpcore": "httpx/httpcore/h11", "h11": "httpx/httpcore/h11", "httpx": "httpx/httpcore/h11",
                "pydantic_core": "pydantic"}.get(name, name)
    if filename.startswith(str(REPO)):
        return "instret (this repo)"
    if filename == "~":  # C functions: socket I/O shows here
        return "socket send/recv" if function.startswith(("<method 'recv", "<method 'send")) else "builtins (C)"
    return "python stdlib"


def fsync_append_cost(scratch: Path, appends: int) -> float:
    """Mean seconds of one uncontended `Journal.append` (open, write, flush, fsync) on this disk."""
    from instret.data.files import Journal

    journal = Journal(Path(tempfile.mkdtemp(dir=scratch)) / "results.jsonl", key="key")
    clock = time.perf_counter()
    for n in range(appends):
        journal.append({"key": str(n), "answer": "12", "padding": "x" * 600})
    return (time.perf_counter() - clock) / appends


# ---------------------------------------------------------------- report

def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=160, help="questions per evaluation (default 160)")
    parser.add_argument("--threads", type=int, default=16, help="evaluation threads (default 16)")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency in seconds (default 0.2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds over all configurations, interleaved; medians are reported (default 3)")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-question profile")
    parser.add_argument("--serve", type=float, metavar="LATENCY", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args.serve)
    warnings.filterwarnings("ignore")

    from instret import _env  # noqa: F401  (litellm offline)
    import dspy

    # Every question must reach the server: no answer may come from DSPy's caches.
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    timeline = LMTimeline()
    dspy.configure(callbacks=[timeline.callback])

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    scratch = Path(tempfile.mkdtemp(prefix="instret-bench-eval-"))
    questions = synthetic_questions(args.questions)
    few = max(4, args.threads // 4)
    few_questions = questions[: args.questions * few // args.threads]
    # Each configuration: (label, server factory, threads, questions, skip fsync).
    configurations = [
        ("server process, TCP_NODELAY", lambda: server_process(args.latency), args.threads, questions, False),
        ("server thread here, TCP_NODELAY", lambda: server_thread(args.latency, True), args.threads, questions, False),
        ("server thread here, stock (Nagle)", lambda: server_thread(args.latency, False), args.threads, questions,
         False),
        ("server process, fsync skipped*", lambda: server_process(args.latency), args.threads, questions, True),
        (f"server process, {few} threads", lambda: server_process(args.latency), few, few_questions, False),
    ]
    results: dict[str, list[dict]] = collections.defaultdict(list)
    for _ in range(args.repeats):
        for label, factory, threads, subset, skip_fsync in configurations:
            with factory() as (url, server):
                results[label].append(run_evaluation(url, subset, threads, args.latency, timeline, scratch, label,
                                                     skip_fsync=skip_fsync, server=server))
    dspy.configure(callbacks=[])

    profile = None
    if not args.no_profile:
        with server_process(0.0) as (url, _):
            profile = profile_one_question(url, synthetic_questions(220, start=2 * 10**6), rounds=200)
        with server_thread(0.0, True) as (url, _):
            profile["cpu_with_server"] = profile_one_question(url, synthetic_questions(220, start=3 * 10**6),
                                                              rounds=100)["cpu"]
    append_cost = fsync_append_cost(scratch, 100)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    # ---- report
    from importlib.metadata import version

    def median(label: str, key: str) -> float:
        return statistics.median(run[key] for run in results[label])

    ideal = args.threads / args.latency
    print(f"\ninstret evaluation throughput: {args.questions} synthetic numeric questions, zero_shot, "
          f"openai/{MODEL} over loopback HTTP, {args.threads} threads, server latency {args.latency * 1000:.0f} ms")
    print(f"python {sys.version.split()[0]}, dspy {dspy.__version__}, litellm {version('litellm')}, "
          f"{os.cpu_count()} CPUs; DSPy cache off; {args.repeats} interleaved rounds, medians shown")
    if load_before and load_after:
        print(f"load average (1 min) at start {load_before[0]:.2f}, at end {load_after[0]:.2f}: "
              f"above {os.cpu_count()} means other processes shared the CPUs")
    print(f"ideal: {args.threads} / {args.latency:.3f} s = {ideal:.1f} questions/s\n")

    header = (f"{'configuration':<36}{'wall':>8}{'q/s':>7}{'ratio':>7}{'answers q/s':>12}{'after':>8}"
              f"{'LM call':>9}{'LM p90':>8}{'append':>8}{'CPU/q':>8}")
    print(header)
    print("-" * len(header))
    for label, _, threads, subset, _ in configurations:
        print(f"{label:<36}{median(label, 'wall'):>6.2f} s{median(label, 'rate'):>7.1f}{median(label, 'ratio'):>7.3f}"
              f"{median(label, 'answers_rate'):>12.1f}{median(label, 'after_answers') * 1000:>6.0f}ms"
              f"{median(label, 'lm_mean') * 1000:>7.0f}ms{median(label, 'lm_p90') * 1000:>6.0f}ms"
              f"{median(label, 'append_mean') * 1000:>6.1f}ms{median(label, 'cpu_per_q') * 1000:>6.1f}ms")
    print("-" * len(header))
    print("ratio: achieved q/s over threads/latency for that row's threads. answers q/s: up to the last journaled "
          "answer;\nafter: summary and report files; LM call: mean and p90 from DSPy's callback (the server waits "
          f"{args.latency * 1000:.0f} ms);\nappend: mean time in Journal.append per answer (lock wait + fsync); CPU/q: "
          "this process's CPU per question.\n* fsync skipped is a diagnostic of what fsync costs, not a crash-safe "
          "setting.")
    headline = configurations[0][0]
    rounds = ", ".join(f"{run['ratio']:.3f}" for run in results[headline])
    all_runs = [run for runs in results.values() for run in runs]
    print(f"headline ratio per round: {rounds}; answered {sum(r['answered'] for r in all_runs)}, failures "
          f"{sum(r['failures'] for r in all_runs)}, LM calls per question "
          f"{sum(r['lm_calls'] for r in all_runs) / max(1, sum(r['answered'] for r in all_runs)):.2f}")
    in_process = [r["server_hits"] for r in all_runs if r["server_hits"] is not None]
    if in_process:
        print(f"in-process server requests per evaluation: {sorted(set(in_process))}")

    print(f"\nuncontended Journal.append (open, write, fsync): {append_cost * 1000:.2f} ms")
    if profile is not None:
        core_share = profile["cpu"] * ideal
        print(f"one question at a time, zero-latency server in its own process: {profile['wall'] * 1000:.1f} ms wall, "
              f"{profile['cpu'] * 1000:.1f} ms CPU in this process")
        print(f"  with the server as a thread here: {profile['cpu_with_server'] * 1000:.1f} ms CPU per question "
              f"(client + server)")
        print(f"  at the ideal {ideal:.0f} q/s the client alone needs {core_share:.0%} of one core, all of it under "
              f"the GIL except socket waits")
        print("  profiled own time by package: " + ", ".join(f"{name} {share:.0%}" for name, share in
                                                           profile["shares"] if share >= 0.02))

    ratio = median(headline, "ratio")
    target = f">= {TARGET_RATIO}"
    print(f"\n{'target':<40}{'measured':>10}{'target':>10}  result")
    print("-" * 68)
    print(f"{'q/s ratio to ideal, ' + str(args.threads) + ' threads':<40}{ratio:>10.3f}{target:>10}  "
          f"{verdict(ratio >= TARGET_RATIO)}")

    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
