"""SGFT end to end on a tiny randomly initialised Qwen2 model made here (2 layers, hidden 32):
the loss falls on repeated examples, only guidance tokens are trained on, an interrupted run
resumes to the very result of an uninterrupted one, the adapter is saved, and its GGUF export
matches the base model's GGUF tensors by name and shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("peft")
gguf = pytest.importorskip("gguf")

from helpers.sg_tiny import make_tiny_model, write_tiny_gguf  # noqa: E402

from instret.training.sgft import (ADAPTER, CHECKPOINT, REPORT, LoraSettings, encode, finetune_guide,  # noqa: E402
                                   guidance_loss)

GUIDANCE = "[[ ## guidance ## ]]\nAsked: the total number of clips.\nSteps: 1. Find the clips sold in May.\n\n" \
           "[[ ## completed ## ]]"
RECORDS = [{"messages": [{"role": "system", "content": "Your input fields are: question"},
                         {"role": "user", "content": f"[[ ## question ## ]]\nclips sold in April, case {n}"},
                         {"role": "assistant", "content": GUIDANCE}]} for n in range(4)]
FAST = LoraSettings(rank=4, alpha=8, dropout=0.1, epochs=6, batch_size=2, learning_rate=1e-2, save_every=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    hf = make_tiny_model(folder / "hf")
    return hf, write_tiny_gguf(hf, folder / "tiny.gguf")


@pytest.fixture(autouse=True)
def _offline_converter(tmp_path, monkeypatch):
    """No llama.cpp converter cached and no fetching: the offline GGUF writer is used."""
    monkeypatch.setenv("INSTRET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("INSTRET_OFFLINE", "1")
    monkeypatch.delenv("INSTRET_LLAMA_CPP", raising=False)


def test_only_the_guidance_is_trained_on(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny[0])
    ids, labels = encode(RECORDS[0], tokenizer, max_length=512)
    trained = tokenizer.decode([token for token, label in zip(ids, labels) if label != -100])
    assert trained.startswith(GUIDANCE) and "question" not in trained.replace("[[ ## guidance", "")
    assert labels[:len(ids) // 2] == [-100] * (len(ids) // 2)
    assert encode(RECORDS[0], tokenizer, max_length=10) is None  # truncation left no guidance token


def test_the_guidance_loss_is_the_models_own_loss_and_gradient(tiny):
    """`guidance_loss` applies the output layer to guidance positions only; loss and gradients are
    the ones `model(**batch).loss` gives with the full logits (padding and prompt masked)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny[0]),
                           LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"]))
    ids = torch.randint(0, 100, (3, 20), generator=torch.Generator().manual_seed(0))
    labels, mask = ids.clone(), torch.ones_like(ids)
    labels[:, :12] = -100
    labels[1, 17:], mask[1, 17:] = -100, 0  # a shorter row, padded
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    trainable = [p for p in model.parameters() if p.requires_grad]
    full, ours = model(**batch).loss, guidance_loss(model, batch)
    assert torch.allclose(full, ours, atol=1e-5)
    for a, b in zip(torch.autograd.grad(full, trainable), torch.autograd.grad(ours, trainable)):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """One SGFT run of the tiny model with the offline GGUF writer (no converter cached, no fetching)."""
    hf, base_gguf = tiny
    folder = tmp_path_factory.mktemp("sgft")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTRET_CACHE", str(folder / "cache"))
        patch.setenv("INSTRET_OFFLINE", "1")
        patch.delenv("INSTRET_LLAMA_CPP", raising=False)
        return finetune_guide(RECORDS, str(hf), folder / "run", settings=FAST, base_gguf=base_gguf, progress=False)


def test_loss_falls_adapter_saved_and_gguf_matches_the_base(tiny, trained):
    hf, base_gguf = tiny
    report, tmp_path = trained, Path(trained.out).parent
    assert report.steps == 12 and len(report.losses) == 12
    assert sum(report.losses[-3:]) / 3 < sum(report.losses[:3]) / 3 - 0.2
    assert report.guidance_tokens < report.train_tokens and report.tokens_per_second > 0
    assert (tmp_path / "run" / ADAPTER / "adapter_config.json").exists()
    assert json.loads((tmp_path / "run" / REPORT).read_text())["steps"] == 12
    assert "write_lora_gguf" in report.gguf_converter
    assert report.model_string == f"local/{base_gguf.resolve()}+{report.adapter_gguf}"

    base = {t.name: [int(n) for n in t.shape] for t in gguf.GGUFReader(str(base_gguf)).tensors}
    adapter = {t.name: [int(n) for n in t.shape] for t in gguf.GGUFReader(report.adapter_gguf).tensors}
    targets = {name[:-len(".lora_a")] for name in adapter if name.endswith(".lora_a")}
    assert targets == {f"blk.{b}.{t}.weight" for b in range(2)
                       for t in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    for target in targets:
        (n_in, n_out), a, b = base[target], adapter[f"{target}.lora_a"], adapter[f"{target}.lora_b"]
        assert a == [n_in, FAST.rank] and b == [FAST.rank, n_out], target
    reader = gguf.GGUFReader(report.adapter_gguf)
    assert reader.fields["adapter.lora.alpha"].contents() == FAST.alpha
    assert reader.fields["general.architecture"].contents() == "qwen2"


def test_an_interrupted_run_resumes_to_the_same_result(tiny, tmp_path):
    from safetensors.torch import load_file

    hf, base_gguf = tiny
    settings = LoraSettings(**{**FAST.__dict__, "epochs": 2})
    whole = finetune_guide(RECORDS, str(hf), tmp_path / "whole", settings=settings, export_gguf=False, progress=False)
    first = finetune_guide(RECORDS, str(hf), tmp_path / "cut", settings=settings, export_gguf=False, progress=False,
                           stop_after=3)  # killed after step 3; the last checkpoint is step 2
    assert first.note and not (tmp_path / "cut" / ADAPTER).exists()
    assert json.loads((tmp_path / "cut" / CHECKPOINT / "state.json").read_text())["step"] == 2
    resumed = finetune_guide(RECORDS, str(hf), tmp_path / "cut", settings=settings, export_gguf=False, progress=False)
    assert resumed.resumed_from_step == 2
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-4)
    one, two = (load_file(tmp_path / run / ADAPTER / "adapter_model.safetensors") for run in ("whole", "cut"))
    assert all((one[name] - two[name]).abs().max() < 1e-5 for name in one)
    with pytest.raises(ValueError, match="other data"):
        finetune_guide(RECORDS[:2], str(hf), tmp_path / "cut", settings=settings, export_gguf=False, progress=False)


def test_bad_data_names_the_file_line_and_field(tmp_path):
    from instret.training.sgft import load_chat_data

    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps({"messages": RECORDS[0]["messages"][:2]}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: field 'messages' must end with the assistant"):
        load_chat_data(tmp_path)


def test_llama_cpp_converter_writes_what_the_offline_writer_does(tiny, tmp_path, monkeypatch):
    """Only where llama.cpp's converter is already cached on this machine (never fetched here)."""
    from instret.training.lora_gguf import ConverterUnavailable, converter_dir, run_converter, write_lora_gguf

    monkeypatch.delenv("INSTRET_CACHE")
    try:
        folder = converter_dir(fetch=False)
    except ConverterUnavailable:
        pytest.skip("llama.cpp's converter is not cached (`instret sg finetune` fetches it once)")
    hf, _ = tiny
    run = finetune_guide(RECORDS, str(hf), tmp_path / "run", settings=LoraSettings(**{**FAST.__dict__, "epochs": 1}),
                         export_gguf=False, progress=False)
    from transformers import AutoConfig

    AutoConfig.from_pretrained(hf).save_pretrained(tmp_path / "config")
    run_converter(folder, Path(run.adapter_dir), tmp_path / "config", tmp_path / "theirs.gguf")
    write_lora_gguf(Path(run.adapter_dir), tmp_path / "config", tmp_path / "ours.gguf")
    import numpy as np

    theirs, ours = ({t.name: np.array(t.data) for t in gguf.GGUFReader(str(tmp_path / f)).tensors}
                    for f in ("theirs.gguf", "ours.gguf"))
    assert sorted(theirs) == sorted(ours)
    assert all(theirs[name].shape == ours[name].shape and np.allclose(theirs[name], ours[name]) for name in theirs)


def test_the_engine_serves_base_plus_adapter(tiny, trained):
    """The embedded llama.cpp engine loads the tiny base, and the adapter changes what it writes."""
    pytest.importorskip("xllamacpp")
    from instret.lm.local.engine import parse_local, running_servers
    from instret.lm.models import make_lm

    base = make_lm(f"local/{tiny[1]}", max_tokens=12, temperature=0)
    tuned = make_lm(trained.model_string, max_tokens=12, temperature=0)
    try:
        assert base("Asked: the total number") != tuned("Asked: the total number")
    finally:
        for server in running_servers():
            if server.model in (parse_local(f"local/{tiny[1]}"), parse_local(trained.model_string)):
                server.stop()


def test_the_converter_is_told_the_architecture_of_a_gguf_loaded_base(tmp_path):
    """transformers reads a GGUF into a config with no `architectures` and a `gguf` quantization_config;
    llama.cpp's converter needs the first and refuses the second."""
    from types import SimpleNamespace

    from instret.training.sgft import _write_base_config

    class Qwen2ForCausalLM:
        config = SimpleNamespace(to_dict=lambda: {"model_type": "qwen2", "quantization_config": {"quant_method": "gguf"}})

    written = json.loads((_write_base_config(Qwen2ForCausalLM(), tmp_path) / "config.json").read_text())
    assert written == {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}


def test_activations_are_checkpointed_unless_turned_off(tiny, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    enabled = []
    original = PreTrainedModel.activation_checkpointing_enable
    monkeypatch.setattr(PreTrainedModel, "activation_checkpointing_enable",
                        lambda self, **kwargs: enabled.append(kwargs) or original(self, **kwargs))
    for on in (True, False):
        settings = LoraSettings(**{**FAST.__dict__, "gradient_checkpointing": on})
        finetune_guide(RECORDS, str(tiny[0]), tmp_path / str(on), settings=settings, base_gguf=tiny[1],
                       export_gguf=False, progress=False, stop_after=1)
    assert enabled == [{"activation_checkpointing_kwargs": {"use_reentrant": False}}]
