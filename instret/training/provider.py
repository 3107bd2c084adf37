"""Fine-tuning and serving local models as a DSPy provider, so `dspy.BootstrapFinetune` runs on a CPU.

DSPy's own local provider needs SGLang and a GPU, and breaks on current TRL (it passes
`max_seq_length`). `LocalProvider` fine-tunes with instret's SGFT (LoRA with peft +
transformers, on a CPU or a GPU) and serves with the embedded llama.cpp engine:

    >>> guide = finetunable_lm("local/qwen2.5-coder-0.5b", out="guides/qwen0.5b-sg")   # the model to tune
    >>> solver = frozen(make_lm("local/qwen2.5-coder-0.5b"))                          # used, never tuned
    >>> student = SolutionGuidanceQA("numeric", guide=guide, solver=solver)
    >>> teacher = SolutionGuidanceQA("numeric", guide=make_lm("local/qwen2.5-coder-1.5b"), solver=solver)
    >>> tuned = dspy.BootstrapFinetune(metric=guidance_metric("numeric"), multitask=False).compile(
    ...     student, trainset=trainset, teacher=teacher)
    >>> launch_lms(tuned)   # tuned.plan.lm: local/qwen2.5-coder-0.5b+…/adapter.gguf, served

- `finetune` trains a LoRA adapter on the chat records DSPy collected (`finetune_guide`) and
  returns the model string `local/<base>+<adapter.gguf>`; DSPy copies the LM under that name.
- `launch` turns such an LM into one served by the embedded engine (`make_lm(model string)`);
  `kill` stops the engine's servers of that model (DSPy calls it before fine-tuning, to free memory).
- A `frozen` LM's provider returns the model unchanged: in a two-model program only the guide
  model is tuned, though `BootstrapFinetune` asks every predictor's LM.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from pathlib import Path

from dspy.clients.provider import Provider, TrainingJob


class LocalTrainingJob(TrainingJob):
    """A fine-tuning job on this machine; `status()` says where it is, `report` holds the SGFT report."""

    report = None

    def status(self) -> str:
        if not self.done():
            return "running"
        result = self.result()
        return "failed" if isinstance(result, Exception) else "succeeded"


class LocalProvider(Provider):
    """Fine-tunes with SGFT into `out` (default: a folder under the user's cache named by the data
    and base), serves with the embedded engine. `settings`: `LoraSettings`, overridden per job by
    matching `train_kwargs` keys (`epochs`, `rank`, ...); `base_gguf` as in `finetune_guide`."""

    def __init__(self, out: str | Path | None = None, settings=None, base_gguf: str | Path | None = None,
                 frozen: bool = False, progress: bool = True):
        super().__init__()
        self.finetunable = True
        self.TrainingJob = LocalTrainingJob
        self.out, self.settings, self.base_gguf = out, settings, base_gguf
        self.frozen, self.progress = frozen, progress

    @staticmethod
    def is_provider_model(model: str) -> bool:
        return model.startswith("local/")

    def finetune(self, job, model: str, train_data, train_data_format=None, train_kwargs=None) -> str:
        if self.frozen:
            return model
        from instret.training.sgft import LoraSettings, finetune_guide

        chosen = {f.name for f in fields(LoraSettings)}
        settings = self.settings or LoraSettings()
        settings = LoraSettings(**{**settings.__dict__,
                                   **{k: v for k, v in (train_kwargs or {}).items() if k in chosen}})
        out = Path(self.out) if self.out else _default_out(model, train_data, settings)
        report = finetune_guide(train_data, model, out, settings=settings, base_gguf=self.base_gguf,
                                progress=self.progress)
        job.report = report
        if not report.model_string:
            raise RuntimeError(f"fine-tuned {model} into {out}, but the adapter cannot be served: {report.note}")
        return report.model_string

    def launch(self, lm, launch_kwargs=None) -> None:
        """Make `lm` (named `local/...`) an LM served by the embedded engine; nothing for other models."""
        if self.frozen or not lm.model.startswith("local/"):
            return
        from instret.lm.local.engine import parse_local
        from instret.lm.models import make_lm

        try:
            parse_local(lm.model)
        except ValueError as error:
            raise ValueError(f"{lm.model} cannot be served before fine-tuning gives it a GGUF (pass base_gguf for "
                             f"a Hugging Face folder): {error}") from None

        model_string = lm.model
        served = make_lm(model_string, **(launch_kwargs or {}))
        keep = {"provider": lm.provider, "finetuning_model": lm.finetuning_model, "train_kwargs": lm.train_kwargs}
        lm.__dict__.update({**served.__dict__, **keep, "launch_kwargs": {"model_string": model_string}})

    def kill(self, lm, launch_kwargs=None) -> None:
        """Stop the engine's servers of this LM's model, if any run (a frozen model keeps serving)."""
        model_string = (lm.launch_kwargs or {}).get("model_string") or lm.model
        if self.frozen or not model_string.startswith("local/"):
            return
        from instret.lm.local.engine import parse_local, running_servers

        try:
            wanted = parse_local(model_string)
        except ValueError:  # a Hugging Face folder: never served, nothing to stop
            return
        for server in running_servers():
            if server.model == wanted:
                server.stop()


def finetunable_lm(base: str, *, out: str | Path | None = None, settings=None, base_gguf=None, progress: bool = True):
    """A `dspy.LM` for `base` (`local/<catalog name>`, a .gguf file or a Hugging Face folder) that
    `BootstrapFinetune` can fine-tune here. It is served only once launched: a catalog or GGUF
    base at once (`launch_lms`), a Hugging Face folder after fine-tuning (with `base_gguf`)."""
    import dspy

    model = base if base.startswith("local/") else f"local/{base}"
    return dspy.LM(model, finetuning_model=base,
                   provider=LocalProvider(out=out, settings=settings, base_gguf=base_gguf, progress=progress))


def frozen(lm):
    """`lm` marked as not to be fine-tuned: `BootstrapFinetune` gets it back unchanged."""
    lm.provider = LocalProvider(frozen=True)
    return lm


def launch_lms(program) -> None:
    """Launch every distinct LM of `program`'s predictors (after `BootstrapFinetune`)."""
    for lm in {id(p.lm): p.lm for p in program.predictors() if p.lm is not None}.values():
        lm.launch()


def _default_out(model: str, train_data, settings) -> Path:
    from instret.lm.local.catalog import cache_dir

    digest = hashlib.sha256(json.dumps([model, train_data, settings.__dict__], sort_keys=True, default=str)
                            .encode("utf-8")).hexdigest()[:12]
    name = Path(model.removeprefix("local/")).stem.replace("+", "-")
    return cache_dir().parent / "finetunes" / f"{name}-{digest}"


__all__ = ["LocalProvider", "LocalTrainingJob", "finetunable_lm", "frozen", "launch_lms"]
