"""`instret` command line. Heavy libraries load inside each command, so `--help` is instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_INCOMPLETE = 3  # the build ran every stage it could, but guides are missing


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    from instret import _env  # noqa: F401
    from instret.lm.config import ConfigError
    from instret.data.loaders import BadRowError
    from instret.corpus.manifest import CorpusError

    try:
        return args.run(args) or 0
    except (BadRowError, ConfigError, CorpusError, FileNotFoundError, ValueError) as error:
        print(f"instret: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninstret: interrupted; finished work is saved, rerun the same command to continue.", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    from instret import __version__  # the package's __init__ only sets environment defaults: cheap

    parser = argparse.ArgumentParser(prog="instret", description=__doc__.split(".")[0] + ".")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help="TOML file naming teacher, student and embedder (default: ./instret.toml)")
    commands = parser.add_subparsers(title="commands")
    corpus = commands.add_parser("corpus", help="build and inspect instruction corpora").add_subparsers(title="corpus commands")

    from instret.cli.inputs import add_data_options

    build = corpus.add_parser("build", help="cluster training questions and have a teacher write one guide per cluster")
    build.add_argument("--train", action="append", help="training file(s); default: the bundled 200-question GSM8K sample")
    build.add_argument("--domain", help="subject area told to the teacher, e.g. math, medicine, law")
    build.add_argument("--out", help="corpus folder (default: corpora/<name of the first train file>)")
    add_data_options(build)
    build.add_argument("--teacher", help="teacher model string, e.g. ollama_chat/qwen2.5:14b")
    build.add_argument("--teacher-api-base", help="teacher server URL")
    build.add_argument("--teacher-max-tokens", type=int,
                       help="most tokens one guide reply may take (default: [teacher] max_tokens, else 2000)")
    build.add_argument("--embedder", help="embedding model: all-MiniLM-L6-v2 (default) or a litellm string")
    build.add_argument("--embedder-api-base", help="embedding server URL")
    build.add_argument("--style", choices=["concise", "detailed"], default="concise")
    build.add_argument("--outliers", choices=["nearest", "general"], default="nearest",
                       help="HDBSCAN noise joins its nearest cluster, or forms one general bucket with its own guide")
    granularity = build.add_mutually_exclusive_group()
    granularity.add_argument("--cluster-size", type=int, metavar="N",
                             help="about N questions per guide (default 30), none over 2N")
    granularity.add_argument("--guides", type=int, metavar="N", help="N guides (N teacher requests)")
    build.add_argument("--min-cluster-size", type=int, help="HDBSCAN min_cluster_size (default ~sqrt(n)/2)")
    build.add_argument("--dry-run", action="store_true",
                       help="cluster, show the number of guides and the teacher's prompt tokens, call no teacher")
    build.add_argument("--examples-per-guide", type=int, default=8)
    build.add_argument("--threads", type=int, default=4, help="parallel teacher requests")
    build.add_argument("--holdout-fraction", type=float,
                       help="for data without a train split (MMLU law): hold out this fraction of the questions, "
                            "chosen by a stable hash, and record them in the manifest for evaluation")
    build.add_argument("--chroma-url", help="store guides on a Chroma server (`chroma run`) instead of the corpus folder")
    build.add_argument("--random-state", type=int, default=0)
    build.add_argument("--no-progress", action="store_true")
    build.set_defaults(run=_build)

    show = corpus.add_parser("show", help="list every cluster: size, guide title (or none yet), typical questions")
    show.add_argument("corpus")
    show.add_argument("--examples", type=int, default=3)
    show.set_defaults(run=_show)

    draw = corpus.add_parser("map", help="draw the questions in 2-D by cluster, labelled with guide titles "
                                         "(or each cluster's most telling words)")
    draw.add_argument("corpus")
    draw.add_argument("-o", "--output", default="map.png")
    draw.set_defaults(run=_map)

    # Other command groups live in their own modules; each imports only argparse at load time.
    from instret.cli import answer as cli_answer, compile as cli_compile, models as cli_models, sg as cli_sg

    cli_answer.register(commands)
    cli_compile.register(commands)
    cli_sg.register(commands)
    cli_models.register(commands)
    return parser


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def _build(args) -> int:
    from instret.teaching.build import build_corpus
    from instret.corpus.clustering import DEFAULT_CLUSTER_SIZE, CorpusBuilder, default_clusterer
    from instret.lm.config import load_settings
    from instret.data import SAMPLE_GSM8K
    from instret.corpus.embedders import make_embedder
    from instret.cli.inputs import load_data
    from instret.data.loaders import holdout_split
    settings = load_settings(args.config, teacher=args.teacher, teacher_api_base=args.teacher_api_base,
                             embedder=args.embedder, embedder_api_base=args.embedder_api_base,
                             teacher_max_tokens=args.teacher_max_tokens)
    train = args.train or [str(SAMPLE_GSM8K)]
    domain = args.domain or ("grade-school math" if not args.train else None)
    if not domain:
        raise ValueError("--domain is required with --train (e.g. --domain math)")
    out = Path(args.out or Path("corpora") / (Path(train[0]).stem if args.train else "gsm8k-sample"))
    loaded = load_data(train, args)
    print(loaded.summary())
    for bad in loaded.bad_rows[:20]:
        print(f"  skipped {bad}")
    questions, split = loaded.questions, None
    if args.holdout_fraction:
        questions, held_out = holdout_split(questions, holdout_fraction=args.holdout_fraction)
        split = {"holdout_fraction": args.holdout_fraction, "method": "instret.holdout_split",
                 "held_out_question_ids": [q.id for q in held_out]}
        print(f"holding out {len(held_out)} questions for evaluation; building from {len(questions)}")
    embedder = make_embedder(settings.embedder)
    clusterer, cluster_size = None, args.cluster_size
    if args.min_cluster_size:  # the default clusterer with another HDBSCAN setting, still size-bounded
        clusterer = default_clusterer(len(questions))
        clusterer.min_cluster_size = args.min_cluster_size
        cluster_size = cluster_size or (None if args.guides else DEFAULT_CLUSTER_SIZE)
    builder = CorpusBuilder(embedder=embedder, clusterer=clusterer, outliers=args.outliers,
                            cluster_size=cluster_size, n_guides=args.guides, random_state=args.random_state)

    def show_plan(plan) -> bool:  # after clustering, before the teacher is called
        print(plan.describe(), flush=True)
        return not args.dry_run

    report = build_corpus(questions, out, domain=domain, teacher=settings.teacher,
                          embedder=embedder, builder=builder, style=args.style,
                          examples_per_guide=args.examples_per_guide, threads=args.threads,
                          store_url=args.chroma_url, sources=train, split=split, progress=not args.no_progress,
                          on_plan=show_plan)
    if getattr(builder, "note_", None):
        print(f"note: {builder.note_}")
    print(f"{out}: {report.n_questions} questions → {report.n_clusters} clusters "
          f"({report.outlier_fraction:.1%} HDBSCAN noise, outliers: {args.outliers}); "
          f"embedded {report.n_embedded} new texts ({report.n_embeddings_from_cache} from cache); "
          f"guides: {report.guides_written} written now, {report.guides_reused} kept from before, "
          f"{len(report.failures)} failed.")
    if report.stage_seconds:
        print("time: " + ", ".join(f"{stage.replace('_', ' ')} {_duration(seconds)}"
                                   for stage, seconds in report.stage_seconds.items()))
    for guide_id, leaks in report.leaky_guides.items():
        print(f"  warning: {guide_id} may be tied to particular questions: {'; '.join(leaks)}")
    writing = report.guide_writing
    if writing.get("recovery"):
        print(f"teacher {writing['teacher']}: guides by recovery path: "
              + ", ".join(f"{path} {n}" for path, n in writing["recovery"].items())
              + f"; {writing['prompt_tokens']:,} prompt and {writing['completion_tokens']:,} completion tokens")
    if report.complete:
        print(f"Done. See it with `instret corpus show {out}` and `instret corpus map {out} -o map.png`.")
        return 0
    if args.dry_run:
        print(f"Dry run: no teacher called. See the clusters with `instret corpus show {out}`; run again "
              "without --dry-run (and with the same clustering options) to write the guides.")
        return 0
    missing = report.n_clusters - report.guides_written - report.guides_reused
    print(f"\n{missing} of {report.n_clusters} guides are still missing.", file=sys.stderr)
    if report.teacher_problem:
        print(f"The teacher ({settings.teacher.model}) could not be reached: {report.teacher_problem}", file=sys.stderr)
    skipped = [guide_id for guide_id, reason in report.failures.items() if reason.startswith("skipped")]
    for guide_id, reason in report.failures.items():  # each once, whole, with where its replies are kept
        if guide_id not in skipped:
            print(f"  {guide_id}: {reason}", file=sys.stderr)
    if skipped:
        print(f"  {len(skipped)} more were not asked: the teacher could not be reached", file=sys.stderr)
    print("Everything else is saved; run the same command again to write only the missing guides.", file=sys.stderr)
    return EXIT_INCOMPLETE


def _show(args) -> int:
    from instret.corpus.corpus import Corpus

    print(Corpus.open(args.corpus).describe(examples=args.examples))
    return 0


def _map(args) -> int:
    from instret.corpus.corpus import Corpus

    path = Corpus.open(args.corpus).draw_map(args.output)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
