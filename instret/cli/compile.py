"""`instret compile`: optimize an answering program for a student with a DSPy optimizer. Heavy
imports stay inside the command function."""

from __future__ import annotations

import sys
from pathlib import Path

from instret.cli.answer import (METHOD_NAMES, _base, _common, _logprobs_ready, _method, _models_ready,
                                _open_corpus, _positive, _program, _settings)


def register(commands) -> None:
    """Add `instret compile` to the `instret` parser."""
    from instret.cli.inputs import add_data_options

    compile_ = commands.add_parser("compile", help="optimize an answering program for a student with a DSPy optimizer")
    _common(compile_)
    compile_.add_argument("--train", required=True, action="append", help="training questions with gold answers")
    add_data_options(compile_)
    compile_.add_argument("--optimizer", choices=("bootstrap", "mipro", "gepa"), default="bootstrap")
    compile_.add_argument("--method", default="instruction_retrieval", type=_method, metavar="METHOD",
                          help=f"one of {', '.join(METHOD_NAMES)}, or a variant such as first_step@2")
    compile_.add_argument("--teacher", help="the teacher of two-model methods (first_step, teacher_cot ...), "
                                            "and the proposal/reflection model for MIPROv2 and GEPA")
    compile_.add_argument("--teacher-api-base")
    compile_.add_argument("--teacher-max-tokens", type=_positive, help="most tokens a teacher reply may take")
    compile_.add_argument("--limit", type=int, help="use the first N training questions")
    compile_.add_argument("-o", "--output", help="program JSON (default: <corpus>/compiled/<method>--<student>.json)")
    compile_.set_defaults(run=_compile)


def _compile(args) -> int:
    import dspy

    from instret.cli.inputs import load_data
    from instret.lm.config import DEFAULT_TEACHER
    from instret.lm.models import ModelSpec, make_lm
    from instret.lm.spec import with_role_cap
    from instret.training.optimize import compile_program, save_program, trainset_from
    from instret.data.scoring import kind_of
    from instret.programs.methods import NEEDS_TEACHER

    corpus = _open_corpus(args)
    questions = load_data(args.train, args).questions[:args.limit or None]
    kind = args.kind or kind_of(questions[0])
    settings = _settings(args)
    # Only a teacher the user named (flag, environment or config) proposes or reflects; otherwise
    # MIPROv2 proposes with the student, and GEPA asks for one.
    named = settings.teacher != with_role_cap(ModelSpec(DEFAULT_TEACHER), "teacher")
    teacher = make_lm(settings.teacher) if args.optimizer != "bootstrap" and named else None
    two_model = _base(args.method) in NEEDS_TEACHER  # the program's own teacher: the same --teacher
    program = _program(args.method, corpus, kind, args, teacher=make_lm(settings.teacher) if two_model else None)
    if not _logprobs_ready([settings.student], [args.method]) or not _models_ready(
            [("student", settings.student)] + ([("teacher", settings.teacher)] if teacher or two_model else [])):
        return 1
    runs = _RunsOf(type(program))
    with dspy.context(callbacks=[*dspy.settings.callbacks, runs.callback()]):
        compiled = compile_program(program, trainset_from(questions), kind=kind, optimizer=args.optimizer,
                                   student=make_lm(settings.student), teacher=teacher)
    if runs.failed and not runs.succeeded:
        print(f"instret: error: nothing was compiled: all {runs.failed} runs of the program failed, the last "
              f"with: {runs.last_error}", file=sys.stderr)
        return 1
    folder = Path(args.corpus) / "compiled" if args.corpus else Path("compiled")
    default = folder / f"{args.method}--{settings.student.model.replace('/', '-').replace(':', '-')}.json"
    path = save_program(compiled, args.output or default)
    print(f"wrote {path}; run it with `instret eval ... --program {args.method}={path}` "
          f"or program.load({str(path)!r}) in Python")
    return 0


class _RunsOf:
    """Counts how the runs of a program (and of the copies optimizers make) ended, through a DSPy
    callback: an optimizer logs and skips every failed example, so only this shows that all failed."""

    def __init__(self, program_type: type):
        import threading

        self.program_type = program_type
        self.succeeded = self.failed = 0
        self.last_error: BaseException | None = None
        self._open: set[str] = set()
        self._lock = threading.Lock()

    def callback(self):
        from dspy.utils.callback import BaseCallback

        runs = self

        class Counting(BaseCallback):
            def on_module_start(self, call_id, instance, inputs):
                if isinstance(instance, runs.program_type):
                    with runs._lock:
                        runs._open.add(call_id)

            def on_module_end(self, call_id, outputs, exception=None):
                with runs._lock:
                    if call_id not in runs._open:
                        return
                    runs._open.discard(call_id)
                    if exception is None:
                        runs.succeeded += 1
                    else:
                        runs.failed, runs.last_error = runs.failed + 1, exception

        return Counting()
