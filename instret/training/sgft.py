"""SGFT: LoRA fine-tuning of a small guide model on SG data, on a CPU or a GPU, resumable.

    >>> report = finetune_guide("sg/gsm8k", base="local/qwen2.5-coder-0.5b", out="guides/qwen0.5b-sg")
    >>> report.model_string      # 'local/qwen2.5-coder-0.5b+/…/guides/qwen0.5b-sg/adapter.gguf'

The seed paper fine-tuned with LISA; LoRA (peft) is our substitution: it trains on a CPU, and
its adapter is what vLLM (`--lora-modules`), llama.cpp (`--lora`), Ollama (`ADAPTER`) and
instret's embedded engine serve on top of an unchanged base.

- **Base**: `local/<catalog name>`, a `.gguf` file (transformers reads and dequantizes GGUF;
  needs the `gguf` package) or a Hugging Face model folder.
- **Data**: DSPy's chat fine-tuning format, one `{"messages": [...]}` per line (`instret sg
  data` writes `train.jsonl`; `dspy.BootstrapFinetune` passes the same records). The prompt is
  rendered with the model's own chat template; the loss covers only the last assistant turn,
  the guidance (every prompt token's label is -100).
- **Runs**: seeded (data order, LoRA init, dropout per step), a checkpoint every `save_every`
  steps (adapter, optimizer, schedule, losses), so a run killed anywhere resumes from its last
  checkpoint with the same result; a tqdm bar shows the loss.
- **Outputs** in `out`: `adapter/` (PEFT), `adapter.gguf` (GGUF LoRA, see `lora_gguf`),
  `report.json` (losses, tokens/s, peak memory, wall time) and the model string under which the
  embedded engine serves base + adapter.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from instret.data.files import atomic_write_text, now

CHECKPOINT, ADAPTER, REPORT = "checkpoint", "adapter", "report.json"
IGNORE = -100  # label of a token that is not trained on


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    learning_rate: float = 2e-4
    epochs: int = 3
    batch_size: int = 4
    max_length: int = 1024
    warmup_fraction: float = 0.05
    seed: int = 0
    save_every: int = 25
    # Keep only each layer's input for the backward pass and recompute the rest: the MLP's
    # activations (4,864 wide in Qwen2.5-0.5B) over 4 × 1,024 tokens are most of SGFT's memory.
    gradient_checkpointing: bool = True


@dataclass
class FinetuneReport:
    out: str
    base: str
    examples: int = 0
    steps: int = 0
    resumed_from_step: int = 0
    losses: list[float] = field(default_factory=list)
    train_tokens: int = 0  # tokens run through the model (prompt + guidance), this run
    guidance_tokens: int = 0  # tokens with a loss, this run
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    peak_memory_mb: float = 0.0
    device: str = "cpu"
    settings: dict = field(default_factory=dict)
    adapter_dir: str = ""
    adapter_gguf: str | None = None
    gguf_converter: str | None = None
    model_string: str | None = None
    note: str | None = None
    finished: str = ""


# --- data ----------------------------------------------------------------------------------

def load_chat_data(data) -> list[dict]:
    """Chat records from a folder (its `train.jsonl`), a JSONL file, or a list of dicts; each must
    hold `messages` ending with the assistant's reply. Errors name the file, line and field."""
    if isinstance(data, (list, tuple)):
        records = [(f"record {n}", record) for n, record in enumerate(data, 1)]
    else:
        path = Path(data)
        path = path / "train.jsonl" if path.is_dir() else path
        if not path.exists():
            raise FileNotFoundError(f"{path}: no SG data (write it with `instret sg data ... --out {path.parent}`)")
        records = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append((f"{path}:{line_no}", json.loads(line)))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{line_no}: not JSON ({error.msg})") from None
    for where, record in records:
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{where}: field 'messages' must be a non-empty list of {{role, content}}")
        for turn in messages:
            if not isinstance(turn, dict) or not isinstance(turn.get("content"), str) or "role" not in turn:
                raise ValueError(f"{where}: field 'messages' holds a turn without 'role' and text 'content'")
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"{where}: field 'messages' must end with the assistant's reply (the guidance)")
    if not records:
        raise ValueError("no training records: SG data generation accepted nothing yet")
    return [record for _, record in records]


def encode(record: dict, tokenizer, max_length: int) -> tuple[list[int], list[int]] | None:
    """Token ids of the chat and their labels: -100 on every prompt token, so the loss covers
    only the assistant's last reply. None when truncation would leave no reply token."""
    messages = record["messages"]
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently with and without the reply; "
                         "cannot tell the reply's tokens apart")
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True,
                        truncation=True, max_length=max_length)
    ids = list(encoded["input_ids"])
    labels = [IGNORE if start < len(prompt) else token for token, (start, _) in zip(ids, encoded["offset_mapping"])]
    return (ids, labels) if any(label != IGNORE for label in labels) else None


# --- base model ----------------------------------------------------------------------------

def resolve_base(base: str) -> tuple[str, Path]:
    """("gguf" | "hf", path) of a base named `local/<catalog name>`, `local/<file.gguf>`, a
    `.gguf` path or a Hugging Face model folder. Catalog weights are pulled when missing."""
    name = base[len("local/"):] if base.startswith("local/") else base
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such GGUF file")
        return "gguf", path.resolve()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: not a Hugging Face model folder (no config.json)")
        return "hf", path.resolve()
    from instret.lm.local import catalog

    if name in catalog.CATALOG:
        return "gguf", catalog.cached_path(name) or catalog.pull(name)
    raise FileNotFoundError(f"base model {base!r}: not a catalog name ({', '.join(catalog.CATALOG)}), "
                            f"a .gguf file or a Hugging Face model folder")


def load_base(kind: str, path: Path, device: str):
    """The base model (float32 on a CPU, bfloat16 on a GPU) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    where = {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name} if kind == "gguf" \
        else {"pretrained_model_name_or_path": str(path)}
    tokenizer = AutoTokenizer.from_pretrained(**where)
    model = AutoModelForCausalLM.from_pretrained(**where, dtype=dtype).to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ValueError(f"{path}: the tokenizer has no chat template, so the guide prompt cannot be rendered "
                         f"as the served model will see it")
    return model, tokenizer


# --- training ------------------------------------------------------------------------------

def finetune_guide(data, base: str, out: str | Path, *, settings: LoraSettings = LoraSettings(),
                   base_gguf: str | Path | None = None, export_gguf: bool = True, progress: bool = True,
                   stop_after: int | None = None) -> FinetuneReport:
    """LoRA-fine-tune `base` on the chat records of `data` into `out`, resuming a checkpoint there.

    `base_gguf`: for a Hugging Face folder base, a GGUF of the same model for the embedded
    engine to serve the adapter on (a GGUF base serves itself). `stop_after`: end after that
    many steps of this run, as an interruption would (tests, budgets)."""
    records = load_chat_data(data)  # bad data is reported before torch loads
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kind, path = resolve_base(base)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fingerprint = _fingerprint(records, base, settings)
    model, tokenizer = load_base(kind, path, device)
    examples = [e for e in (encode(r, tokenizer, settings.max_length) for r in records) if e is not None]
    if not examples:
        raise ValueError(f"no record keeps a guidance token within max_length={settings.max_length}")
    torch.manual_seed(settings.seed)  # LoRA's initial weights
    targets = sorted({name.rsplit(".", 1)[-1] for name, _ in model.named_modules()} & set(settings.target_modules))
    model = get_peft_model(model, LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                                             target_modules=targets, task_type="CAUSAL_LM"))
    if settings.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # the name transformers 5 uses now
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    per_epoch = math.ceil(len(examples) / settings.batch_size)
    total = per_epoch * settings.epochs
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    warmup = max(1, int(total * settings.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))))
    report = FinetuneReport(str(out), base, examples=len(examples), steps=total, device=device,
                            settings={**asdict(settings), "target_modules": targets})
    step = _resume(out / CHECKPOINT, fingerprint, model, optimizer, schedule, report)
    report.resumed_from_step = step
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model.train()
    with tqdm(total=total, initial=step, desc="SGFT", unit="step", disable=not progress) as bar:
        while step < total and (stop_after is None or step - report.resumed_from_step < stop_after):
            batch = batch_at(examples, step, settings, tokenizer.pad_token_id, device)
            torch.manual_seed(settings.seed + 1 + step)  # dropout: the same masks after a resume
            loss = guidance_loss(model, batch)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            report.losses.append(round(float(loss.detach()), 5))
            report.train_tokens += int(batch["attention_mask"].sum())
            report.guidance_tokens += int((batch["labels"] != IGNORE).sum())
            bar.set_postfix(loss=f"{report.losses[-1]:.4f}")
            bar.update(1)
            if step % settings.save_every == 0 or step == total:
                _save_checkpoint(out / CHECKPOINT, fingerprint, step, model, optimizer, schedule, report)
    report.seconds = round(time.perf_counter() - started, 3)
    report.tokens_per_second = round(report.train_tokens / report.seconds, 2) if report.seconds else 0.0
    report.peak_memory_mb = _peak_memory_mb(device)
    if step < total:
        report.note = f"stopped at step {step} of {total}; run again to resume from the last checkpoint"
        return report
    model.save_pretrained(out / ADAPTER)
    if export_gguf:
        from instret.training.lora_gguf import export_adapter, served_model_string

        base_config = _write_base_config(model.get_base_model(), out / "base-config")
        report.adapter_gguf, report.gguf_converter = export_adapter(out / ADAPTER, base_config, out / "adapter.gguf")
        serving = path if kind == "gguf" else (Path(base_gguf).resolve() if base_gguf else None)
        report.model_string = served_model_string(base, serving, report.adapter_gguf)
        if report.model_string is None:
            report.note = "pass base_gguf (--base-gguf) to serve this Hugging Face base with its adapter"
    report.adapter_dir = str(out / ADAPTER)
    report.finished = now()
    atomic_write_text(out / REPORT, json.dumps(asdict(report), indent=2) + "\n")
    return report


def _write_base_config(model, folder: Path) -> Path:
    """The base's config.json, which is all the GGUF converter reads of the base. A model read
    from GGUF has no `architectures` (the converter's key to the tensor layout) and carries a
    `gguf` quantization_config the converter refuses: name the class, drop the quantization."""
    config = model.config.to_dict()
    config["architectures"] = [type(model).__name__]
    config.pop("quantization_config", None)
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")
    return folder


def guidance_loss(model, batch: dict):
    """The mean next-token loss over the guidance tokens, as `model(**batch).loss` computes it,
    but with the output layer applied only where a guidance token is predicted.

    Full logits are batch × length × vocabulary floats (4 × 1,024 × 151,936 for Qwen2.5: 2.5 GB,
    several times over with their gradient and softmax), almost all of them over prompt tokens
    whose loss is masked anyway."""
    import torch.nn.functional as F

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True,
                logits_to_keep=1)
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = model.get_output_embeddings()(out.hidden_states[-1][:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


def batch_at(examples, step: int, settings: LoraSettings, pad_id: int, device: str) -> dict:
    """The batch of global step `step`: epoch `step // per_epoch` shuffles with seed + epoch, so
    a resumed run sees exactly the batches an uninterrupted one would."""
    import torch

    per_epoch = math.ceil(len(examples) / settings.batch_size)
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(settings.seed + epoch)).tolist()
    chosen = [examples[i] for i in order[index * settings.batch_size:(index + 1) * settings.batch_size]]
    width = max(len(ids) for ids, _ in chosen)
    ids = [ids + [pad_id] * (width - len(ids)) for ids, _ in chosen]
    labels = [labels + [IGNORE] * (width - len(labels)) for _, labels in chosen]
    mask = [[1] * len(i) + [0] * (width - len(i)) for i, _ in chosen]
    return {name: torch.tensor(value, device=device) for name, value in
            (("input_ids", ids), ("labels", labels), ("attention_mask", mask))}


# --- checkpoints ---------------------------------------------------------------------------

def _fingerprint(records, base: str, settings: LoraSettings) -> str:
    text = json.dumps({"records": records, "base": base, "settings": asdict(settings)}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _save_checkpoint(folder: Path, fingerprint: str, step: int, model, optimizer, schedule, report) -> None:
    """Written beside the old checkpoint and swapped in, so a kill leaves one whole checkpoint."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    temporary = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()}, temporary / "adapter.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, temporary / "optimizer.pt")
    state = {"fingerprint": fingerprint, "step": step, "losses": report.losses}
    (temporary / "state.json").write_text(json.dumps(state))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    temporary.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _resume(folder: Path, fingerprint: str, model, optimizer, schedule, report) -> int:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if not folder.exists() and folder.with_name(folder.name + ".old").exists():
        folder = folder.with_name(folder.name + ".old")  # killed between the two renames
    if not (folder / "state.json").exists():
        return 0
    state = json.loads((folder / "state.json").read_text())
    if state["fingerprint"] != fingerprint:
        raise ValueError(f"{folder.parent} holds a fine-tuning run with other data, base or settings; "
                         f"use another --out folder or delete {folder}")
    set_peft_model_state_dict(model, load_file(folder / "adapter.safetensors"))
    saved = torch.load(folder / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    report.losses = list(state["losses"])
    return int(state["step"])


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


__all__ = ["LoraSettings", "FinetuneReport", "finetune_guide", "load_chat_data", "encode", "resolve_base",
           "guidance_loss"]
