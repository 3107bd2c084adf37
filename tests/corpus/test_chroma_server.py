"""A corpus whose guides live on a real `chroma run` server instead of in the corpus folder.

The server is the `chroma` console script installed next to this Python, started on a free
port of 127.0.0.1 with its data in a temporary folder; it needs no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port
from helpers.scripted import guide_response, scripted_lm

from instret import Corpus, Manifest, build_corpus
from instret.corpus.manifest import CHROMA
from instret.data import SAMPLE_GSM8K

pytestmark = pytest.mark.slow

STARTUP_SECONDS = 60


def _http_client(port: int):
    import instret._env  # noqa: F401  (no telemetry)
    import chromadb
    from chromadb.config import Settings

    return chromadb.HttpClient(host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False))


def _wait_for_heartbeat(server: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    last_error = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"`chroma run` exited with {server.returncode} before answering:\n{log.read_text(errors='replace')}")
        try:
            _http_client(port).heartbeat()
            return
        except Exception as error:  # not listening yet
            last_error = error
            time.sleep(0.25)
    pytest.fail(f"`chroma run` did not answer a heartbeat on port {port} within {STARTUP_SECONDS} s "
                f"(last error: {last_error!r}):\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """(port, data folder) of a running `chroma run`; stopped and reaped afterwards."""
    script = Path(sys.executable).with_name("chroma")
    assert script.exists(), f"no `chroma` console script next to {sys.executable}"
    data = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    log = data.parent / f"{data.name}.log"
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1"}
    with log.open("wb") as out:
        server = subprocess.Popen([str(script), "run", "--path", str(data / "db"), "--host", "127.0.0.1",
                                   "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env)
    try:
        _wait_for_heartbeat(server, port, log)
        yield port, data / "db"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


@pytest.fixture(scope="module")
def built_on_server(chroma_server, tmp_path_factory, sample_questions, embedder):
    port, _ = chroma_server
    folder = tmp_path_factory.mktemp("server-corpus")
    url = f"http://127.0.0.1:{port}"
    lm, engine = scripted_lm(guide_response)
    report = build_corpus(sample_questions, folder, domain="grade-school math", teacher=lm, embedder=embedder,
                          store_url=url, sources=[str(SAMPLE_GSM8K)], progress=False)
    return folder, url, report, engine


def test_guides_are_on_the_server(built_on_server):
    folder, url, report, engine = built_on_server
    assert report.complete and report.n_clusters >= 2
    assert engine.calls == report.n_clusters

    name = Manifest.load(folder).store["name"]
    client = _http_client(int(url.rsplit(":", 1)[1]))  # a fresh client: nothing shared with the build
    names = {collection.name for collection in client.list_collections()}
    assert {f"{name}-guides", f"{name}-questions"} <= names
    guides = client.get_collection(f"{name}-guides")
    assert guides.count() == report.n_clusters
    stored = guides.get(include=["metadatas", "documents"])
    assert all(m["title"].startswith("Solving problems like") for m in stored["metadatas"])
    assert sum(m["size"] for m in stored["metadatas"]) == 200
    assert client.get_collection(f"{name}-questions").count() == 200


def test_manifest_points_at_the_server_and_corpus_reads_it_back(built_on_server, embedder):
    folder, url, report, _ = built_on_server
    manifest = Manifest.load(folder)
    assert manifest.store["url"] == url and "path" not in manifest.store
    assert manifest.complete and manifest.n_guides == report.n_clusters

    corpus = Corpus.open(folder)
    guides = corpus.guides()
    assert len(guides) == report.n_clusters
    assert sorted(qid for g in guides for qid in g.question_ids) == sorted(manifest.question_ids)
    assert all(g.centroid.shape == (384,) for g in guides)
    member = guides[0].question_ids[0]
    vector = embedder.encode([corpus.questions()[member].render()])
    [[(hit, similarity, metadata)]] = corpus.store.query(vector, k=1, kind="questions")
    assert (hit, metadata["guide_id"]) == (member, guides[0].id)  # retrieval goes through the server
    assert similarity == pytest.approx(1.0, abs=1e-3)
    assert "Solving problems like" in corpus.describe()


def test_nothing_of_the_store_is_left_in_the_folder(built_on_server, chroma_server):
    folder, *_ = built_on_server
    _, server_data = chroma_server
    assert not (folder / CHROMA).exists()
    assert not any(path.name.endswith(".sqlite3") for path in folder.rglob("*"))  # no embedded Chroma anywhere
    assert server_data.is_dir() and any(server_data.iterdir())  # the server persisted the records itself
