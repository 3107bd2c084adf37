"""instret: small language models that reason better at inference time, as DSPy programs.

Everything public is importable from here; heavy modules load only when first used, so
`import instret` and `instret --help` stay fast.
"""

from importlib import import_module

from instret import _env  # noqa: F401  (offline settings before anything else loads)

__version__ = "0.1.0"

_PUBLIC = {
    "Question": "instret.data.questions", "normalize_text": "instret.data.questions", "question_id": "instret.data.questions",
    "load_questions": "instret.data.loaders", "BadRowError": "instret.data.loaders", "LoadReport": "instret.data.loaders",
    "holdout_split": "instret.data.loaders",
    "Embedder": "instret.corpus.embedders", "make_embedder": "instret.corpus.embedders", "CachedEmbedder": "instret.corpus.embedders",
    "EmbeddingCache": "instret.corpus.embedders", "SentenceTransformerEmbedder": "instret.corpus.embedders",
    "LiteLLMEmbedder": "instret.corpus.embedders",
    "CorpusBuilder": "instret.corpus.clustering", "Cluster": "instret.corpus.clustering", "NoReduction": "instret.corpus.clustering",
    "Guide": "instret.corpus.guides", "find_leaks": "instret.corpus.guides", "guide_quality": "instret.corpus.guides",
    "GuideStore": "instret.corpus.store", "StoredGuide": "instret.corpus.store",
    "build_corpus": "instret.teaching.build", "BuildReport": "instret.teaching.build",
    "TeacherPlan": "instret.teaching.build",
    "Corpus": "instret.corpus.corpus", "Manifest": "instret.corpus.manifest", "EmbedderMismatchError": "instret.corpus.manifest",
    "CorpusError": "instret.corpus.manifest",
    "ModelSpec": "instret.lm.spec", "make_lm": "instret.lm.models",
    "Settings": "instret.lm.config", "load_settings": "instret.lm.config",
    "local_server": "instret.lm.local.engine", "LocalEngineError": "instret.lm.local.engine",
    "pull_weights": "instret.lm.local.catalog", "WeightsError": "instret.lm.local.catalog",
    "GuideWriter": "instret.programs", "WriteClusterGuide": "instret.signatures",
    "GuideRetriever": "instret.corpus.retrieval", "PassageRetriever": "instret.corpus.retrieval",
    "score": "instret.data.scoring", "score_answer": "instret.data.scoring", "ScoredAnswer": "instret.data.scoring",
    "extract_answer": "instret.data.scoring", "kind_of": "instret.data.scoring",
    "InstructionRetrievalQA": "instret.programs", "ZeroShotQA": "instret.programs",
    "ChainOfThoughtQA": "instret.programs", "PassageRAGQA": "instret.programs", "GenericGuideQA": "instret.programs",
    "METHODS": "instret.programs", "make_program": "instret.programs", "answer_signature": "instret.signatures",
    "QuestCoTQA": "instret.programs", "FirstStepQA": "instret.programs", "OnUncertaintyQA": "instret.programs",
    "TeacherCoTQA": "instret.programs", "UncertaintyPolicy": "instret.lm.steps",
    "LogprobsUnavailable": "instret.lm.steps",
    "evaluate": "instret.evaluation.run", "EvalReport": "instret.evaluation.run", "LeakageError": "instret.evaluation.run",
    "answer_with_recovery": "instret.lm.recovery", "run_with_recovery": "instret.lm.recovery",
    "CallLog": "instret.lm.calls", "DEFAULT_MAX_TOKENS": "instret.lm.spec",
    "compile_program": "instret.training.optimize", "save_program": "instret.training.optimize", "trainset_from": "instret.training.optimize",
    "answer_metric": "instret.training.optimize",
    "SolutionGuidanceQA": "instret.programs", "WriteGuidance": "instret.signatures",
    "guidance_signature": "instret.signatures", "answer_with_guidance_signature": "instret.signatures",
    "check_guidance": "instret.data.guidance", "guidance_metric": "instret.data.guidance",
    "GuidanceCheck": "instret.data.guidance", "generate_sg_data": "instret.training.sg_data",
    "SGDataReport": "instret.training.sg_data", "finetune_guide": "instret.training.sgft",
    "LoraSettings": "instret.training.sgft", "FinetuneReport": "instret.training.sgft",
    "LocalProvider": "instret.training.provider", "finetunable_lm": "instret.training.provider",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'instret' has no attribute {name!r}")


def __dir__():
    return __all__
