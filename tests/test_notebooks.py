"""The notebooks run top to bottom against the loopback model server."""

from pathlib import Path

import nbformat
import pytest
from loopback import LoopbackServer
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


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
