"""`instret sg data` and `instret sg finetune`: Solution Guidance data and the fine-tuned guide model.

Heavy imports (DSPy, torch, peft) stay inside the command functions, so `instret --help` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(commands) -> None:
    """Add `instret sg ...` to the `instret` parser."""
    from instret.cli.inputs import add_data_options

    sg = commands.add_parser("sg", help="Solution Guidance: SG data and guide-model fine-tuning").add_subparsers(
        title="sg commands")
    data = sg.add_parser("data", help="a teacher writes guidance for training questions; keep what passes the "
                                      "validator and leads a solver to the gold answer")
    data.add_argument("--train", required=True, action="append", help="training questions with gold answers")
    add_data_options(data)
    data.add_argument("--teacher", help="model that writes the guidance, e.g. local/qwen2.5-coder-1.5b")
    data.add_argument("--teacher-api-base")
    data.add_argument("--solver", help="model that answers with the guidance, e.g. local/qwen2.5-coder-0.5b")
    data.add_argument("--solver-api-base")
    data.add_argument("--out", required=True, help="folder for samples.jsonl, train.jsonl and report.json")
    data.add_argument("--limit", type=int, help="use the first N training questions")
    data.add_argument("--kind", choices=("numeric", "expression", "choice"), help="answer kind (default: from the data)")
    data.add_argument("--samples", type=int, default=4, help="most guidance samples tried per question (default 4)")
    data.add_argument("--keep", type=int, default=1, help="accepted samples kept per question (default 1)")
    data.add_argument("--temperature", type=float, default=0.7, help="teacher sampling temperature, above 0")
    data.add_argument("--max-words", type=int, help="longest guidance accepted, in words (default 250)")
    data.add_argument("--from-solution", action="store_true",
                      help="the teacher also reads each question's worked solution (GSM8K's answer text, MATH's "
                           "solution) and turns it into guidance; the training rows prompt with the question alone")
    data.add_argument("--threads", type=int, default=4)
    data.add_argument("--no-progress", action="store_true")
    data.set_defaults(run=_data)

    tune = sg.add_parser("finetune", help="LoRA-fine-tune a small guide model on SG data (CPU or GPU)")
    tune.add_argument("--data", required=True, help="SG data folder (its train.jsonl) or a chat-format JSONL file")
    tune.add_argument("--base", required=True, help="local/<catalog name>, a .gguf file or a Hugging Face folder")
    tune.add_argument("--out", required=True, help="folder for adapter/, adapter.gguf and report.json")
    tune.add_argument("--base-gguf", help="for a Hugging Face base: a GGUF of it, for the embedded engine to serve")
    tune.add_argument("--rank", type=int, default=16)
    tune.add_argument("--alpha", type=int, default=32)
    tune.add_argument("--epochs", type=int, default=3)
    tune.add_argument("--batch-size", type=int, default=4)
    tune.add_argument("--learning-rate", type=float, default=2e-4)
    tune.add_argument("--max-length", type=int, default=1024, help="tokens per example (prompt + guidance)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--save-every", type=int, default=25, help="steps between checkpoints")
    tune.add_argument("--no-gguf", action="store_true", help="skip the GGUF adapter (PEFT adapter only)")
    tune.add_argument("--no-progress", action="store_true")
    tune.set_defaults(run=_finetune)


def _data(args) -> int:
    from collections import Counter

    from instret.cli.inputs import load_data
    from instret.data.guidance import DEFAULT_MAX_WORDS
    from instret.data.scoring import kind_of
    from instret.lm.config import load_settings
    from instret.lm.models import make_lm
    from instret.lm.spec import with_role_cap
    from instret.training.sg_data import generate_sg_data

    questions = load_data(args.train, args).questions[:args.limit or None]
    if not questions:
        raise ValueError("no training questions")
    kind = args.kind or Counter(kind_of(q) for q in questions).most_common(1)[0][0]
    settings = load_settings(getattr(args, "config", None), teacher=args.teacher, teacher_api_base=args.teacher_api_base,
                             student=args.solver, student_api_base=args.solver_api_base)
    teacher, solver = with_role_cap(settings.teacher, "guidance"), settings.student
    from instret.cli.answer import _models_ready

    if not _models_ready([("teacher", teacher), ("student", solver)]):
        return 1
    report = generate_sg_data(questions, teacher=make_lm(teacher), solver=make_lm(solver), kind=kind,
                              out_dir=args.out, samples=args.samples, keep=args.keep, temperature=args.temperature,
                              max_words=args.max_words or DEFAULT_MAX_WORDS, threads=args.threads,
                              progress=not args.no_progress, from_solution=args.from_solution)
    print(report.summary())
    out = Path(args.out)
    print(f"Training data: {out / 'train.jsonl'}; every sample: {out / 'samples.jsonl'}; report: {out / 'report.json'}")
    if report.failed:
        print(f"{sum(report.failed.values())} questions stopped on a failed model call; rerun the same command "
              f"to ask only those again.", file=sys.stderr)
        return 3
    if report.accepted_samples:
        print(f"Next: instret sg finetune --data {out} --base <small guide model> --out <adapter folder>")
    return 0


def _finetune(args) -> int:
    from instret.training.sgft import LoraSettings, finetune_guide, load_chat_data

    load_chat_data(args.data)  # bad or missing data is reported before torch loads
    try:
        import peft  # noqa: F401
    except ImportError:
        print("instret: error: fine-tuning needs the `finetune` extra: pip install 'instret[finetune]'", file=sys.stderr)
        return 2
    settings = LoraSettings(rank=args.rank, alpha=args.alpha, epochs=args.epochs, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, max_length=args.max_length, seed=args.seed,
                            save_every=args.save_every)
    report = finetune_guide(args.data, args.base, args.out, settings=settings, base_gguf=args.base_gguf,
                            export_gguf=not args.no_gguf, progress=not args.no_progress)
    if report.note and not report.finished:
        print(report.note, file=sys.stderr)
        return 3
    print(f"{report.examples} examples, {report.steps} steps on {report.device} in {report.seconds:.0f} s "
          f"({report.tokens_per_second:.0f} tokens/s, peak memory {report.peak_memory_mb:.0f} MB); "
          f"loss {report.losses[0]:.3f} → {report.losses[-1]:.3f}"
          + (f" (resumed at step {report.resumed_from_step})" if report.resumed_from_step else ""))
    print(f"PEFT adapter (vLLM --lora-modules): {report.adapter_dir}")
    if report.adapter_gguf:
        print(f"GGUF adapter (llama.cpp --lora, Ollama ADAPTER): {report.adapter_gguf}, by {report.gguf_converter}")
    if report.model_string:
        print(f"Guide model string: {report.model_string}\nUse it: instret eval --test <file> --student <solver> "
              f"--teacher '{report.model_string}' --methods solution_guidance")
    elif report.note:
        print(report.note)
    return 0
