"""Benchmark retrieval latency through `GuideRetriever` at 1k, 10k and 100k stored guides.

    .venv/bin/python benchmarks/bench_retrieval.py                      # 1k, 10k, 100k guides (a few minutes)
    .venv/bin/python benchmarks/bench_retrieval.py --sizes 1000,10000   # quick run

Every figure comes from one run of this script, so compare figures with each other (ratios),
not with another machine or another day. Nothing here asserts a timing: the target prints PASS/MISS.

For each size, synthetic guides with random unit vectors (dimension 384, each guide's centroid
its own vector) are written straight into a `GuideStore` in a temporary folder with
`upsert_guides` (the store's own batching), and a `Corpus` with an in-memory manifest is put
around it. Each method answers the same queries, in blocks (`--rounds`, 8 by default) whose
methods' order rotates every round, so drift and load bursts spread over all of them:
  - numpy brute force: scores = matrix @ query, `argpartition` top k, over the same
    L2-normalized float32 matrix (the exact answer, and the baseline of the ratios);
  - `GuideRetriever`, embedding excluded: its embedder is a lookup returning a precomputed vector
    for each query text (GuideRetriever takes any object with `id` and `encode`), so the figure is
    retrieval alone: store query, then the guide lookup;
  - `GuideRetriever`, embedding included: the real default embedder (all-MiniLM-L6-v2) on the
    GSM8K sample questions;
  - for the breakdown: `GuideStore.query` alone, Chroma's `collection.query` on a held collection
    (what the store asks Chroma for), and the embedder's `encode` of one question alone.
Queries for the excluded path are stored vectors plus noise (cosine ≈ 0.7 to their guide), so
recall@k of the retriever against the exact numpy top k is meaningful (Chroma's HNSW is approximate).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

TARGET_RATIO_10K = 2.0
DIMENSION = 384
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


class PrecomputedEmbedder:
    """An embedder that looks vectors up by text: the retriever's path with the embedding excluded."""

    def __init__(self, embedder_id: str, vectors: dict[str, np.ndarray]):
        self.id = embedder_id
        self.vectors = vectors

    def encode(self, texts):
        return np.stack([self.vectors[text] for text in texts])


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def synthetic_guides(n: int, vectors: np.ndarray):
    from instret.corpus.guides import Guide
    from instret.corpus.store import StoredGuide

    topics = ("unit rates", "percent change", "ratios", "time and distance", "area and perimeter", "averages",
              "simple interest", "fractions of a whole", "work rates", "ages")
    guides = []
    for i in range(n):
        topic = topics[i % len(topics)]
        guide = Guide(title=f"{topic.capitalize()} ({i})",
                      applies_when=f"Word problems about {topic} with two or three given quantities.",
                      background=f"Questions about {topic} relate a total to its parts; write each quantity "
                                 f"with its unit before combining them.",
                      procedure=["List the given quantities with their units.", "Find the rate or part per unit.",
                                 "Combine the quantities in the order the question describes.",
                                 "Check the units of the result against what is asked."],
                      pitfalls=["Mixing units.", "Answering an intermediate quantity instead of the one asked."])
        guides.append(StoredGuide(id=f"guide-{i:06d}", guide=guide,
                                  question_ids=[f"q{i:06d}-{j}" for j in range(2 + i % 7)],
                                  centroid=vectors[i], cluster_label=i))
    return guides


def synthetic_corpus(folder: Path, n: int, rng: np.random.Generator):
    """A corpus of n synthetic guides; returns it, the normalized matrix, and the insert seconds."""
    from instret.corpus.corpus import Corpus
    from instret.corpus.manifest import Manifest
    from instret.corpus.store import GuideStore

    vectors = unit_rows(rng.standard_normal((n, DIMENSION), dtype=np.float32))
    guides = synthetic_guides(n, vectors)
    store = GuideStore.open(folder / "chroma", name="bench")
    clock = time.perf_counter()
    store.upsert_guides(guides, vectors)
    insert_seconds = time.perf_counter() - clock
    manifest = Manifest(domain="synthetic", embedder_id=MINILM_ID, embedder_dimension=DIMENSION, clustering={},
                        teacher={}, guide_style="synthetic", sources=[], question_ids=[],
                        store={"path": "chroma", "name": "bench"}, n_guides=n, n_clusters=n, complete=True)
    return Corpus(folder, manifest, store), vectors, insert_seconds


def brute_force_top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    scores = matrix @ query
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure_size(n: int, args, embedder, texts: list[str], scratch: Path) -> dict:
    from instret.corpus.retrieval import GuideRetriever

    rng = np.random.default_rng(args.seed + n)
    folder = scratch / f"guides-{n}"
    corpus, matrix, insert_seconds = synthetic_corpus(folder, n, rng)
    if corpus.store.count() != n:
        raise SystemExit(f"the store holds {corpus.store.count()} guides after inserting {n}")

    # Excluded path: each query a stored vector plus noise, looked up by a text key.
    targets = rng.integers(0, n, size=args.queries + args.warmup)
    noise = rng.standard_normal((len(targets), DIMENSION), dtype=np.float32) / np.sqrt(DIMENSION)
    queries = unit_rows(matrix[targets] + noise)
    keys = [f"query {i}" for i in range(len(queries))]
    precomputed = PrecomputedEmbedder(MINILM_ID, dict(zip(keys, queries)))
    # min_similarity=-1 keeps every hit, so the retriever returns k guides as the brute force does.
    given = GuideRetriever(corpus, k=args.k, min_similarity=-1.0, embedder=precomputed)
    embedded = GuideRetriever(corpus, k=args.k, min_similarity=-1.0, embedder=embedder)
    collection = corpus.store._collection("guides")  # held once: Chroma's own query cost, nothing around it

    clock = time.perf_counter()
    try:
        given(keys[0])  # opens the corpus and loads the guide table (id -> Guide) once
        first_call, failure = time.perf_counter() - clock, None
        embedded(texts[0])
    except Exception as error:  # report what a user would hit, and measure what still works
        first_call, failure = time.perf_counter() - clock, f"{type(error).__name__}: {error}"

    methods = {"numpy": lambda i: brute_force_top_k(matrix, queries[i], args.k),
               "given": lambda i: given(keys[i]),
               "embedded": lambda i: embedded(texts[i % len(texts)]),
               "store": lambda i: corpus.store.query(queries[i][None], args.k),
               "chroma": lambda i: collection.query(query_embeddings=queries[i][None], n_results=args.k,
                                                    include=["metadatas", "distances"]),
               "encode": lambda i: embedder.encode([texts[i % len(texts)]])}
    if failure is not None:
        del methods["given"], methods["embedded"]
    names = list(methods)
    for name in names:
        for i in range(args.warmup):
            methods[name](i)
    # Blocks of queries, one method at a time, the methods' order rotating every round: drift and
    # load bursts spread over all methods, yet each method's queries run together. Run query by
    # query, the numpy baseline slowed several-fold behind Chroma's and torch's worker threads.
    times: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, list] = {name: [] for name in names}
    block = -(-args.queries // args.rounds)
    for round_number in range(args.rounds):
        shift = round_number % len(names)
        first = args.warmup + round_number * block
        for name in names[shift:] + names[:shift]:
            method = methods[name]
            for i in range(first, min(first + block, len(queries))):
                clock = time.perf_counter()
                result = method(i)
                times[name].append(time.perf_counter() - clock)
                outputs[name].append(result)
    exact = [[f"guide-{j:06d}" for j in top] for top in outputs["numpy"]]
    found = [prediction.ids for prediction in outputs.get("given", [])]
    recalls = [len(set(f) & set(e)) / args.k for f, e in zip(found, exact)]
    top1 = [f[:1] == e[:1] for f, e in zip(found, exact)]

    size_mib = folder_mib(folder)
    if not args.keep:
        del given, embedded, collection, corpus
        shutil.rmtree(folder, ignore_errors=True)
    return {"n": n, "insert": insert_seconds, "size_mib": size_mib, "first_call": first_call,
            "p50": {name: percentile(values, 50) for name, values in times.items()},
            "p99": {name: percentile(values, 99) for name, values in times.items()},
            "recall": statistics.fmean(recalls) if recalls else None, "top1": statistics.fmean(top1) if top1 else None,
            "failure": failure}


def times_text(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio < 100 else f"{ratio:,.0f}x"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="stored guides, comma-separated "
                                                                       "(default 1000,10000,100000)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed queries first, per method and size (default 20)")
    parser.add_argument("--rounds", type=int, default=8, help="blocks the queries are cut into, methods' order "
                                                              "rotating per block (default 8)")
    parser.add_argument("--k", type=int, default=2, help="guides per query (default 2, as GuideRetriever)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the stores and print where")
    args = parser.parse_args(argv)
    sizes = [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
    warnings.filterwarnings("ignore")

    from instret import _env  # noqa: F401  (offline, no telemetry)
    from instret.data import SAMPLE_GSM8K
    from instret.corpus.embedders import make_embedder
    from instret.data.loaders import load_questions

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    embedder = make_embedder()
    if embedder.id != MINILM_ID:
        raise SystemExit(f"the default embedder is {embedder.id}, not {MINILM_ID}: update MINILM_ID")
    texts = [q.text for q in load_questions(str(SAMPLE_GSM8K)).questions]
    embedder.encode(texts[:8])  # load the weights before anything is timed

    scratch = Path(tempfile.mkdtemp(prefix="instret-bench-retrieval-"))
    results = []
    try:
        for n in sizes:
            print(f"{n:,} guides: inserting and querying ...", file=sys.stderr, flush=True)
            results.append(measure_size(n, args, embedder, texts, scratch))
    except BaseException:
        if not args.keep:  # a 100k store is nearly 2 GB
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    # ---- report
    import chromadb
    import torch

    print(f"\ninstret retrieval benchmark: GuideRetriever (mode=guides, k={args.k}) over synthetic guides, "
          f"dimension {DIMENSION}, {args.queries} timed queries per size after {args.warmup} warm-up")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, chromadb {chromadb.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), {os.cpu_count()} CPUs")
    if load_before and load_after:
        print(f"load average (1 min) at start {load_before[0]:.2f}, at end {load_after[0]:.2f}: "
              f"above {os.cpu_count()} means other processes shared the CPUs")

    print(f"\n{'guides':>8}{'insert':>10}{'guides/s':>10}{'on disk':>10}{'1st call*':>11}{'recall@' + str(args.k):>10}"
          f"{'top-1':>7}")
    for r in results:
        quality = (f"{r['recall']:>10.3f}{r['top1']:>7.3f}" if r["recall"] is not None
                   else f"{'-':>10}{'-':>7}  GuideRetriever FAILED (below)")
        print(f"{r['n']:>8,}{r['insert']:>8.1f} s{r['n'] / r['insert']:>10,.0f}{r['size_mib']:>6.0f} MiB"
              f"{r['first_call']:>9.2f} s{quality}")
    print("* first GuideRetriever call: opens the corpus and loads the guide table (every guide's metadata) once.")
    print("recall@k and top-1: GuideRetriever's ids against the exact numpy top k (Chroma's HNSW is approximate).")

    rows = [("numpy brute force (baseline)", "numpy"),
            ("GuideRetriever, embedding excluded", "given"),
            ("GuideRetriever, embedding included", "embedded"),
            ("  GuideStore.query", "store"),
            ("  Chroma collection.query", "chroma"),
            ("  MiniLM encode, one question", "encode")]
    header = f"{'latency, ms: p50 / p99 (x numpy p50)':<38}" + "".join(f"{r['n']:>28,}" for r in results)
    print(f"\n{header}")
    print("-" * len(header))
    for label, key in rows:
        cells = ""
        for r in results:
            if key not in r["p50"]:
                cells += f"{'failed':>28}"
                continue
            p50, p99, base = r["p50"][key] * 1000, r["p99"][key] * 1000, r["p50"]["numpy"] * 1000
            cells += f"{p50:>9.3f} / {p99:>7.3f} ({times_text(p50 / base):>6})"
        print(f"{label:<38}{cells}")
    print("-" * len(header))
    print("GuideStore.query = get_or_create_collection + count() + collection.query (metadatas, distances); "
          "GuideRetriever adds\nits embedder call (a dict lookup when excluded) and the id -> guide lookup.")
    for r in results:
        if r["failure"]:
            print(f"GuideRetriever FAILED at {r['n']:,} guides (its first call, loading the guide table): "
                  f"{r['failure'][:300]}")

    print(f"\n{'target':<48}{'measured':>10}{'target':>10}  result")
    print("-" * 76)
    label, target = "p50 GuideRetriever (excl.) / numpy at 10k", f"<= {TARGET_RATIO_10K:g}x"
    at_10k = next((r for r in results if r["n"] == 10_000), None)
    if at_10k is None:
        print(f"{label:<48}{'n/a':>10}{target:>10}  (10,000 not in --sizes)")
    elif at_10k["failure"]:
        print(f"{label:<48}{'failed':>10}{target:>10}  MISS")
    else:
        ratio = at_10k["p50"]["given"] / at_10k["p50"]["numpy"]
        print(f"{label:<48}{ratio:>9.1f}x{target:>10}  {verdict(ratio <= TARGET_RATIO_10K)}")

    if args.keep:
        print(f"\nstores kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
