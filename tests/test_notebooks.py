"""The notebooks run top to bottom against the loopback model server."""

from pathlib import Path

import nbformat
import pytest
from conftest import FIXTURES
from loopback import LoopbackServer, answers
from nbclient import NotebookClient
from scripted import guide_response, scripted_lm

from instret import build_corpus

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


@pytest.fixture(autouse=True)
def fresh_dspy_cache(tmp_path, monkeypatch):
    """The kernel is its own process: give its DSPy disk cache a new folder, so every call is made."""
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy-cache"))


@pytest.mark.slow
def test_build_corpus_notebook(tmp_path, monkeypatch):
    with LoopbackServer(models=("qwen2.5:14b",)) as server:
        monkeypatch.setenv("INSTRET_TEACHER", "ollama_chat/qwen2.5:14b")
        monkeypatch.setenv("INSTRET_TEACHER_API_BASE", server.url)
        monkeypatch.setenv("INSTRET_NOTEBOOK_OUT", str(tmp_path / "corpus"))
        notebook = nbformat.read(NOTEBOOKS / "01-build-corpus.ipynb", as_version=4)
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        chats = server.requests_for("/api/chat")
    outputs = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "teacher OK" in outputs and "clusters" in outputs
    assert (tmp_path / "map.png").stat().st_size > 10_000
    assert (tmp_path / "guide_writer.json").exists()
    assert len(chats) >= 1  # the guides really came over HTTP from the (loopback) Ollama server


@pytest.mark.slow
def test_answer_evaluate_compile_notebook(tmp_path, monkeypatch, sample_questions, embedder):
    lm, _ = scripted_lm(guide_response)
    build_corpus(sample_questions, tmp_path / "corpus", domain="grade-school math", teacher=lm, embedder=embedder,
                 progress=False)
    with LoopbackServer(models=("student",), responder=answers(answer=18.0)) as first, \
            LoopbackServer(models=("other",), responder=answers(answer=18.0)) as second:
        monkeypatch.setenv("INSTRET_STUDENT", "ollama_chat/student")
        monkeypatch.setenv("INSTRET_STUDENT_API_BASE", first.url)
        monkeypatch.setenv("INSTRET_NOTEBOOK_CORPUS", str(tmp_path / "corpus"))
        monkeypatch.setenv("INSTRET_NOTEBOOK_TEST", str(FIXTURES / "data" / "gsm8k_test.jsonl"))
        monkeypatch.setenv("INSTRET_NOTEBOOK_OTHER_STUDENT", "openai/other")
        monkeypatch.setenv("INSTRET_NOTEBOOK_OTHER_API_BASE", second.url + "/v1")
        notebook = nbformat.read(NOTEBOOKS / "02-answer-evaluate-compile.ipynb", as_version=4)
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        asked_first = len(first.requests_for("/api/chat"))
        other_prompts = [r.body["messages"] for r in second.requests_for("/v1/chat/completions")]
    saved = (tmp_path / "compiled-instruction-retrieval.json").read_text()
    assert "api_base" not in saved and first.url not in saved
    assert asked_first >= 12 + 1  # one answer, the evaluation, the bootstrapping
    assert len(other_prompts) == 12 and all(len(m) > 2 for m in other_prompts)  # demos reach the other student
