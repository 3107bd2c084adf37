"""The notebooks run top to bottom against the loopback model server, and as a new user first meets
them: with no model server at all."""

import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from helpers import FIXTURES, free_port
from helpers.loopback import LoopbackServer, answers
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from helpers.scripted import guide_response, scripted_lm

from instret import build_corpus

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


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
    assert "new texts (200 from cache)" in outputs  # the builder's vectors were reused; only guides are new
    assert (tmp_path / "map.png").stat().st_size > 10_000
    assert (tmp_path / "corpus" / "guide_writer.json").exists()  # in the corpus folder, not beside the notebook
    assert len(chats) >= 1  # the guides really came over HTTP from the (loopback) Ollama server


def _outputs(notebook) -> str:
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) + "".join(o.get("traceback", []))
                     for c in notebook.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
def test_build_corpus_notebook_with_no_server(tmp_path, monkeypatch):
    """Offline, notebook 01 asks the teacher once, skips its cells, and leaves nothing in git's view."""
    port = free_port()  # bound and released: nothing listens there
    monkeypatch.setenv("INSTRET_TEACHER", "ollama_chat/qwen2.5:14b")
    monkeypatch.setenv("INSTRET_TEACHER_API_BASE", f"http://127.0.0.1:{port}")
    notebook = nbformat.read(NOTEBOOKS / "01-build-corpus.ipynb", as_version=4)
    started = time.monotonic()
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.monotonic() - started
    outputs = _outputs(notebook)
    assert f"no Ollama server answers at http://127.0.0.1:{port}" in outputs
    assert "Skipped: the teacher cannot answer" in outputs
    assert "embedded 0 new texts (200 from cache)" in outputs  # the 200 questions were embedded once
    assert "Traceback" not in outputs and "Failed to run or to evaluate" not in outputs
    assert len(outputs) < 12_000, f"{len(outputs)} characters of output"  # the map's describe() is most of it
    assert seconds < 240, seconds  # no retries against the dead server (before: 43 s of them)
    assert not (tmp_path / "guide_writer.json").exists()
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert written <= {"corpora", "map.png"}, written  # corpora/ and *.png are git-ignored
    ignored = subprocess.run(["git", "check-ignore", "notebooks/corpora/x/manifest.json", "notebooks/map.png"],
                             cwd=NOTEBOOKS.parent, capture_output=True, text=True)
    assert ignored.stdout.split() == ["notebooks/corpora/x/manifest.json", "notebooks/map.png"]


@pytest.mark.slow
def test_answer_notebook_on_a_corpus_without_guides_says_how_to_finish_it(tmp_path, monkeypatch, sample_questions,
                                                                           embedder):
    """Notebook 02 on what the main job leaves with no server: clusters, no guides."""
    from instret.data import SAMPLE_GSM8K
    from instret.lm.spec import ModelSpec

    report = build_corpus(sample_questions, tmp_path / "corpus", domain="grade-school math", embedder=embedder,
                          teacher=ModelSpec("ollama_chat/qwen2.5:14b", api_base=f"http://127.0.0.1:{free_port()}"),
                          sources=[str(SAMPLE_GSM8K)], progress=False)
    assert report.guides_written + report.guides_reused == 0
    monkeypatch.setenv("INSTRET_NOTEBOOK_CORPUS", str(tmp_path / "corpus"))
    notebook = nbformat.read(NOTEBOOKS / "02-answer-evaluate-compile.ipynb", as_version=4)
    with pytest.raises(CellExecutionError) as failed:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    message = str(failed.value)
    assert f"corpus {tmp_path / 'corpus'} has no guides yet" in message
    assert f"instret corpus build --out {tmp_path / 'corpus'}" in message and "reshape" not in message


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
