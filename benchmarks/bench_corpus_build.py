"""Benchmark `build_corpus` end to end, with a zero-latency scripted teacher.

    .venv/bin/python benchmarks/bench_corpus_build.py                 # all 7,473 GSM8K train questions
    .venv/bin/python benchmarks/bench_corpus_build.py --limit 500     # a quick run

Every figure comes from one run of this script, so compare figures with each other (ratios),
not with another machine or another day. Nothing here asserts a timing: targets print PASS/MISS.

Measures:
  1. wall time of each stage of a full build into a temporary folder, and the process's peak RSS;
  2. builder embedding throughput (CachedEmbedder on a fresh cache) against plain
     `SentenceTransformer.encode` on the same model object, texts and batch size, run alternately;
  3. the same build rerun into the same folder: wall time, `n_embedded`, speed-up over the first;
  4. `instret --help` cold start: median of fresh subprocesses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN = REPO.parent / "shared" / "data" / "math" / "gsm8k" / "train.jsonl"
sys.path.insert(0, str(REPO / "tests"))  # the scripted teacher lives with the tests

TARGET_THROUGHPUT_RATIO = 0.95
TARGET_SPEEDUP = 5.0
TARGET_HELP_SECONDS = 0.5


def peak_rss_mib() -> float | None:
    """The process's resident-set high-water mark (covers torch's native allocations)."""
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil

            return psutil.Process().memory_info().peak_wset / 2**20
        except (ImportError, AttributeError):
            return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def help_cold_start(runs: int) -> list[float]:
    script = Path(sys.executable).parent / ("instret.exe" if os.name == "nt" else "instret")
    if not script.exists():
        raise SystemExit(f"no console script at {script}; install the package (pip install -e .)")
    times = []
    for _ in range(runs):
        clock = time.perf_counter()
        done = subprocess.run([str(script), "--help"], capture_output=True, text=True)
        times.append(time.perf_counter() - clock)
        if done.returncode != 0:
            raise SystemExit(f"`{script} --help` exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return times


def embedding_throughput(embedder, texts: list[str], rounds: int, scratch: Path) -> dict:
    """Plain encode and CachedEmbedder (fresh cache each time) on the same texts, in adjacent pairs.

    Pairs alternate their order (plain first, then cached first, ...) so drift cancels; the
    result is the median texts/s of each and the median of the per-pair ratios, which a
    burst of load from another process moves far less than a single long measurement.
    """
    import numpy as np

    from instret.corpus.embedders import CachedEmbedder, EmbeddingCache

    model, batch_size = embedder.model, embedder.batch_size

    def plain(_):
        return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    def cached(round_number):
        cache = EmbeddingCache(scratch / f"throughput-{round_number}.sqlite")
        try:
            return CachedEmbedder(embedder, cache).encode(texts)
        finally:
            cache.close()

    rates = {"plain": [], "cached": []}
    vectors = {}
    for round_number in range(rounds):
        order = (("plain", plain), ("cached", cached))
        for which, encode in order if round_number % 2 == 0 else order[::-1]:
            clock = time.perf_counter()
            vectors[which] = encode(round_number)
            rates[which].append(len(texts) / (time.perf_counter() - clock))
    ratios = [c / p for p, c in zip(rates["plain"], rates["cached"])]
    difference = float(np.max(np.abs(np.asarray(vectors["plain"], dtype=np.float32) - vectors["cached"])))
    return {"plain": statistics.median(rates["plain"]), "cached": statistics.median(rates["cached"]),
            "ratio": statistics.median(ratios), "ratios": ratios, "difference": difference}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", default=str(DEFAULT_TRAIN), help=f"question file (default: {DEFAULT_TRAIN})")
    parser.add_argument("--limit", type=int, help="use only the first N questions")
    parser.add_argument("--throughput-texts", type=int, default=512,
                        help="texts per throughput measurement, spread over the questions (default 512)")
    parser.add_argument("--rounds", type=int, default=5, help="throughput pairs, order alternating (default 5)")
    parser.add_argument("--help-runs", type=int, default=5, help="`instret --help` subprocesses (default 5)")
    parser.add_argument("--threads", type=int, default=4, help="teacher threads (default 4, as the CLI)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus folder and print its path")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    # 4. cold start first, while this process has imported nothing heavy.
    help_times = help_cold_start(args.help_runs)

    from helpers.scripted import guide_response, scripted_lm

    from instret.teaching.build import build_corpus
    from instret.corpus.embedders import make_embedder
    from instret.data.loaders import load_questions

    clock = time.perf_counter()
    questions = load_questions(args.train).questions
    if args.limit:
        questions = questions[:args.limit]
    load_seconds = time.perf_counter() - clock

    embedder = make_embedder()
    clock = time.perf_counter()
    embedder.model  # load the weights outside the build, so 'embed' below is embedding only
    model_seconds = time.perf_counter() - clock
    rss_before = peak_rss_mib()

    scratch = Path(tempfile.mkdtemp(prefix="instret-bench-"))
    folder = scratch / "corpus"
    lm, engine = scripted_lm(guide_response)

    def build():
        clock = time.perf_counter()
        report = build_corpus(questions, folder, domain="grade-school math", teacher=lm, embedder=embedder,
                              sources=[args.train], threads=args.threads, progress=False)
        return report, time.perf_counter() - clock

    # 1. full build; 3. the same build again into the same folder.
    first, first_seconds = build()
    rss_build = peak_rss_mib()
    calls_after_first = engine.calls
    second, second_seconds = build()
    second_calls = engine.calls - calls_after_first

    # 2. throughput, after the builds so it cannot raise the build's peak RSS.
    texts = [q.render() for q in questions]
    step = max(1, len(texts) // max(1, args.throughput_texts))
    sample = texts[::step][:args.throughput_texts]
    throughput = embedding_throughput(embedder, sample, args.rounds, scratch)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    # ---- report ----
    import torch

    speedup = first_seconds / second_seconds
    ratio = throughput["ratio"]
    help_median = statistics.median(help_times)
    try:
        shown_train = os.path.relpath(args.train, REPO)
    except ValueError:
        shown_train = args.train
    print(f"\ninstret corpus build benchmark: {len(questions):,} questions from {shown_train}")
    print(f"python {sys.version.split()[0]}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs, teacher: scripted (zero latency), {args.threads} teacher threads")
    if load_before and load_after:
        print(f"load average (1 min) at start {load_before[0]:.2f}, at end {load_after[0]:.2f}: "
              f"above {os.cpu_count()} means other processes shared the CPUs")
    print(f"first build: {first.n_clusters} clusters, {first.outlier_fraction:.1%} HDBSCAN noise, "
          f"{first.guides_written} guides written, complete={first.complete}")

    rows = [("load questions", load_seconds, None), ("load embedding model*", model_seconds, None)]
    names = (("embed", "embed"), ("reduce+cluster", "cluster"), ("write guides", "write_guides"), ("store", "store"))
    for label, key in names:
        rows.append((label, first.stage_seconds.get(key, 0.0), second.stage_seconds.get(key, 0.0)))
    rows.append(("other (manifest, setup)", first_seconds - sum(first.stage_seconds.values()),
                 second_seconds - sum(second.stage_seconds.values())))
    rows.append(("build_corpus total", first_seconds, second_seconds))
    print(f"\n{'stage':<26}{'1st build':>12}{'2nd build':>12}")
    print("-" * 50)
    for label, a, b in rows:
        print(f"{label:<26}{a:>10.2f} s{'' if b is None else f'{b:>10.2f} s':>12}")
    print("-" * 50)
    embed_rate = len(questions) / first.stage_seconds["embed"] if first.stage_seconds.get("embed") else float("nan")
    print(f"{'embed stage throughput':<26}{embed_rate:>8.1f} q/s")
    if rss_build is not None:
        print(f"{'peak RSS before build':<26}{rss_before:>8.0f} MiB  (imports + model)")
        print(f"{'peak RSS after 1st build':<26}{rss_build:>8.0f} MiB  (process high-water)")
    else:
        print("peak RSS: unavailable on this platform")
    print("* loaded once before the first build; a fresh `instret corpus build` pays it inside 'embed'.")

    print(f"\nembedding throughput: {len(sample):,} texts, {args.rounds} pairs in alternating order, batch "
          f"{embedder.batch_size}; medians:")
    print(f"  plain SentenceTransformer.encode  {throughput['plain']:8.1f} texts/s")
    print(f"  CachedEmbedder, fresh cache       {throughput['cached']:8.1f} texts/s")
    print(f"  per-pair ratios cached/plain: {', '.join(f'{r:.2f}' for r in throughput['ratios'])}; "
          f"max |vector difference| {throughput['difference']:.1e}")

    print(f"\nsecond build: n_embedded={second.n_embedded}, from cache={second.n_embeddings_from_cache}, "
          f"clustering_reused={second.clustering_reused}, teacher calls={second_calls}, "
          f"guides reused={second.guides_reused}")
    print(f"instret --help: {', '.join(f'{t:.3f}' for t in help_times)} s")

    targets = [
        ("embedding throughput ratio", f"{ratio:.3f}", f">= {TARGET_THROUGHPUT_RATIO}", ratio >= TARGET_THROUGHPUT_RATIO),
        ("2nd build n_embedded", f"{second.n_embedded}", "= 0", second.n_embedded == 0),
        ("speed-up 1st/2nd build", f"{speedup:.1f}x", f">= {TARGET_SPEEDUP:g}x", speedup >= TARGET_SPEEDUP),
        ("instret --help (median)", f"{help_median:.3f} s", f"< {TARGET_HELP_SECONDS} s",
         help_median < TARGET_HELP_SECONDS),
    ]
    print(f"\n{'target':<28}{'measured':>12}{'target':>12}  result")
    print("-" * 60)
    for label, value, target, ok in targets:
        print(f"{label:<28}{value:>12}{target:>12}  {verdict(ok)}")

    if args.keep:
        print(f"\ncorpus kept in {folder}")
    else:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
