"""Real small models through instret's embedded llama.cpp engine: the engine's part.

    .venv/bin/python benchmarks/bench_real_models.py engine                  # 8 GSM8K questions, CoT, the 0.5B
    .venv/bin/python benchmarks/bench_real_models.py engine --questions 16 --max-tokens 256
    .venv/bin/python benchmarks/bench_real_models.py guides                  # prompt tokens processed vs sent
    .venv/bin/python benchmarks/bench_real_models.py threads                 # 1 vs 2 llama.cpp threads, busy neighbour

Every figure comes from one run; read them as ratios against each other, on a quiet machine (the
load average is printed at the start and end). Each phase gets a freshly started server (start-up
not timed), so no phase inherits another's prompt cache. Targets are printed PASS/MISS, not asserted.

engine:
  1. instret's overhead: `evaluate` (CoT, 4 threads) against the same server vs the very requests it
     sent (recorded at the engine, serialized by DSPy's own lm15 dialect) posted straight to the server
     from 4 threads; questions/s ratio, target >= 0.9.
  2. batching: `evaluate` at 4 threads (4 slots) vs 1 thread; questions/s ratio, target >= 1.4.
  3. prompt tokens sent vs actually processed (the rest came from the slots' prompt cache).
guides: GuideWriter on groups of GSM8K training questions, 4 at a time: prompt tokens sent vs processed.
threads: with all cores, half of them, and half for single tokens but all for batches; alone and
  beside a busy process: one request's prompt and generation tokens/s, and 4 slots decoding together.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GSM8K = REPO.parent / "shared" / "data" / "math" / "gsm8k"
OVERHEAD_TARGET, BATCHING_TARGET = 0.9, 1.4


def load(path: Path, n: int):
    from instret.data.loaders import load_questions

    return load_questions(str(path)).questions[:n]


def fresh_server(model: str, n_parallel: int = 4, n_ctx: int = 4096, **settings):
    """Stop every local server and start `model` anew: an empty prompt cache, start-up excluded."""
    from instret.lm.local import engine as local

    local.stop_all()
    return local.local_server(model, n_ctx=n_ctx, n_parallel=n_parallel, **settings)


class Recorder:
    """Wraps `LocalEngine.complete` to keep every lm15 Request the engine sends and the prompt
    tokens of each reply: sent, and read from the slot's prompt cache (not processed again).
    At the engine, so the recovery steps' calls (on copies of the LM) are counted too."""

    def __init__(self):
        from instret.lm.local.lm import LocalEngine

        self.requests, self.sent, self.cached, self._original = [], 0, 0, LocalEngine.complete
        recorder = self

        def complete(engine, request):
            recorder.requests.append(request)
            response = recorder._original(engine, request)
            recorder.sent += response.usage.input_tokens or 0
            recorder.cached += response.usage.cache_read_tokens or 0
            return response

        LocalEngine.complete = complete

    def close(self):
        from instret.lm.local.lm import LocalEngine

        LocalEngine.complete = self._original


def student_lm(model: str, max_tokens: int):
    from instret.lm.models import make_lm

    return make_lm(model, max_tokens=max_tokens, temperature=0.0, extra={"cache": False})


def run_eval(questions, model: str, max_tokens: int, threads: int, n_ctx: int = 4096) -> dict:
    """One timed `evaluate` (CoT) on a fresh server, its requests recorded at the engine."""
    from instret.evaluation.run import evaluate
    from instret.lm.local.engine import running_servers
    from instret.programs.methods import make_program

    fresh_server(model, n_ctx=n_ctx)
    lm, recorder = student_lm(model, max_tokens), Recorder()
    try:
        with tempfile.TemporaryDirectory() as out:
            clock = time.perf_counter()
            report = evaluate(questions, methods={"cot": make_program("cot", None, "numeric")}, students={"s": lm},
                              kind="numeric", out_dir=out, threads=threads, progress=False)
            seconds = time.perf_counter() - clock
    finally:
        recorder.close()
    return {"seconds": seconds, "qps": len(questions) / seconds, "calls": len(recorder.requests),
            "sent": recorder.sent, "cached": recorder.cached, "failures": sum(report.failures.values()),
            "n_ctx": max(server.n_ctx for server in running_servers()), "requests": recorder.requests}


def run_direct(requests, model: str, threads: int, n_ctx: int) -> dict:
    """The recorded requests, serialized as DSPy's lm15 sends them, posted straight to the server."""
    from dspy.clients.lm15_boundary import request_kwargs

    server = fresh_server(model, n_ctx=n_ctx)  # the window the engine ended up with
    bodies = [json.dumps(request_kwargs(request, "chat")).encode() for request in requests]

    def post(body: bytes) -> dict:
        request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=1800) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # refused here as it was in the instret phase: same work
            return {"error": error.read().decode()[:300], "usage": {"prompt_tokens": 0}}

    clock = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        replies = list(pool.map(post, bodies))
    seconds = time.perf_counter() - clock
    cached = sum((reply.get("usage", {}).get("prompt_tokens_details") or {}).get("cached_tokens", 0) for reply in replies)
    return {"seconds": seconds, "calls": len(bodies), "sent": sum(r["usage"]["prompt_tokens"] for r in replies),
            "cached": cached, "refused": sum("error" in reply for reply in replies)}


def engine(args) -> None:
    questions = load(Path(args.test), args.questions)
    model = args.model
    print(f"{model}: {len(questions)} GSM8K test questions, CoT, max_tokens {args.max_tokens}, "
          f"temperature 0, 4 slots per server")
    run_eval(load(Path(args.test), args.questions + 1)[-1:], model, args.max_tokens, threads=1)  # warm-up, untimed
    four = run_eval(questions, model, args.max_tokens, threads=4)
    direct = run_direct(four["requests"], model, threads=4, n_ctx=four["n_ctx"])
    direct["qps"] = len(questions) / direct["seconds"]
    one = run_eval(questions, model, args.max_tokens, threads=1, n_ctx=four["n_ctx"])
    from instret.lm.local.engine import stop_all

    stop_all()
    rows = [("instret evaluate, 4 threads", four), ("same requests posted directly, 4 threads", direct),
            ("instret evaluate, 1 thread", one)]
    print(f"\n{'phase':<42} {'seconds':>8} {'questions/s':>12} {'calls':>6} {'prompt sent':>12} {'processed':>10}")
    for name, row in rows:
        print(f"{name:<42} {row['seconds']:>8.1f} {row['qps']:>12.3f} {row['calls']:>6} {row['sent']:>12} "
              f"{row['sent'] - row['cached']:>10}")
    overhead, batching = four["qps"] / direct["qps"], four["qps"] / one["qps"]
    print(f"\ninstret vs direct: {overhead:.2f}x ({'PASS' if overhead >= OVERHEAD_TARGET else 'MISS'}, target >= {OVERHEAD_TARGET})")
    print(f"4 threads/4 slots vs 1 thread: {batching:.2f}x ({'PASS' if batching >= BATCHING_TARGET else 'MISS'}, "
          f"target >= {BATCHING_TARGET})")
    if four["failures"] or one["failures"] or direct["refused"]:
        print(f"failed items: {four['failures']} at 4 threads, {one['failures']} at 1 thread; "
              f"requests the server refused when posted directly: {direct['refused']}")


def guides(args) -> None:
    import dspy

    from instret.lm.models import make_lm
    from instret.programs import GuideWriter

    train = load(Path(args.train), args.guides * args.examples)
    groups = [train[i::args.guides] for i in range(args.guides)]
    fresh_server(args.model)
    lm = make_lm(args.model, max_tokens=args.max_tokens, temperature=0.0, extra={"cache": False})
    writer = GuideWriter()

    def write(group):
        examples = [f"{q.text}\nSolution: {q.solution or q.answer}" for q in group]
        with dspy.context(lm=lm):
            try:
                writer(domain="grade-school math", example_questions=examples, style="concise")
            except Exception as error:  # noqa: BLE001  (a reply that does not parse still cost its prompt)
                print(f"  a guide failed: {type(error).__name__}")

    clock = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, groups))
    usage = [entry["usage"] for entry in lm.history if entry.get("usage")]
    sent = sum(u.get("prompt_tokens", 0) for u in usage)
    cached = sum((u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) for u in usage)
    print(f"{args.model}: {len(groups)} guides ({len(usage)} calls) in {time.perf_counter() - clock:.0f} s; "
          f"prompt tokens sent {sent}, processed {sent - cached} ({cached / max(sent, 1):.0%} from the prompt cache)")


def threads(args) -> None:
    """Speed at several llama.cpp thread counts, alone and beside a busy process: one request
    (prompt and generation tokens/s), then 4 slots decoding together (aggregate tokens/s)."""
    cores = os.cpu_count() or 2
    half = max(1, cores // 2)
    # (threads, batch threads, poll): llama.cpp's default poll is 50 (threads spin while they wait)
    configs = [(cores, cores, None), (cores, cores, 0), (half, half, None), (half, half, 0), (half, cores, 0)]
    prompt = "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May. " * 12
    print(f"{'threads':>7} {'batch threads':>14} {'poll':>5} {'busy neighbour':>15} {'1 request: prompt tok/s':>24} "
          f"{'generation tok/s':>17} {'4 slots: tok/s':>15}")
    for (n_threads, n_batch, poll), busy in [(config, busy) for busy in (False, True) for config in configs]:
        server = fresh_server(args.model, n_parallel=4, n_threads=n_threads, n_threads_batch=n_batch, poll=poll)
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            timings = [_post(server, f"[{i}] {prompt} How many clips altogether?", 40) for i in range(2)]
            clock = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda i: _post(server, f"Q{i}: count from 1 to 100.", 48), range(4)))
            together = 4 * 48 / (time.perf_counter() - clock)
        finally:
            if spinner:
                spinner.kill()
        print(f"{n_threads:>7} {n_batch:>14} {'50' if poll is None else poll:>5} {'yes' if busy else 'no':>15} "
              f"{max(t['prompt_per_second'] for t in timings):>24.1f} "
              f"{max(t['predicted_per_second'] for t in timings):>17.1f} {together:>15.1f}")
    from instret.lm.local.engine import stop_all

    stop_all()


def _post(server, text: str, tokens: int) -> dict:
    """One request that reads its whole prompt (no prompt cache) and writes exactly `tokens` tokens."""
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": tokens, "temperature": 0,
            "cache_prompt": False, "ignore_eos": True}
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=1800) as response:
        return json.loads(response.read())["timings"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parts = parser.add_subparsers(dest="part", required=True)
    from real_accuracy import ANSWERING, accuracy

    for name, run in (("engine", engine), ("guides", guides), ("threads", threads), ("accuracy", accuracy)):
        part = parts.add_parser(name)
        part.add_argument("--model", default="local/qwen2.5-coder-0.5b")
        part.set_defaults(run=run)
        if name == "engine":
            part.add_argument("--questions", type=int, default=8)
            part.add_argument("--max-tokens", type=int, default=256)
            part.add_argument("--test", default=str(GSM8K / "test.jsonl"))
        if name == "guides":
            part.add_argument("--guides", type=int, default=4)
            part.add_argument("--examples", type=int, default=4, help="example questions per guide")
            part.add_argument("--max-tokens", type=int, default=400)
            part.add_argument("--train", default=str(GSM8K / "train.jsonl"))
        if name == "accuracy":
            part.add_argument("--teacher", default="local/qwen2.5-coder-1.5b")
            part.add_argument("--student", default="local/qwen2.5-coder-0.5b")
            part.add_argument("--gsm8k", type=int, default=100, help="first N GSM8K test questions")
            part.add_argument("--svamp", type=int, default=100, help="first N SVAMP questions")
            part.add_argument("--methods", default=ANSWERING)
            part.add_argument("--threads", type=int, default=4)
            part.add_argument("--config", help="instret.toml for the evals, e.g. the student's engine "
                                               "settings ([student] extra = {n_threads = 2} on a quiet machine)")
            # committed (answers journals, corpus guides): the next session resumes a run that
            # did not fit this one
            part.add_argument("--work", default=str(REPO / "benchmarks" / "results" / "real-models"))
            part.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "real-models.md"))
    args = parser.parse_args()
    from instret import _env  # noqa: F401

    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    args.run(args)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
