"""Solution Guidance end to end on real local models: SG data, SGFT, and what the guidance is worth.

    .venv/bin/python benchmarks/bench_sg.py --train-limit 300 --test-limit 100 --results benchmarks/results/sg.md   # full size: a GPU
    .venv/bin/python benchmarks/bench_sg.py --train-limit 20 --samples 2 --from-solution --test-limit 20   # 2 CPU cores: ~35 min
    .venv/bin/python benchmarks/bench_sg.py --train-limit 2 --samples 2 --test-limit 2 --epochs 1   # smoke run

1. **SG data**: the teacher (`--teacher`, default the 1.5B) writes guidance for the first
   `--train-limit` GSM8K training questions, the solver (0.5B) answers with it: acceptance rate,
   rejections by reason, teacher tokens.
2. **SGFT** of `--base` (the 0.5B) on what was accepted: wall time, training tokens/s, peak
   memory, the loss; and, on the same batches in the same run, LoRA training tokens/s against a
   plain forward + backward of the same model (the target: ≥ 0.8×).
3. **Eval** on the first `--test-limit` GSM8K test questions, all answered by the 0.5B:
   (a) `cot` alone, (b) guidance from the teacher, (c) guidance from the base 0.5B, (d) guidance
   from the fine-tuned 0.5B (base + LoRA adapter in the embedded engine). Accuracy with its 95%
   Wilson interval, exact McNemar against (a) and (c), guide and solver tokens per question.

Every stage resumes (SG samples and eval answers are journaled, SGFT checkpoints): rerun the
same command after an interruption. Nothing is asserted; every figure printed is from this run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `programs` and `signatures` are top-level packages of the repository
GSM8K = REPO.parent / "shared" / "data" / "math" / "gsm8k"
ARMS = {"a": "cot alone", "b": "guidance from the teacher", "c": "guidance from the base guide",
        "d": "guidance from the fine-tuned guide"}


def sg_data(args, questions):
    from instret.lm.models import make_lm
    from instret.lm.spec import as_spec, with_role_cap
    from instret.training.sg_data import generate_sg_data

    started = time.perf_counter()
    report = generate_sg_data(questions, teacher=make_lm(with_role_cap(as_spec(args.teacher), "guidance")),
                              solver=make_lm(with_role_cap(as_spec(args.solver), "student")), kind="numeric",
                              out_dir=args.out / "sg-data", samples=args.samples, threads=args.threads,
                              progress=not args.no_progress, from_solution=args.from_solution)
    print(f"\n## SG data ({args.teacher} writes, {args.solver} solves), {time.perf_counter() - started:.0f} s\n"
          f"{report.summary()}")
    return report


def sgft(args):
    from instret.training.sgft import LoraSettings, finetune_guide

    settings = LoraSettings(rank=args.rank, alpha=2 * args.rank, epochs=args.epochs, batch_size=args.batch_size,
                            max_length=args.max_length, learning_rate=args.learning_rate)
    report = finetune_guide(args.out / "sg-data", args.base, args.out / "guide", settings=settings,
                            progress=not args.no_progress)
    print(f"\n## SGFT of {args.base} on {report.device}\n{report.examples} examples, {report.steps} steps, "
          f"{report.seconds:.0f} s, {report.tokens_per_second:.1f} training tokens/s, peak memory "
          f"{report.peak_memory_mb:.0f} MB, loss {report.losses[0]:.3f} → {report.losses[-1]:.3f}"
          f"{f' (resumed at step {report.resumed_from_step}; time and tokens/s are this run only)' if report.resumed_from_step else ''}")
    print(f"GGUF adapter by {report.gguf_converter}\nguide model: {report.model_string}")
    return report, settings


def lora_against_plain(args, settings, batches: int) -> str:
    """Tokens/s of LoRA training (forward, backward, optimizer step) and of a plain forward +
    backward of the same base model, on the same batches, in this process."""
    import torch
    from peft import LoraConfig, get_peft_model

    from instret.training.sgft import batch_at, encode, guidance_loss, load_base, load_chat_data, resolve_base

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_base(*resolve_base(args.base), device)
    examples = [e for e in (encode(r, tokenizer, settings.max_length) for r in load_chat_data(args.out / "sg-data"))
                if e is not None]
    chosen = [batch_at(examples, step, settings, tokenizer.pad_token_id, device) for step in range(batches)]
    tokens = sum(int(b["attention_mask"].sum()) for b in chosen)

    def timed(run) -> float:
        run(chosen[0])  # warm-up, not timed
        started = time.perf_counter()
        for batch in chosen:
            run(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        return tokens / (time.perf_counter() - started)

    def plain(batch):
        guidance_loss(model, batch).backward()
        model.zero_grad(set_to_none=True)

    plain_rate = timed(plain)
    lora = get_peft_model(model, LoraConfig(r=settings.rank, lora_alpha=settings.alpha, task_type="CAUSAL_LM",
                                            target_modules=list(settings.target_modules)))
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=settings.learning_rate)

    def lora_step(batch):
        guidance_loss(lora, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    lora_rate = timed(lora_step)
    return (f"LoRA training {lora_rate:.1f} tokens/s against a plain forward + backward {plain_rate:.1f} tokens/s "
            f"on the same {batches} batches ({tokens} tokens): {lora_rate / plain_rate:.2f}× (target ≥ 0.8×)")


def evaluate_arms(args, questions, guide_string: str | None) -> dict[str, list[dict]]:
    from instret.evaluation.run import evaluate
    from instret.lm.models import make_lm
    from instret.lm.spec import as_spec, with_role_cap
    from instret.programs.methods import make_program

    solver = make_lm(with_role_cap(as_spec(args.solver), "student"))
    guides = {"b": args.teacher, "c": args.base, "d": guide_string}
    results = {}
    for arm in ARMS:
        if arm != "a" and not guides[arm]:
            continue
        teacher = make_lm(with_role_cap(as_spec(guides[arm]), "guidance")) if arm != "a" else None
        method = "cot" if arm == "a" else "solution_guidance"
        out = args.out / "eval" / arm
        evaluate(questions, methods={method: make_program(method, None, "numeric", teacher=teacher)},
                 students={args.solver: solver}, kind="numeric", out_dir=out, threads=args.threads,
                 teacher=teacher, progress=not args.no_progress)
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
        by_id = {row["question_id"]: row for row in rows}
        results[arm] = [by_id[q.id] for q in questions if q.id in by_id]
    return results


def table(results: dict[str, list[dict]], setup=None) -> str:
    """`setup`: arm -> the one-off teacher cost it carries (the SG data for arm (d)), spread
    evenly over the questions that arm answered, as `instret eval --sg-data` does."""
    from instret.evaluation.stats import mcnemar, wilson_interval

    setup = setup or {}

    def paired(arm, base):
        if base not in results or arm == base:
            return "—"
        common = {r["question_id"] for r in results[arm]} & {r["question_id"] for r in results[base]}
        a = [r["correct"] for r in results[arm] if r["question_id"] in common]
        b = [r["correct"] for r in results[base] if r["question_id"] in common]
        test = mcnemar(a, b)
        return f"{test.difference:+.1%} (p={test.p_value:.3f})"

    lines = ["| arm | accuracy [95% CI] | vs (a) | vs (c) | guide tokens/q (prompt + completion) | solver tokens/q "
             "| SG data teacher tokens/q (amortised) |",
             "|---|---|---|---|---|---|---|"]
    for arm, rows in results.items():
        n, right = len(rows), sum(r["correct"] for r in rows)
        low, high = wilson_interval(right, n)
        guide = sum(r.get("teacher_prompt_tokens", 0) + r.get("teacher_completion_tokens", 0) for r in rows) / max(1, n)
        solver = sum(r.get("prompt_tokens", 0) + r.get("completion_tokens", 0) for r in rows) / max(1, n)
        amortised = setup[arm].tokens / n if arm in setup and n else 0
        lines.append(f"| ({arm}) {ARMS[arm]} | {right}/{n} = {right / max(1, n):.1%} [{low:.1%}, {high:.1%}] | "
                     f"{paired(arm, 'a')} | {paired(arm, 'c')} | {guide:.0f} | {solver:.0f} | {amortised:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="local/qwen2.5-coder-1.5b")
    parser.add_argument("--solver", default="local/qwen2.5-coder-0.5b")
    parser.add_argument("--base", default="local/qwen2.5-coder-0.5b", help="the small guide model to fine-tune")
    parser.add_argument("--train", type=Path, default=GSM8K / "train.jsonl")
    parser.add_argument("--test", type=Path, default=GSM8K / "test.jsonl")
    parser.add_argument("--train-limit", type=int, default=300)
    parser.add_argument("--test-limit", type=int, default=100)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--from-solution", action="store_true",
                        help="the teacher reads each training question's worked solution when writing guidance")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--speed-batches", type=int, default=4, help="batches for the LoRA-against-plain speed check")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs" / "sg")
    parser.add_argument("--results", type=Path, help="also write the report as Markdown here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    from instret.data.loaders import load_questions

    started = time.perf_counter()
    data = sg_data(args, load_questions(str(args.train)).questions[:args.train_limit])
    lines = [f"# Solution Guidance on local models ({datetime.date.today()}, {platform.machine()}, "
             f"{platform.processor() or 'cpu'})", "", f"SG data: {data.summary()}"]
    guide_string = None
    if data.accepted_samples:
        report, settings = sgft(args)
        guide_string = report.model_string
        lines += [f"SGFT: {report.examples} examples, {report.steps} steps on {report.device}, {report.seconds:.0f} s, "
                  f"{report.tokens_per_second:.1f} tokens/s, peak {report.peak_memory_mb:.0f} MB, "
                  f"loss {report.losses[0]:.3f} → {report.losses[-1]:.3f}",
                  lora_against_plain(args, settings, args.speed_batches)]
        print(lines[-1])
    else:
        print("no guidance was accepted: nothing to fine-tune; arm (d) is skipped")
    questions = load_questions(str(args.test)).questions[:args.test_limit]
    results = evaluate_arms(args, questions, guide_string)
    from instret.evaluation.setup_cost import sg_data_cost

    setup = {"d": sg_data_cost(args.out / "sg-data")} if "d" in results else {}
    lines += ["", f"First {len(questions)} GSM8K test questions, all answered by {args.solver}:", "",
              table(results, setup),
              "", f"Total wall time {time.perf_counter() - started:.0f} s."]
    print("\n".join(lines[-5:]))
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
