"""How well `CorpusBuilder` clusters match the labelled subjects of real data, how stable they
are, and what they cost: instret's default, the old default and the BERTopic default, same run.

    nice -n 10 .venv/bin/python benchmarks/bench_clustering.py                # 4 sets, default rows
    nice -n 10 .venv/bin/python benchmarks/bench_clustering.py --candidates   # + every setting tried
    nice -n 10 .venv/bin/python benchmarks/bench_clustering.py --timing --write

Data (../shared/data, read with instret's loaders; the label is each question's subject): MATH
train (7 subjects), HEAD-QA English train+dev+test (6 categories), MMLU law (3 subjects, all
splits), MedQA-USMLE 4-option dev+test (step1 vs step2&3). Embeddings (the project's default
embedder) and UMAP outputs are cached under benchmarks/.cache, so a rerun pays only the clustering.

Per set and setting, three fits: on all questions (clusters, noise, NMI, homogeneity,
completeness, purity, sizes), and on two 90% subsamples whose held-out 10% are disjoint:
precision@1 of each held-out question (its nearest cluster's majority subject is its own; the
cluster found by centroid, and by a vote of its 10 nearest member questions), the adjusted Rand
index of the two fits on the questions both hold, and the fewer clusters of the two (a "collapse" when under half the full fit's). Fit time: reduce + cluster +
settle + split of the full fit (a cached UMAP counts the seconds it took when computed); the map
layout is left out here, the same for every setting, and timed with it under --timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CACHE = Path(__file__).resolve().parent / ".cache"
RESULTS = Path(__file__).resolve().parent / "results" / "clustering.md"
NOTES = "<!-- notes: kept when the table is rewritten -->"

SETS = {
    "MATH train": ["math/MATH/train.jsonl"],
    "HEAD-QA": [f"medicine/headqa_en/{split}_HEAD_EN.json" for split in ("train", "dev", "test")],
    "MMLU law": [f"law/mmlu_law/{subject}_{split}.csv" for subject in
                 ("professional_law", "international_law", "jurisprudence") for split in ("dev", "val", "test")],
    "MedQA": [f"medicine/medqa_us_4opt/phrases_no_exclude_{split}.jsonl" for split in ("dev", "test")],
}


# --- data and caches ----------------------------------------------------------------------------

def load_set(name: str):
    from instret.data.loaders import load_questions

    report = load_questions([str(DATA / path) for path in SETS[name]], skip_bad_rows=True)
    questions = [q for q in report.questions if q.subject]
    return questions, np.array([q.subject for q in questions]), len(report.bad_rows)


def embed_cached(name: str, questions, embedder) -> np.ndarray:
    key = hashlib.sha1("\n".join([embedder.id] + [q.id for q in questions]).encode()).hexdigest()[:12]
    path = CACHE / f"embeddings-{name.replace(' ', '_')}-{key}.npy"
    if path.exists():
        return np.load(path)
    clock = time.perf_counter()
    vectors = embedder.encode([q.render() for q in questions])
    print(f"  embedded {len(questions)} {name} questions in {time.perf_counter() - clock:.0f} s", flush=True)
    np.save(path, vectors)
    return vectors


class CachedReducer:
    """The default UMAP reducer, its output kept on disk by (data, settings); `seconds` is the
    time the UMAP fit took when it was computed, `loading` the time this call took."""

    def __init__(self, n_components: int = 5, random_state: int = 0, use_cache: bool = True):
        self.n_components, self.random_state, self.use_cache = n_components, random_state, use_cache

    def get_params(self, deep=False):
        return {"n_components": self.n_components, "n_neighbors": 15, "min_dist": 0.0, "metric": "cosine"}

    def fit_transform(self, X, y=None):
        from instret.corpus.clustering import default_reducer

        clock = time.perf_counter()
        X = np.ascontiguousarray(X, dtype=np.float32)
        key = hashlib.sha1(X.tobytes() + f"{self.n_components}/{self.random_state}".encode()).hexdigest()[:16]
        path = CACHE / f"umap-{key}.npy"
        if self.use_cache and path.exists():
            self.seconds = json.loads(path.with_suffix(".json").read_text())["seconds"]
            reduced = np.load(path)
        else:
            reduced = default_reducer(self.random_state, self.n_components).fit_transform(X)
            self.seconds = time.perf_counter() - clock
            np.save(path, reduced)
            path.with_suffix(".json").write_text(json.dumps({"seconds": self.seconds}))
        self.loading = time.perf_counter() - clock
        return reduced


# --- settings compared --------------------------------------------------------------------------

def hdbscan_(min_cluster_size, min_samples=None, selection="eom"):
    import hdbscan

    return hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                           cluster_selection_method=selection)


def settings(candidates: bool):
    """name -> (builder factory taking (n, reducer), note). `n` is the size of the fit's input."""
    from sklearn.cluster import AgglomerativeClustering, KMeans

    from instret.corpus.clustering import DEFAULT_CLUSTER_SIZE, CorpusBuilder, NoReduction

    def builder(**kwargs):
        return CorpusBuilder(map_reducer=None, **kwargs)

    rows = {
        "instret default": lambda n, r, k=None: builder(reducer=r),
        "old default (HDBSCAN sqrt(n)/2)": lambda n, r, k=None: builder(
            reducer=r, clusterer=hdbscan_(max(5, int(round(n ** 0.5 / 2))))),
        "BERTopic default": lambda n, r, k=None: builder(reducer=r, clusterer=hdbscan_(15, 5)),
        # the knob, asked for as many guides as the BERTopic default found on the full set
        "instret default, n_guides = BERTopic's": lambda n, r, k=None: builder(reducer=r, n_guides=k),
    }
    if candidates:
        for size in sorted({20, DEFAULT_CLUSTER_SIZE, 45, 60}):
            rows[f"default, cluster_size={size}"] = lambda n, r, k=None, s=size: builder(reducer=r, cluster_size=s)
        rows |= {
            "HDBSCAN leaf, mcs 10, ms 5": lambda n, r, k=None: builder(reducer=r, clusterer=hdbscan_(10, 5, "leaf")),
            "HDBSCAN leaf, mcs 15, ms 5": lambda n, r, k=None: builder(reducer=r, clusterer=hdbscan_(15, 5, "leaf")),
            "HDBSCAN eom, mcs 10, ms 1": lambda n, r, k=None: builder(reducer=r, clusterer=hdbscan_(10, 1)),
            f"BERTopic default + split at {DEFAULT_CLUSTER_SIZE}": lambda n, r, k=None: builder(
                reducer=r, clusterer=hdbscan_(15, 5), cluster_size=DEFAULT_CLUSTER_SIZE),
            f"HDBSCAN leaf mcs 10 ms 5 + split at {DEFAULT_CLUSTER_SIZE}": lambda n, r, k=None: builder(
                reducer=r, clusterer=hdbscan_(10, 5, "leaf"), cluster_size=DEFAULT_CLUSTER_SIZE),
            f"UMAP 5-d + KMeans, n/{DEFAULT_CLUSTER_SIZE}": lambda n, r, k=None: builder(
                reducer=r, clusterer=KMeans(n_clusters=max(1, round(n / DEFAULT_CLUSTER_SIZE)), n_init=3,
                                            random_state=0)),
            "default, UMAP 10-d": lambda n, r, k=None: builder(reducer=CachedReducer(10, use_cache=r.use_cache)),
            f"agglomerative, average, cosine (no UMAP), n/{DEFAULT_CLUSTER_SIZE}": lambda n, r, k=None: builder(
                reducer=NoReduction(), clusterer=AgglomerativeClustering(
                    n_clusters=max(1, round(n / DEFAULT_CLUSTER_SIZE)), metric="cosine", linkage="average")),
        }
    return rows


# --- one setting on one set ---------------------------------------------------------------------

def fit(factory, questions, X, n_guides, use_cache):
    from instret.corpus.clustering import NoReduction

    reducer = CachedReducer(use_cache=use_cache)
    builder = factory(len(questions), reducer, n_guides)
    clock = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        builder.fit(questions, embeddings=X)
    seconds = time.perf_counter() - clock
    used = builder.reducer_
    if isinstance(used, CachedReducer):
        seconds += used.seconds - used.loading
    elif not isinstance(used, (NoReduction, type(None))):
        raise TypeError(f"unexpected reducer {used!r}")
    return builder, seconds


def purity(y, labels) -> float:
    return sum(Counter(y[labels == c]).most_common(1)[0][1] for c in set(labels.tolist())) / len(y)


def precision_at_1(X_fit, y_fit, labels, X_test, y_test, voters: int = 10) -> tuple[list[bool], list[bool]]:
    """Hits of the nearest cluster by centroid (`--mode guides` finds guides by their own text,
    whose best stand-in here is the centroid) and by a vote of the `voters` nearest member
    questions, weighted by similarity (`--mode questions`, 5 × k = 10 neighbours at k = 2)."""
    names = sorted(set(labels.tolist()))
    index = {c: i for i, c in enumerate(names)}
    centroids = np.stack([X_fit[labels == c].mean(axis=0) for c in names])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    majority = np.array([Counter(y_fit[labels == c]).most_common(1)[0][0] for c in names])
    by_centroid = majority[np.argmax(X_test @ centroids.T, axis=1)]
    similarity = X_test @ X_fit.T
    nearest = np.argpartition(-similarity, voters, axis=1)[:, :voters]
    votes = np.zeros((len(X_test), len(names)))
    for row, members in enumerate(nearest):
        np.add.at(votes[row], [index[c] for c in labels[members]], similarity[row, members])
    by_vote = majority[np.argmax(votes, axis=1)]
    return list(by_centroid == y_test), list(by_vote == y_test)


def folds(n: int, seed: int = 0):
    """Two 90% fits whose held-out 10% are disjoint."""
    order = np.random.default_rng(seed).permutation(n)
    tenth = n // 10
    held = [np.sort(order[:tenth]), np.sort(order[tenth:2 * tenth])]
    return [(np.setdiff1d(np.arange(n), h), h) for h in held]


def measure(name, factory, questions, X, y, n_guides=None, use_cache=True) -> dict:
    from sklearn import metrics

    full, seconds = fit(factory, questions, X, n_guides, use_cache)
    labels = full.labels_
    sizes = np.bincount(labels - labels.min())
    sizes = sizes[sizes > 0]
    hits, vote_hits, sub_labels, sub_counts = [], [], [], []
    for keep, held in folds(len(questions)):
        sub, _ = fit(factory, [questions[i] for i in keep], X[keep], n_guides, use_cache)
        by_centroid, by_vote = precision_at_1(X[keep], y[keep], sub.labels_, X[held], y[held])
        hits += by_centroid
        vote_hits += by_vote
        sub_labels.append(dict(zip(keep.tolist(), sub.labels_.tolist())))
        sub_counts.append(sub.n_clusters_)
    shared = sorted(set(sub_labels[0]) & set(sub_labels[1]))
    return {
        "setting": name, "clusters": full.n_clusters_, "noise": full.outlier_fraction_,
        "nmi": metrics.normalized_mutual_info_score(y, labels), "homogeneity": metrics.homogeneity_score(y, labels),
        "completeness": metrics.completeness_score(y, labels), "purity": purity(y, labels),
        "p_at_1": float(np.mean(hits)), "p_at_1_vote": float(np.mean(vote_hits)), "n_held": len(hits),
        "ari": metrics.adjusted_rand_score([sub_labels[0][i] for i in shared], [sub_labels[1][i] for i in shared]),
        "refit_clusters": min(sub_counts), "median_size": int(np.median(sizes)), "max_size": int(sizes.max()),
        "fit_s": seconds, "target_size": full.target_cluster_size_,
    }


# --- timing: fresh fits with the map, old default against the new ------------------------------

def timing(questions, X, rounds: int) -> dict:
    from instret.corpus.clustering import CorpusBuilder

    n = len(questions)
    builders = {"old default": lambda: CorpusBuilder(clusterer=hdbscan_(max(5, int(round(n ** 0.5 / 2))))),
                "instret default": lambda: CorpusBuilder()}
    times = {name: [] for name in builders}
    with warnings.catch_warnings():  # untimed: numba compiles what its disk cache lacks on a first fit
        warnings.simplefilter("ignore")  # (over 4,096 points UMAP switches to NN-descent: warm that up too)
        CorpusBuilder().fit(questions[:5000], embeddings=X[:5000])
    for round_ in range(rounds):
        for name in (list(builders) if round_ % 2 == 0 else list(builders)[::-1]):
            clock = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                builders[name]().fit(questions, embeddings=X)
            times[name].append(time.perf_counter() - clock)
            print(f"  timing round {round_ + 1}: {name} {times[name][-1]:.1f} s", flush=True)
    return times


# --- report -------------------------------------------------------------------------------------

COLUMNS = [("setting", "setting", "{}"), ("clusters", "clusters", "{}"), ("noise", "noise", "{:.2f}"),
           ("nmi", "NMI", "{:.3f}"), ("homogeneity", "homog.", "{:.3f}"), ("completeness", "compl.", "{:.3f}"),
           ("purity", "purity", "{:.3f}"), ("p_at_1", "P@1", "{:.3f}"), ("p_at_1_vote", "P@1 vote", "{:.3f}"),
           ("ari", "ARI 90/90", "{:.3f}"),
           ("refit_clusters", "fewest in a 90% refit", "{}"), ("median_size", "median size", "{}"),
           ("max_size", "max size", "{}"), ("fit_s", "fit s", "{:.1f}")]


def table(rows) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def targets(rows) -> list[str]:
    """The issue's targets for the default, against the BERTopic default of the same set and run."""
    by = {row["setting"]: row for row in rows}
    default, bertopic = by["instret default"], by["BERTopic default"]
    matched = [row for row in (default, by.get("instret default, n_guides = BERTopic's")) if row
               and abs(row["clusters"] - bertopic["clusters"]) <= 0.25 * bertopic["clusters"]]
    nmi_gain = max((row["nmi"] - bertopic["nmi"] for row in matched), default=None)
    p_gain = default["p_at_1"] - bertopic["p_at_1"]
    quality = (nmi_gain is not None and nmi_gain >= 0.03) or p_gain >= 0.05
    nmi_text = "no default row within ±25% of its count" if nmi_gain is None else f"{nmi_gain:+.3f}"
    collapse = [row["setting"] for row in rows if row["refit_clusters"] < row["clusters"] / 2]
    return [f"quality vs BERTopic default: NMI at a count within ±25% {nmi_text} (target +0.03), "
            f"P@1 {p_gain:+.3f} (target +0.05): **{'PASS' if quality else 'MISS'}**",
            f"90% refits with under half the full fit's clusters: default "
            f"**{'MISS' if 'instret default' in collapse else 'PASS'}**; all settings that collapse: "
            f"{', '.join(collapse) or 'none'}"]


def machine() -> list[str]:
    try:
        model = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown"
    from importlib.metadata import version

    return [f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"- machine: {model}, `nproc` {os.cpu_count()}, load average at start {os.getloadavg()[0]:.1f} "
            f"(shared with other work: read times as ratios within this run)",
            f"- Python {platform.python_version()}, umap-learn {version('umap-learn')}, hdbscan {version('hdbscan')}, "
            f"scikit-learn {version('scikit-learn')}, numpy {version('numpy')}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated, from: " + ", ".join(SETS))
    parser.add_argument("--candidates", action="store_true", help="also every setting tried before choosing")
    parser.add_argument("--timing", action="store_true", help="fresh fits with the map on MATH train, old vs new")
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument("--no-cache", action="store_true", help="recompute every UMAP (embeddings stay cached)")
    parser.add_argument("--write", action="store_true", help=f"write the tables to {RESULTS.relative_to(REPO)}")
    args = parser.parse_args(argv)

    from instret import _env  # noqa: F401
    from instret.corpus.clustering import DEFAULT_CLUSTER_SIZE
    from instret.corpus.embedders import make_embedder

    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    embedder = make_embedder()
    out = ["# Clustering against labelled subjects", "", *machine(),
           f"- embedder: {embedder.id}; instret default: UMAP 5-d → HDBSCAN → outliers to the nearest "
           f"centroid → clusters over 2 × {DEFAULT_CLUSTER_SIZE} questions split by KMeans", "",
           "Command: `nice -n 10 .venv/bin/python benchmarks/bench_clustering.py "
           + " ".join(a for a in (argv if argv is not None else sys.argv[1:])) + "`", ""]
    rows_by_set = {}
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        questions, y, skipped = load_set(name)
        X = embed_cached(name, questions, embedder)
        files = ", ".join(f"`{path}`" for path in SETS[name])
        print(f"{name}: {len(questions)} questions, {len(set(y))} subjects", flush=True)
        out += [f"## {name}: {len(questions)} questions, {len(set(y))} subjects", "",
                f"Files (under `../shared/data`): {files}; {skipped} malformed rows skipped. "
                f"Subjects: {', '.join(f'{s} {c}' for s, c in Counter(y).most_common())}.", ""]
        rows, bertopic_count = [], None
        for setting, factory in settings(args.candidates).items():
            if setting.startswith("instret default, n_guides") and bertopic_count is None:
                continue
            row = measure(setting, factory, questions, X, y, n_guides=bertopic_count, use_cache=not args.no_cache)
            if setting == "BERTopic default":
                bertopic_count = row["clusters"]
            rows.append(row)
            print("  " + " ".join(f"{title}={fmt.format(row[key])}" for key, title, fmt in COLUMNS), flush=True)
        rows_by_set[name] = rows
        out += [table(rows), "", *[f"- {line}" for line in targets(rows)],
                f"- held-out questions scored for P@1: {rows[0]['n_held']}", ""]
        for line in targets(rows):
            print("  " + line, flush=True)
    if args.timing:
        questions, _, _ = load_set("MATH train")
        X = embed_cached("MATH train", questions, embedder)
        times = timing(questions, X, args.timing_rounds)
        old, new = statistics.median(times["old default"]), statistics.median(times["instret default"])
        line = (f"Fresh fits on MATH train ({len(questions)} questions) with the 2-D map, after an untimed warm-up "
                f"fit, {args.timing_rounds} rounds in alternating order, median: old default {old:.1f} s "
                f"({', '.join(f'{t:.1f}' for t in times['old default'])}), instret default {new:.1f} s "
                f"({', '.join(f'{t:.1f}' for t in times['instret default'])}), "
                f"ratio {new / old:.2f} (target ≤ 1.5): **{'PASS' if new <= 1.5 * old else 'MISS'}**")
        print(line)
        out += ["## Fit time", "", line, ""]
    if args.write:
        notes = ""
        if RESULTS.exists() and NOTES in RESULTS.read_text():
            notes = RESULTS.read_text().split(NOTES, 1)[1]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(out) + "\n" + NOTES + notes)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
