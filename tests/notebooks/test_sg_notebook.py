"""Notebook 03 runs top to bottom offline: guide and solver on the loopback server (each set by its
model string), dspy.Evaluate, save/load under other models, and dspy.BootstrapFinetune fine-tuning
a tiny local guide model on this CPU, then serving it with the embedded engine."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from helpers.loopback import LoopbackServer
from nbclient import NotebookClient
from helpers.sg import GOOD_GUIDANCE, answer_reply, field_of, guidance_reply
from helpers.sg_tiny import make_tiny_model, write_tiny_gguf

pytest.importorskip("peft")
pytest.importorskip("xllamacpp")

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "03-solution-guidance.ipynb"


@pytest.mark.slow
def test_solution_guidance_notebook(tmp_path, monkeypatch):
    from instret.data import SAMPLE_GSM8K

    golds = {json.loads(line)["question"]: json.loads(line)["answer"].rsplit("####", 1)[1].strip()
             for line in Path(SAMPLE_GSM8K).read_text().splitlines()}

    def respond(request):
        if request.model == "guide":
            return guidance_reply(GOOD_GUIDANCE)
        return answer_reply(golds.get(field_of(request.user, "question"), "0"))

    hf = make_tiny_model(tmp_path / "tiny")
    base_gguf = write_tiny_gguf(hf, tmp_path / "tiny.gguf")
    with LoopbackServer(models=["guide", "solver"], responder=respond) as server:
        for name, value in {"INSTRET_NOTEBOOK_GUIDE": "openai/guide", "INSTRET_NOTEBOOK_SOLVER": "openai/solver",
                            "INSTRET_NOTEBOOK_API_BASE": server.url + "/v1", "INSTRET_NOTEBOOK_GUIDE_BASE": str(hf),
                            "INSTRET_NOTEBOOK_BASE_GGUF": str(base_gguf), "INSTRET_NOTEBOOK_N": "4",
                            "INSTRET_NOTEBOOK_EPOCHS": "1", "INSTRET_CACHE": str(tmp_path / "cache"),
                            "INSTRET_OFFLINE": "1", "DSPY_CACHEDIR": str(tmp_path / "dspy-cache")}.items():
            monkeypatch.setenv(name, value)
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        solver_calls = [r for r in server.requests_for("/v1/chat/completions") if r.body.get("model") == "solver"]
    outputs = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "guide tokens: {'prompt_tokens'" in outputs
    assert "accuracy 100.0%, valid guidance 100.0%" in outputs
    assert "openai/solver plans; openai/guide solves" in outputs
    assert f"fine-tuned guide: local/{base_gguf}+" in outputs and "adapter.gguf" in outputs
    assert "fine-tuned guide: accuracy" in outputs
    assert (tmp_path / "sgft-notebook" / "adapter" / "adapter_config.json").exists()
    # Evaluate (its second pass is cached) and the bootstrap traces. The tuned tiny guide writes random
    # tokens, which llama.cpp's server may refuse to parse as a chat reply (HTTP 500): Evaluate counts
    # those as errors, so the solver calls after the tuned guide are not counted on here.
    assert len(solver_calls) >= 8, outputs
