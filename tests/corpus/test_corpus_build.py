"""The whole corpus build on 200 real GSM8K questions: real embedder, UMAP, HDBSCAN and Chroma."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.scripted import guide_response, scripted_lm

from instret import Corpus, CorpusBuilder, EmbedderMismatchError, Manifest, build_corpus
from instret.teaching.build import JOURNAL
from instret.corpus.clustering import GENERAL
from instret.data import SAMPLE_GSM8K

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_questions, embedder):
    folder = tmp_path_factory.mktemp("corpus")
    lm, engine = scripted_lm(guide_response)
    first = build_corpus(sample_questions, folder, domain="grade-school math", teacher=lm, embedder=embedder,
                         sources=[str(SAMPLE_GSM8K)], progress=False)
    calls_after_first = engine.calls
    second = build_corpus(sample_questions, folder, domain="grade-school math", teacher=lm, embedder=embedder,
                          sources=[str(SAMPLE_GSM8K)], progress=False)
    return folder, first, second, calls_after_first, engine


def test_one_guide_per_cluster(built):
    folder, first, _, calls, _ = built
    corpus = Corpus.open(folder)
    guides = corpus.guides()
    assert first.complete and first.n_clusters >= 2
    assert calls == first.n_clusters == len(guides)
    members = [qid for g in guides for qid in g.question_ids]
    assert len(members) == len(set(members)) == 200  # "nearest" policy: every question has exactly one guide
    assert corpus.store.count("questions") == 200
    assert all(len(g.guide.procedure) >= 3 and g.centroid.shape == (384,) for g in guides)


def test_manifest_records_the_build(built, sample_questions):
    folder, first, _, _, _ = built
    manifest = Manifest.load(folder)
    assert manifest.embedder_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest.embedder_dimension == 384
    assert manifest.teacher == {"model": "scripted/teacher"}
    assert manifest.guide_style == "concise"
    assert manifest.question_ids == [q.id for q in sample_questions]
    assert manifest.sources[0]["path"] == str(SAMPLE_GSM8K) and len(manifest.sources[0]["sha256"]) == 64
    assert manifest.clustering["outliers"] == "nearest"
    assert manifest.clustering["reducer"]["class"] == "umap.umap_.UMAP"
    assert manifest.clustering["clusterer"]["class"].startswith("hdbscan")
    assert manifest.clustering["outlier_fraction"] == pytest.approx(first.outlier_fraction)
    assert sum(manifest.clustering["cluster_sizes"].values()) == 200
    assert manifest.complete and manifest.n_guides == first.n_clusters


def test_second_run_asks_and_embeds_nothing(built):
    _, first, second, calls, engine = built
    assert first.n_embedded == 200 + first.n_clusters  # questions, then guide texts
    assert second.n_embedded == 0
    assert second.clustering_reused
    assert engine.calls == calls  # zero teacher calls
    assert second.guides_written == 0 and second.guides_reused == first.n_clusters


def test_build_leaves_its_embedding_cache_closed(built):
    """Closed when the build returns, not at garbage collection: no -wal file is left to vanish later."""
    folder = built[0]
    assert (folder / "embeddings.sqlite").exists()
    assert not (folder / "embeddings.sqlite-wal").exists()


def test_teacher_prompt_holds_typical_questions_with_solutions(built):
    _, _, _, _, engine = built
    prompt = engine.prompts[0]
    assert "Worked solution:" in prompt and "####" in prompt
    assert "grade-school math" in prompt


def test_resume_after_teacher_failure(tmp_path, sample_questions, embedder):
    failing, failing_engine = scripted_lm(guide_response, fail_after=2)
    partial = build_corpus(sample_questions, tmp_path, domain="math", teacher=failing, embedder=embedder,
                           threads=1, progress=False)
    assert not partial.complete and partial.guides_written == 2
    assert "scripted teacher is down" in partial.teacher_problem
    assert len(partial.failures) == partial.n_clusters - 2  # one failed, the rest were not even asked
    assert Corpus.open(tmp_path).store.count() == 2
    assert not Manifest.load(tmp_path).complete

    working, engine = scripted_lm(guide_response)
    resumed = build_corpus(sample_questions, tmp_path, domain="math", teacher=working, embedder=embedder,
                           progress=False)
    assert resumed.complete
    assert engine.calls == resumed.n_clusters - 2  # finished guides are never asked again
    journal_ids = [json.loads(line)["guide_id"] for line in (tmp_path / JOURNAL).read_text().splitlines()]
    assert len(journal_ids) == len(set(journal_ids)) == resumed.n_clusters
    assert Corpus.open(tmp_path).store.count() == resumed.n_clusters


def test_resume_after_sigkill(tmp_path, sample_questions, embedder):
    worker = subprocess.Popen([sys.executable, str(Path(__file__).parents[1] / "helpers" / "build_worker.py"), str(tmp_path), "1.5"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / JOURNAL
    deadline = time.time() + 240
    while time.time() < deadline and worker.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    assert worker.poll() is None, "the build finished before it could be killed"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    finished_before = len(journal.read_text().splitlines())
    assert finished_before >= 2

    lm, engine = scripted_lm(guide_response)
    report = build_corpus(sample_questions, tmp_path, domain="grade-school math", teacher=lm, embedder=embedder,
                          progress=False)
    assert report.complete
    assert engine.calls == report.n_clusters - finished_before
    assert report.n_embedded <= report.n_clusters  # questions came from the killed run's cache
    assert Corpus.open(tmp_path).store.count() == report.n_clusters
    assert Manifest.load(tmp_path).complete


def test_embedder_mismatch_is_refused(built, sample_questions):
    folder, *_ = built

    class OtherEmbedder:
        id = "sentence-transformers/some-other-model"

        def encode(self, texts):
            return np.ones((len(texts), 8), dtype=np.float32)

    with pytest.raises(EmbedderMismatchError, match="all-MiniLM-L6-v2.*some-other-model"):
        Corpus.open(folder, embedder_id=OtherEmbedder.id)
    lm, _ = scripted_lm(guide_response)
    with pytest.raises(EmbedderMismatchError):
        build_corpus(sample_questions, folder, domain="math", teacher=lm, embedder=OtherEmbedder(), progress=False)


def test_general_bucket_and_swapped_clusterer(tmp_path, sample_questions, embedder):
    from sklearn.cluster import KMeans

    lm, _ = scripted_lm(guide_response)
    general = build_corpus(sample_questions, tmp_path / "general", domain="math", teacher=lm, embedder=embedder,
                           builder=CorpusBuilder(embedder=embedder, outliers="general", map_reducer=None),
                           progress=False)
    labels = [g.cluster_label for g in Corpus.open(tmp_path / "general").guides()]
    assert GENERAL in labels and general.outlier_fraction > 0
    general_size = next(len(g.question_ids) for g in Corpus.open(tmp_path / "general").guides()
                        if g.cluster_label == GENERAL)
    assert general_size == round(general.outlier_fraction * 200)

    kmeans = build_corpus(sample_questions, tmp_path / "kmeans", domain="math", teacher=lm, embedder=embedder,
                          builder=CorpusBuilder(embedder=embedder, clusterer=KMeans(n_clusters=4, n_init=3,
                                                                                    random_state=0)),
                          progress=False)
    assert kmeans.n_clusters == 4 and kmeans.outlier_fraction == 0
    assert Manifest.load(tmp_path / "kmeans").clustering["clusterer"]["n_clusters"] == 4


def test_show_and_map(built, tmp_path):
    folder, first, *_ = built
    corpus = Corpus.open(folder)
    text = corpus.describe()
    assert text.count("Solving problems like") == first.n_clusters
    assert "200 questions" in text and "HDBSCAN noise" in text
    png = corpus.draw_map(tmp_path / "map.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
