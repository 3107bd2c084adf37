"""instret: small language models that reason better at inference time, as DSPy programs.

Everything public is importable from here; heavy modules load only when first used, so
`import instret` and `instret --help` stay fast.
"""

from importlib import import_module

from instret import _env  # noqa: F401  (offline settings before anything else loads)

__version__ = "0.1.0"

_PUBLIC = {
    "Question": "instret.questions", "normalize_text": "instret.questions", "question_id": "instret.questions",
    "load_questions": "instret.loaders", "BadRowError": "instret.loaders", "LoadReport": "instret.loaders",
    "holdout_split": "instret.loaders",
    "Embedder": "instret.embedders", "make_embedder": "instret.embedders", "CachedEmbedder": "instret.embedders",
    "EmbeddingCache": "instret.embedders", "SentenceTransformerEmbedder": "instret.embedders",
    "LiteLLMEmbedder": "instret.embedders",
    "CorpusBuilder": "instret.clustering", "Cluster": "instret.clustering", "NoReduction": "instret.clustering",
    "Guide": "instret.guides", "find_leaks": "instret.guides", "guide_quality": "instret.guides",
    "GuideStore": "instret.store", "StoredGuide": "instret.store",
    "build_corpus": "instret.build", "BuildReport": "instret.build",
    "Corpus": "instret.corpus", "Manifest": "instret.manifest", "EmbedderMismatchError": "instret.manifest",
    "CorpusError": "instret.manifest",
    "ModelSpec": "instret.models", "make_lm": "instret.models",
    "Settings": "instret.config", "load_settings": "instret.config",
    "GuideWriter": "instret.programs", "WriteClusterGuide": "instret.signatures",
    "GuideRetriever": "instret.retrieval", "PassageRetriever": "instret.retrieval",
    "score": "instret.scoring", "score_answer": "instret.scoring", "ScoredAnswer": "instret.scoring",
    "extract_answer": "instret.scoring", "kind_of": "instret.scoring",
    "InstructionRetrievalQA": "instret.programs", "ZeroShotQA": "instret.programs",
    "ChainOfThoughtQA": "instret.programs", "PassageRAGQA": "instret.programs", "GenericGuideQA": "instret.programs",
    "METHODS": "instret.programs", "make_program": "instret.programs", "answer_signature": "instret.signatures",
    "evaluate": "instret.evaluation", "EvalReport": "instret.evaluation", "LeakageError": "instret.evaluation",
    "answer_with_recovery": "instret.recovery",
    "compile_program": "instret.optimize", "save_program": "instret.optimize", "trainset_from": "instret.optimize",
    "answer_metric": "instret.optimize",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'instret' has no attribute {name!r}")


def __dir__():
    return __all__
