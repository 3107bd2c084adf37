"""The guide store: paged reads and exact search over its vectors."""

import numpy as np

from instret.corpus import store as store_module
from instret.corpus.guides import Guide
from instret.corpus.store import ExactIndex, GuideStore, StoredGuide


def unit_vectors(n, dim=16, seed=0):
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_reads_page_through_large_collections(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "PAGE", 3)  # Chroma refuses a single read of over 32,766 records
    store = GuideStore.open(tmp_path / "chroma")
    guide = Guide(title="t", applies_when="a", background="b", procedure=["x", "y", "z"], pitfalls=["p"])
    vectors = unit_vectors(8)
    store.upsert_guides([StoredGuide(f"g{i}", guide, [f"q{i}"], vectors[i]) for i in range(8)], vectors)
    store.upsert_questions([f"q{i}" for i in range(8)], ["text"] * 8, vectors, [f"g{i}" for i in range(8)])
    assert sorted(g.id for g in store.guides()) == [f"g{i}" for i in range(8)]
    assert store.question_guides() == {f"q{i}": f"g{i}" for i in range(8)}
    index = store.exact_index("questions")
    assert len(index) == 8 and np.allclose(index.matrix[index.ids.index("q5")], vectors[5], atol=1e-6)


def test_exact_index_matches_brute_force():
    vectors = unit_vectors(500, seed=1)
    index = ExactIndex([f"v{i}" for i in range(500)], vectors, [{"n": i} for i in range(500)])
    query = unit_vectors(1, seed=2)[0]
    expected = np.argsort(-(vectors @ query))[:5]
    hits = index.search(query, 5)
    assert [h[0] for h in hits] == [f"v{i}" for i in expected]
    assert hits[0][1] == max(vectors @ query) and hits[0][2] == {"n": int(expected[0])}
    assert len(index.search(query, 900)) == 500 and index.search(query, 0) == []
