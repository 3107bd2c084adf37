import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("INSTRET_NO_PULL", "1")  # no test downloads model weights by naming a local/ model
sys.path.insert(0, str(Path(__file__).parent))  # every stage folder imports `helpers` (scripted LMs, loopback server)

from helpers import FIXTURES, free_port  # noqa: E402,F401  (free_port: for tests written before helpers/)


@pytest.fixture(scope="session")
def sample_questions():
    """The 200 real GSM8K questions the package ships as its sample."""
    from instret.data import SAMPLE_GSM8K
    from instret.data.loaders import load_questions

    return load_questions(str(SAMPLE_GSM8K)).questions


@pytest.fixture(scope="session")
def embedder():
    """The real default embedder, loaded once for the whole session."""
    from instret.corpus.embedders import make_embedder

    return make_embedder()


@pytest.fixture(autouse=True, scope="session")
def no_dspy_cache():
    """Every LM call in tests must reach its engine or server, so counts of requests mean something."""
    import dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
