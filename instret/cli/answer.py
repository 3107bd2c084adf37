"""`instret answer`, `instret eval`. Heavy imports stay inside the command functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

METHOD_NAMES = ("zero_shot", "cot", "passage_rag", "generic_guide", "instruction_retrieval",
                "quest_cot", "first_step", "on_uncertainty", "teacher_check", "first_error", "cascade",
                "teacher_cot", "solution_guidance")
#: The teacher's verdict designs (`instret.programs.verdicts.VERDICTS`; a test keeps them alike).
VERDICT_NAMES = ("yes_no", "score", "recompute", "final_answer")


def register(commands) -> None:
    """Add this module's subcommands to the `instret` parser."""
    from instret.cli.inputs import add_data_options

    answer = commands.add_parser("answer", help="retrieve guides for one question and answer it with a student")
    _common(answer)
    answer.add_argument("question", help="the question text")
    answer.add_argument("--option", action="append", default=[], metavar="LETTER=TEXT",
                        help="a multiple-choice option, repeated: --option 'A=Aspirin' --option 'B=...'")
    answer.add_argument("--method", default="instruction_retrieval", type=_method, metavar="METHOD",
                        help=f"one of {', '.join(METHOD_NAMES)}; a variant sets its main option: first_step@2 "
                             "(teacher steps), on_uncertainty@0.7 and teacher_check@0.7 (threshold), "
                             "first_error@2 (rounds), cascade@0.7 (accept)")
    answer.add_argument("--program", help="compiled program JSON to load (from `instret compile`)")
    answer.add_argument("--teacher", help="teacher model for the methods that need one (first_step, teacher_cot ...)")
    answer.add_argument("--teacher-api-base")
    _intervention_options(answer)
    answer.set_defaults(run=_answer)

    evaluate = commands.add_parser("eval", help="compare methods × students on a test set")
    _common(evaluate)
    evaluate.add_argument("--test", required=True, action="append", help="test file(s), any format `corpus build` reads")
    add_data_options(evaluate)
    evaluate.add_argument("--students", help="comma-separated student model strings (instead of --student), each "
                                             "optionally with its own server: ollama_chat/qwen2.5:3b@http://gpu1:11434")
    evaluate.add_argument("--methods", default="zero_shot,cot,instruction_retrieval",
                          help=f"comma-separated, from: {', '.join(METHOD_NAMES)}")
    evaluate.add_argument("--limit", type=int, help="evaluate the first N questions")
    evaluate.add_argument("--holdout", action="store_true",
                          help="use only the questions the corpus recorded as held out (MMLU law)")
    evaluate.add_argument("--program", action="append", default=[], metavar="METHOD=FILE",
                          help="load a compiled program for a method, e.g. instruction_retrieval=compiled.json")
    evaluate.add_argument("--teacher", help="teacher model for two-model methods (its tokens are counted apart)")
    evaluate.add_argument("--teacher-api-base")
    evaluate.add_argument("--teacher-max-tokens", type=_positive, help="most tokens a teacher reply may take")
    evaluate.add_argument("--teacher-steps", metavar="K[,K...]",
                          help="first_step: steps the teacher writes; several values give one method each "
                               "(first_step@1, first_step@2 ...; default 1)")
    evaluate.add_argument("--threshold", metavar="T[,T...]",
                          help="on_uncertainty: the teacher rewrites a student step whose mean token probability "
                               "is under T (default 0.9); teacher_check: whose verdict is under T (default 0.5); "
                               "several values give one method each (on_uncertainty@0.7, teacher_check@0.7 ...)")
    _intervention_options(evaluate)
    evaluate.add_argument("--sg-data", metavar="FOLDER",
                          help="solution_guidance: the SG data the guide model was fine-tuned on; its teacher "
                               "tokens count, amortised over the questions, as the corpus's guides do for "
                               "instruction_retrieval")
    evaluate.add_argument("--threads", type=int, default=16)
    evaluate.add_argument("--out", help="results folder (default: runs/<corpus name>-<test file name>)")
    evaluate.add_argument("--price", type=_price, metavar="input=X,cached=Y,output=Z",
                          help="the teacher's price in USD per million tokens read and computed, read from the "
                               "server's prompt cache, and written (default: litellm's cost map for a hosted "
                               "teacher; for a local, Ollama or other self-hosted one the ratio input 1, cached "
                               "0.1, output 4, not dollars)")
    evaluate.add_argument("--cost-axis", choices=("price", "written"), default="price",
                          help="the cost the table's Pareto frontier and the cost chart are on: the teacher's "
                               "price, or the tokens it writes (default: price)")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(run=_eval)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", help="corpus folder (needed by passage_rag and instruction_retrieval)")
    parser.add_argument("--student", help="student model string, e.g. ollama_chat/qwen2.5:3b")
    parser.add_argument("--student-api-base", help="student server URL")
    parser.add_argument("--max-tokens", type=_positive,
                        help="most tokens a student reply may take (default: [student] max_tokens, else 1024)")
    parser.add_argument("--kind", choices=("numeric", "expression", "choice"),
                        help="answer kind (default: from the data, else the corpus domain)")
    parser.add_argument("--k", type=int, default=2, help="guides (or passages) to retrieve")
    parser.add_argument("--mode", choices=("guides", "questions"), default="guides",
                        help="match the question against guide texts, or against each guide's member questions")
    parser.add_argument("--min-similarity", type=float, default=0.2,
                        help="cosine similarity under which no guide is given (default 0.2)")
    parser.add_argument("--guide-handoff", choices=("prompt", "reply"),
                        help="instruction_retrieval: the guides go in the student's prompt (default), or there "
                             "and, restated (the best guide's background and procedure), at the start of its "
                             "own reply (needs a server that continues a prefilled reply: llama.cpp, every local/ "
                             "model); instruction_retrieval@reply in --methods is the same")


def _intervention_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--handoff", choices=("reply", "prompt"),
                        help="first_step, on_uncertainty: steps a model did not write start its own reply "
                             "(default; needs a server that continues a prefilled reply: llama.cpp, every "
                             "local/ model), or go in its prompt (any server)")
    parser.add_argument("--max-interventions", type=int, metavar="M",
                        help="on_uncertainty, teacher_check: most steps the teacher rewrites per question (default 3)")
    parser.add_argument("--verdict", choices=VERDICT_NAMES,
                        help="teacher_check: the teacher's verdict on each step (default recompute); cascade: "
                             "on each stage's solution (default yes_no). yes_no and score need a teacher that "
                             "returns token log-probabilities")
    parser.add_argument("--stages", metavar="METHOD[,METHOD...]",
                        help="cascade: the methods tried in turn, the first whose solution the verdict accepts "
                             "answers (default cot,first_error,teacher_cot)")


def _settings(args):
    from instret.lm.config import load_settings

    return load_settings(getattr(args, "config", None), student=args.student, student_api_base=args.student_api_base,
                         teacher=getattr(args, "teacher", None), teacher_api_base=getattr(args, "teacher_api_base", None),
                         student_max_tokens=args.max_tokens, teacher_max_tokens=getattr(args, "teacher_max_tokens", None))


def _price(text: str):
    from instret.evaluation.cost import parse_price

    try:
        return parse_price(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--price: ")) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _open_corpus(args):
    from instret.corpus.corpus import Corpus

    return Corpus.open(args.corpus) if args.corpus else None


def _program(method: str, corpus, kind: str, args, compiled: str | None = None, teacher=None):
    from instret.programs.methods import CorpusNeeded, make_program

    try:
        program = make_program(method, corpus, kind, k=args.k, mode=args.mode, min_similarity=args.min_similarity,
                               teacher=teacher, max_interventions=getattr(args, "max_interventions", None),
                               handoff=getattr(args, "handoff", None), verdict=getattr(args, "verdict", None),
                               stages=getattr(args, "stages", None), guide_handoff=args.guide_handoff)
    except CorpusNeeded as error:  # the library's words name a Python call; a CLI user needs a flag
        raise ValueError(f"--method {error.method} retrieves from a corpus: pass --corpus DIR (a folder "
                         f"`instret corpus build` wrote), or choose a method that needs none, e.g. --method cot") from None
    if compiled:
        program.load(compiled)
    return program


def _answer(args) -> int:
    import dspy
    from dspy.utils.exceptions import LMError

    from instret.lm.models import make_lm
    from instret.data.scoring import kind_of
    from instret.programs.methods import NEEDS_TEACHER

    corpus = _open_corpus(args)
    options = dict(item.split("=", 1) for item in args.option) if args.option else None
    kind = args.kind or ("choice" if options else kind_of(corpus.manifest.domain) if corpus else "numeric")
    settings = _settings(args)
    teacher_spec = settings.teacher if _base(args.method) in NEEDS_TEACHER else None
    program = _program(args.method, corpus, kind, args, args.program,
                       teacher=make_lm(teacher_spec) if teacher_spec else None)
    if not _logprobs_ready([settings.student], [args.method], teacher_spec, args.verdict) or not _models_ready(
            [("student", settings.student)] + ([("teacher", teacher_spec)] if teacher_spec else [])):
        return 1
    try:
        with dspy.context(lm=make_lm(settings.student)):
            prediction = program(question=args.question, options=options)
    except LMError as error:  # e.g. a hosted provider, which no probe checks
        print(f"instret: error: the student {settings.student.model} did not answer: {error}", file=sys.stderr)
        return 1
    ids = list(prediction.get("reference_ids") or [])
    if ids:
        titles = {g.id: g.guide.title for g in corpus.guides()} if corpus else {}
        print("Retrieved guides:")
        for guide_id, score in zip(ids, prediction.get("reference_scores") or []):
            print(f"  {score:.3f}  {titles.get(guide_id, guide_id)}")
    elif args.method == "instruction_retrieval":
        print("No guide was similar enough; the student answered on its own.")
    if prediction.get("teacher_steps"):
        print(f"\nThe teacher's first steps ({teacher_spec.model}):\n{prediction.teacher_steps}")
    if prediction.get("guidance"):
        print(f"\nSolution guidance ({teacher_spec.model}):\n{prediction.guidance}")
    if prediction.get("cascade_stage"):
        print(f"\nAnswered by the cascade's stage {prediction.cascade_stage} (verdicts on the stages before it: "
              f"{', '.join('none' if v is None else f'{v:.2f}' for v in prediction.cascade_verdicts) or 'none'})")
    if prediction.get("rewritten_steps"):
        print(f"\nSteps rewritten by the teacher ({teacher_spec.model}): "
              f"{', '.join(map(str, prediction.rewritten_steps))}")
    if prediction.get("reasoning"):
        writer = teacher_spec.model if _base(args.method) == "teacher_cot" else settings.student.model
        print(f"\nReasoning ({writer}):\n{prediction.reasoning}")
    print(f"\nAnswer: {prediction.answer}")
    return 0


def _test_questions(args, corpus):
    from collections import Counter

    from instret.cli.inputs import load_data
    from instret.evaluation.run import held_out_questions
    from instret.data.scoring import kind_of

    questions = load_data(args.test, args).questions
    if args.holdout:
        questions = held_out_questions(questions, corpus)
    if args.limit:
        questions = questions[:args.limit]
    if not questions:
        raise ValueError("no test questions left to evaluate")
    kind = args.kind or Counter(kind_of(q) for q in questions).most_common(1)[0][0]
    return questions, kind


def _eval(args) -> int:
    from instret.evaluation.cost import default_price
    from instret.evaluation.report import format_table
    from instret.evaluation.run import evaluate
    from instret.evaluation.setup_cost import setup_costs
    from instret.lm.models import make_lm

    corpus = _open_corpus(args)
    questions, kind = _test_questions(args, corpus)
    settings = _settings(args)
    specs = [_student_spec(item, args.student_api_base, settings.student) for item in args.students.split(",")] \
        if args.students else [settings.student]
    methods = _variants([m.strip() for m in args.methods.split(",") if m.strip()], args)
    setup = setup_costs(methods, corpus, args.sg_data)  # a bad --sg-data folder stops here, before any model starts
    teacher_spec = settings.teacher if _wants_teacher(settings, methods) else None
    if not _logprobs_ready(specs, methods, teacher_spec, args.verdict):
        return 1
    if not _models_ready([("student", spec) for spec in specs]  # before a long run, not at question 1
                         + ([("teacher", teacher_spec)] if teacher_spec else [])):
        return 1
    compiled = dict(item.split("=", 1) for item in args.program)
    teacher = make_lm(teacher_spec) if teacher_spec else None  # one object: programs and evaluate count it alike
    programs = {m: _program(m, corpus, kind, args, compiled.get(m, compiled.get(m.split("@", 1)[0])),
                            teacher=teacher) for m in methods}  # first_step=FILE serves every first_step@k
    specs = [_fit_context(spec, programs, questions) for spec in specs]
    name = Path(args.corpus).name if args.corpus else "no-corpus"
    out = Path(args.out or Path("runs") / f"{name}-{Path(args.test[0]).stem}")
    report = evaluate(questions, methods=programs, students={spec.model: make_lm(spec) for spec in specs},
                      kind=kind, out_dir=out, threads=args.threads, corpus=corpus, progress=not args.no_progress,
                      teacher=teacher, setup=setup, price=args.price or default_price(teacher_spec),
                      cost_axis=args.cost_axis)
    print(f"{len(questions)} questions ({kind}); {report.answered_now} answers now, "
          f"{report.answered_before} from an earlier run\n")
    print(format_table(report.summary, args.cost_axis))
    charts = [out / name for name in ("accuracy.png", "teacher_cost.png") if (out / name).exists()]
    print(f"\nEvery answer: {out / 'results.jsonl'}; summary: {out / 'summary.json'}, {out / 'summary.csv'}, "
          f"{', '.join(map(str, charts))}")
    if report.failures:
        print(f"{sum(report.failures.values())} items failed; rerun the same command to ask them again.",
              file=sys.stderr)
        return 3
    return 0


def _student_spec(item: str, default_api_base: str | None, student=None):
    """`MODEL` or `MODEL@API_BASE` (model strings never contain '@'), with the student's cap."""
    from instret.lm.spec import as_spec, with_role_cap

    model, _, api_base = item.strip().partition("@")
    cap = student.max_tokens if student is not None else None
    return with_role_cap(as_spec(model, api_base=api_base or default_api_base, max_tokens=cap), "student")


def _variants(methods: list[str], args) -> list[str]:
    """`--teacher-steps 1,2` and `--threshold 0.5,0.9` turn first_step and on_uncertainty into one
    method per value (first_step@1, first_step@2, on_uncertainty@0.5 ...): one point each on the
    chart of accuracy against teacher tokens."""
    values = {"first_step": args.teacher_steps, "on_uncertainty": args.threshold, "teacher_check": args.threshold}
    expanded = []
    for method in methods:
        listed = [value.strip() for value in (values.get(method) or "").split(",") if value.strip()]
        expanded += [f"{method}@{value}" for value in listed] or [method]
    return expanded


def _logprobs_ready(specs, methods, teacher=None, verdict=None) -> bool:
    """Methods that read token log-probabilities refuse, before the run, a model whose backend
    returns none: the student's for on_uncertainty, the teacher's for a yes_no or score verdict."""
    from instret.lm.steps import LogprobsUnavailable, require_logprobs
    from instret.programs.intervention import NEEDS_LOGPROBS
    from instret.programs.judging import verdict_of

    bases = {m.split("@", 1)[0] for m in methods}
    try:
        for method in sorted(bases & NEEDS_LOGPROBS):
            for spec in specs:
                require_logprobs(spec, method)
        for method in sorted(bases & {"teacher_check", "cascade"}):
            name = verdict_of(method, verdict)
            if teacher is not None and name in ("yes_no", "score"):
                require_logprobs(teacher, f"{method}'s {name} verdict", role="teacher",
                                 instead="--verdict recompute (teacher_check) or --verdict final_answer (cascade)")
    except LogprobsUnavailable as error:
        print(f"instret: error: {error}", file=sys.stderr)
        return False
    return True


def _wants_teacher(settings, methods) -> bool:
    """A teacher LM is built when a method needs one, or the user named one (flag, environment
    or config file); never the default teacher for methods that do not use it."""
    from instret.lm.config import DEFAULT_TEACHER
    from instret.programs.methods import NEEDS_TEACHER

    return bool({m.split("@", 1)[0] for m in methods} & set(NEEDS_TEACHER)) or settings.teacher.model != DEFAULT_TEACHER


def _fit_context(spec, programs: dict, questions, sample: int = 20):
    """Ollama students get a `num_ctx` that holds the longest prompt the programs produce
    (guides + question + demos) on a sample of the questions; Ollama would cut it silently."""
    if spec.backend != "ollama" or spec.num_ctx is not None:
        return spec
    from instret.lm.context import fit_num_ctx, program_prompts

    inputs = [{"question": q.text, "options": q.options} for q in questions[:sample]]
    # Predictors pinned to a teacher (or a guide model) would call it for real while the prompts are
    # measured: unpin them for the measurement, so the stand-in LM answers every predictor.
    pinned = [(predictor, predictor.lm) for program in programs.values() for _, predictor in program.named_predictors()]
    try:
        for predictor, _ in pinned:
            predictor.lm = None
        prompts = [prompt for program in programs.values() for prompt in program_prompts(program, inputs)]
    finally:
        for predictor, lm in pinned:
            predictor.lm = lm
    fitted = fit_num_ctx(spec, prompts, spec.max_tokens or 1024)
    print(f"{spec.model}: num_ctx {fitted.num_ctx} (longest prompt of {len(inputs)} sampled questions)")
    return fitted


def _method(name: str) -> str:
    """A method name, or a variant `method@value` (first_step@2, on_uncertainty@0.7)."""
    if _base(name) not in METHOD_NAMES:
        raise argparse.ArgumentTypeError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}")
    return name


def _base(method: str) -> str:
    return method.split("@", 1)[0]


def _models_ready(named) -> bool:
    """Probe each (role, spec) before any question is asked; print each problem with its fix.

    The role ("student", "teacher") names the settings in the fix: [student] in instret.toml,
    INSTRET_STUDENT_API_BASE."""
    from instret.lm.checks import ensure_models_present

    problems = list(dict.fromkeys(p for role, spec in named for p in ensure_models_present({role: spec})))
    for problem in problems:
        print(f"instret: {problem}", file=sys.stderr)
    return not problems
