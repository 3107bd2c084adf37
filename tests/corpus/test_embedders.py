"""Embedders: the offline default, litellm strings over real HTTP, and the on-disk cache."""

import numpy as np
import pytest
from helpers.loopback import LoopbackServer

from instret.corpus.embedders import (CachedEmbedder, EmbeddingCache, LiteLLMEmbedder, SentenceTransformerEmbedder,
                               make_embedder)
from instret.lm.spec import ModelSpec


def test_default_embedder_is_offline_minilm(embedder):
    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert embedder.id == "sentence-transformers/all-MiniLM-L6-v2"
    vectors = embedder.encode(["How many apples are left?", "What is the capital of France?"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("model,suffix", [("ollama/nomic-embed-text", ""), ("openai/text-embedding-3-small", "/v1")])
def test_litellm_embedding_strings_over_http(model, suffix):
    with LoopbackServer(models=("nomic-embed-text", "text-embedding-3-small"), dim=16) as server:
        embedder = make_embedder(ModelSpec(model=model, api_base=server.url + suffix, api_key="sk-test"))
        assert isinstance(embedder, LiteLLMEmbedder) and embedder.id == model
        embedder.batch_size = 2
        vectors = embedder.encode(["a", "b", "c", "a"])
        embed_calls = [r for r in server.requests if "embed" in r.path]
    assert vectors.shape == (4, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[3]) and not np.allclose(vectors[0], vectors[1])
    assert len(embed_calls) == 2  # batched: 4 texts in batches of 2


class CountingEmbedder:
    id = "counting"

    def __init__(self):
        self.seen = []

    def encode(self, texts):
        self.seen.extend(texts)
        return np.stack([np.eye(8, dtype=np.float32)[len(t) % 8] for t in texts])


def test_cache_embeds_each_text_once_across_processes(tmp_path):
    inner = CountingEmbedder()
    first = CachedEmbedder(inner, EmbeddingCache(tmp_path / "e.sqlite"), chunk_size=2)
    a = first.encode(["x", "yy", "x", "zzz"])
    assert inner.seen == ["x", "yy", "zzz"] and first.n_embedded == 3 and first.n_from_cache == 1
    first.cache.close()

    again = CachedEmbedder(inner, EmbeddingCache(tmp_path / "e.sqlite"))  # a fresh process would do this
    b = again.encode(["zzz", "x", "yy", "x"])
    assert again.n_embedded == 0 and len(inner.seen) == 3
    assert np.array_equal(b, a[[3, 0, 1, 2]])


def test_cache_keys_include_the_embedder(tmp_path):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    CachedEmbedder(CountingEmbedder(), cache).encode(["x"])
    other = CountingEmbedder()
    other.id = "another-model"
    assert CachedEmbedder(other, cache).encode(["x"]) is not None and other.seen == ["x"]


def test_umap_compiles_into_a_persistent_cache(tmp_path, monkeypatch):
    from instret.corpus._numba import import_umap

    umap = import_umap()
    dispatcher = umap.umap_.smooth_knn_dist  # a jitted function umap itself does not cache
    assert type(dispatcher._cache).__name__ != "NullCache"
