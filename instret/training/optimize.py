"""Compile answering programs per domain with DSPy optimizers, and save them as JSON.

    >>> program = make_method("instruction_retrieval", corpus, kind="choice")
    >>> compiled = compile_program(program, trainset_from(questions), kind="choice", optimizer="mipro",
    ...                            student=make_lm("ollama_chat/qwen2.5:3b"))
    >>> save_program(compiled, "programs/medqa-qwen3b.json")

Saved programs hold instructions and demos only (`program.save(...)` JSON): never a pickle,
an endpoint or a key. Load one into a freshly built program of the same method and run it
under any student with `dspy.context(lm=...)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from instret.data.files import atomic_write_text
from instret.data.questions import Question

OPTIMIZERS = ("bootstrap", "mipro", "gepa")
# Keys that would carry an endpoint or a credential if an LM ever got into a program's state.
_FORBIDDEN_KEYS = {"api_key", "api_base", "base_url", "headers", "extra_headers"}


def trainset_from(questions: Sequence[Question]):
    import dspy

    return [dspy.Example(question=q.text, options=q.options, answer=q.answer).with_inputs("question", "options")
            for q in questions]


def answer_metric(kind: str):
    """Metric for any answering program: 1.0 when the answer scores correct, with feedback for GEPA."""
    import dspy

    from instret.data.scoring import score_answer

    def metric(example, prediction, trace=None, pred_name=None, pred_trace=None):
        scored = score_answer(kind, getattr(prediction, "answer", None), example.answer)
        if pred_name is None:  # BootstrapFewShot and MIPROv2 want a number (a bool while bootstrapping)
            return scored.correct if trace is not None else float(scored.correct)
        feedback = ("Correct." if scored.correct else
                    f"Wrong: answered {scored.parsed!r}, expected {example.answer!r}." if not scored.parse_failed
                    else "The answer could not be parsed: give only the final answer in the answer field.")
        return dspy.Prediction(score=float(scored.correct), feedback=feedback)

    return metric


def make_optimizer(name: str, metric, *, student=None, teacher=None, seed: int = 0, threads: int = 4):
    """Settings only; data goes to `compile`, as in DSPy. Models are passed in, never read from a
    global `dspy.configure`: MIPROv2 proposes with `teacher` (else the student) and runs `student`."""
    import dspy

    if name == "bootstrap":
        return dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=4, max_labeled_demos=4)
    if name == "mipro":
        try:
            import optuna  # noqa: F401  (MIPROv2 searches with it)
        except ImportError:
            raise ImportError("MIPROv2 needs optuna: pip install 'instret[optimize]'") from None
        return dspy.MIPROv2(metric=metric, auto="light", prompt_model=teacher or student, task_model=student,
                            seed=seed, num_threads=threads)
    if name == "gepa":
        if teacher is None:
            raise ValueError("GEPA reflects with a stronger model: pass a teacher (--teacher)")
        return dspy.GEPA(metric=metric, auto="light", reflection_lm=teacher, num_threads=threads, seed=seed)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def compile_program(program, trainset, *, kind: str, optimizer: str = "bootstrap", student, teacher=None,
                    valset=None, seed: int = 0, threads: int = 4):
    """Optimize `program` for `student` (a dspy.LM) on `trainset`; returns the compiled copy."""
    import dspy

    tuner = make_optimizer(optimizer, answer_metric(kind), student=student, teacher=teacher, seed=seed,
                           threads=threads)
    with dspy.context(lm=student):
        if optimizer == "bootstrap":
            return tuner.compile(program, trainset=trainset)
        return tuner.compile(program, trainset=trainset, valset=valset)


def save_program(program, path: str | Path) -> Path:
    """Save the program state as JSON, refusing anything that carries an endpoint or a key."""
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"{path}: save programs as .json (instret never pickles programs)")
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    state = json.loads(path.read_text(encoding="utf-8"))
    for predictor_state in state.values():
        if isinstance(predictor_state, dict) and predictor_state.get("lm") is not None:
            predictor_state["lm"] = None  # a predictor's own LM is configured again after loading
    leaked = _FORBIDDEN_KEYS & set(_all_keys(state))
    if leaked:
        path.unlink()
        raise ValueError(f"refusing to save {path}: the state holds {sorted(leaked)}")
    atomic_write_text(path, json.dumps(state, indent=2, ensure_ascii=False) + "\n")
    return path


def _all_keys(value):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from _all_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _all_keys(inner)
