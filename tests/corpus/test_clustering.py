"""CorpusBuilder's default on questions with known topics: recovered, stable on a subsample,
size-bounded by the granularity knob, recorded in the manifest, and sane on tiny inputs."""

import hashlib
import math

import numpy as np
import pytest
from helpers.scripted import guide_response, scripted_lm
from sklearn.metrics import adjusted_rand_score

from instret import CorpusBuilder, Manifest, build_corpus
from instret.corpus.clustering import DEFAULT_CLUSTER_SIZE, SPLIT_FACTOR, params_fingerprint
from instret.data.questions import Question

DIM = 48


class TopicEmbedder:
    """Questions "topic T, question I": a vector near topic T's own direction, noise fixed per text."""

    id = "test/topic-embedder"

    def __init__(self, n_topics: int = 12, noise: float = 0.5):
        rng = np.random.default_rng(7)
        self.centres = rng.normal(size=(n_topics, DIM))
        self.noise = noise

    def vector(self, text: str) -> np.ndarray:
        seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
        noise = np.random.default_rng(seed).normal(size=DIM) / math.sqrt(DIM)
        if not text.startswith("topic "):  # a guide's text: anywhere
            return (noise / np.linalg.norm(noise)).astype(np.float32)
        v = self.centres[int(text.split(",")[0].split()[1])] / math.sqrt(DIM) + self.noise * noise
        return (v / np.linalg.norm(v)).astype(np.float32)

    def encode(self, texts):
        return np.stack([self.vector(t) for t in texts]) if len(texts) else np.zeros((0, DIM), np.float32)


def topic_questions(sizes) -> tuple[list[Question], np.ndarray]:
    questions = [Question(text=f"topic {t}, question {i}", answer="1") for t, size in enumerate(sizes)
                 for i in range(size)]
    return questions, np.array([t for t, size in enumerate(sizes) for _ in range(size)])


@pytest.fixture(scope="module")
def topics():
    """Six topics of 25 to 55 questions: each fits one guide at the default size."""
    questions, truth = topic_questions([25, 32, 40, 47, 55, 30])
    return questions, truth, TopicEmbedder().encode([q.text for q in questions])


@pytest.fixture(scope="module")
def big_topics():
    """Four topics of 150 questions: too many for one guide each."""
    questions, truth = topic_questions([150, 150, 150, 150])
    return questions, truth, TopicEmbedder().encode([q.text for q in questions])


def test_default_recovers_known_topics(topics):
    questions, truth, X = topics
    builder = CorpusBuilder(map_reducer=None).fit(questions, embeddings=X)
    assert builder.n_clusters_ == 6
    assert adjusted_rand_score(truth, builder.labels_) > 0.95
    assert builder.target_cluster_size_ == DEFAULT_CLUSTER_SIZE and builder.n_split_ == 0
    assert sorted(c.size for c in builder.clusters_) == pytest.approx([25, 30, 32, 40, 47, 55], abs=3)


def test_refit_on_a_subsample_agrees_and_does_not_collapse(topics, big_topics):
    for (questions, truth, X), same_clusters in ((topics, True), (big_topics, False)):
        full = CorpusBuilder(map_reducer=None).fit(questions, embeddings=X)
        keep = np.sort(np.random.default_rng(1).permutation(len(questions))[: int(0.9 * len(questions))])
        sub = CorpusBuilder(map_reducer=None).fit([questions[i] for i in keep], embeddings=X[keep])
        assert sub.n_clusters_ >= full.n_clusters_ / 2
        # however a big topic is split, no cluster mixes two topics
        assert all(len(set(truth[keep][sub.labels_ == c])) == 1 for c in set(sub.labels_))
        if same_clusters:
            assert sub.n_clusters_ == full.n_clusters_
            assert adjusted_rand_score(full.labels_[keep], sub.labels_) > 0.95


def test_granularity_knob(big_topics):
    """Documented: about questions / cluster_size guides; no cluster over split_factor × the target."""
    questions, truth, X = big_topics
    counts = {}
    for knob in ({"cluster_size": 20}, {"cluster_size": 60}, {"n_guides": 8}, {}):
        builder = CorpusBuilder(map_reducer=None, **knob).fit(questions, embeddings=X)
        target = builder.target_cluster_size_
        assert target == knob.get("cluster_size") or target == math.ceil(600 / knob.get("n_guides", 600 / DEFAULT_CLUSTER_SIZE))
        assert max(c.size for c in builder.clusters_) <= SPLIT_FACTOR * target
        assert 0.7 * 600 / target <= builder.n_clusters_ <= 1.3 * 600 / target, (knob, builder.n_clusters_)
        assert all(len(set(truth[builder.labels_ == c])) == 1 for c in set(builder.labels_))
        counts[tuple(knob.items())] = builder.n_clusters_
    assert counts[(("cluster_size", 20),)] > counts[()] > counts[(("cluster_size", 60),)]
    assert counts[(("n_guides", 8),)] == 8  # exactly as many as asked


def test_custom_clusterer_is_left_alone_unless_a_size_is_asked(big_topics):
    from sklearn.cluster import KMeans

    questions, _, X = big_topics
    kmeans = CorpusBuilder(clusterer=KMeans(n_clusters=2, n_init=2, random_state=0), map_reducer=None)
    assert kmeans.fit(questions, embeddings=X).n_clusters_ == 2
    bounded = CorpusBuilder(clusterer=KMeans(n_clusters=2, n_init=2, random_state=0), map_reducer=None,
                            cluster_size=100).fit(questions, embeddings=X)
    assert bounded.n_clusters_ == 6 and bounded.n_split_ == 2


def test_bad_knobs_are_refused(topics):
    questions, _, X = topics
    for knob, message in (({"cluster_size": 20, "n_guides": 5}, "not both"), ({"cluster_size": 0}, "cluster_size"),
                          ({"n_guides": 2.5}, "n_guides"), ({"split_factor": 1}, "split_factor")):
        with pytest.raises(ValueError, match=message):
            CorpusBuilder(map_reducer=None, **knob).fit(questions, embeddings=X)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_tiny_inputs_make_one_cluster(n):
    questions, _ = topic_questions([n])
    X = TopicEmbedder().encode([q.text for q in questions])
    builder = CorpusBuilder().fit(questions, embeddings=X)
    assert builder.n_clusters_ == 1 and builder.clusters_[0].size == n
    assert "too few" in builder.note_ and builder.coords_2d_.shape == (n, 2)
    assert np.isfinite(builder.coords_2d_).all()


def test_no_questions_is_a_clear_error():
    with pytest.raises(ValueError, match="no questions"):
        CorpusBuilder().fit([], embeddings=np.zeros((0, DIM), np.float32))


def test_build_records_the_choice_and_a_new_setting_reclusters(tmp_path):
    questions, _ = topic_questions([40, 40, 40])
    embedder = TopicEmbedder()
    lm, engine = scripted_lm(guide_response)
    plans = []

    def build(**knob):
        return build_corpus(questions, tmp_path, domain="math", teacher=lm, embedder=embedder, progress=False,
                            builder=CorpusBuilder(embedder=embedder, map_reducer=None, **knob), on_plan=plans.append)

    first = build()
    clustering = Manifest.load(tmp_path).clustering
    assert clustering["cluster_size"] == clustering["target_cluster_size"] == DEFAULT_CLUSTER_SIZE
    assert clustering["split_factor"] == SPLIT_FACTOR and clustering["clusters_split"] == 0
    assert clustering["clusterer"]["class"].startswith("hdbscan") and clustering["reducer"]["n_components"] == 5
    assert first.n_clusters == 3 and not first.clustering_reused
    assert plans[-1].guides_to_write == 3 and plans[-1].total_prompt_tokens > 3 * 100
    assert "teacher: 3 of 3 guides to write" in plans[-1].describe()

    again = build()
    assert again.clustering_reused and again.teacher_plan is None and len(plans) == 1  # nothing to ask

    finer = build(cluster_size=15)  # 40 > 2 × 15: every topic is split in three
    assert not finer.clustering_reused and finer.n_clusters == 9
    clustering = Manifest.load(tmp_path).clustering
    assert clustering["cluster_size"] == 15 and clustering["clusters_split"] == 3
    assert plans[-1].guides_to_write == 9 and engine.calls == 3 + 9

    by_count = build(n_guides=3)
    assert not by_count.clustering_reused and Manifest.load(tmp_path).clustering["n_guides"] == 3


def test_describe_changes_with_each_setting():
    prints = {params_fingerprint(CorpusBuilder(**knob).describe()) for knob in
              ({}, {"cluster_size": 20}, {"n_guides": 20}, {"split_factor": 3.0}, {"outliers": "general"})}
    assert len(prints) == 5
    assert params_fingerprint(CorpusBuilder().describe()) == params_fingerprint(
        CorpusBuilder(cluster_size=DEFAULT_CLUSTER_SIZE).describe())  # the same clustering either way


def test_dry_run_stops_before_the_teacher(tmp_path):
    questions, _ = topic_questions([40, 40])
    embedder = TopicEmbedder()
    lm, engine = scripted_lm(guide_response)
    report = build_corpus(questions, tmp_path, domain="math", teacher=lm, embedder=embedder, progress=False,
                          builder=CorpusBuilder(embedder=embedder, map_reducer=None), on_plan=lambda plan: False)
    assert engine.calls == 0 and not report.complete and report.teacher_plan.guides_to_write == 2
    assert Manifest.load(tmp_path).n_clusters == 2
