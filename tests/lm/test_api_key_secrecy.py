"""A planted API key must reach the server and nothing else: no file, no log line, no output.

The key sits in the `ModelSpec`s and in `OPENAI_API_KEY`. An evaluation (with failed items),
a corpus build whose teacher and embedder are keyed specs, a saved program with an LM set, and
DSPy's disk cache all write into `tmp_path`; every byte written there and everything logged at
DEBUG or printed is searched for the key.
"""

from __future__ import annotations

import json
import logging

import pytest
from helpers.loopback import LoopbackServer

import dspy
from instret.programs import ChainOfThoughtQA
from instret.teaching.build import build_corpus
from instret.corpus.clustering import CorpusBuilder, NoReduction
from instret.corpus.embedders import make_embedder
from instret.evaluation.run import evaluate
from instret.corpus.manifest import Manifest
from instret.lm.models import ModelSpec, make_lm
from instret.training.optimize import save_program
from instret.data.questions import Question

SECRET = "sk-PLANTED-SECRET-123"
LOGGERS = ("", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "dspy", "instret", "httpx", "httpcore", "openai")


@pytest.fixture
def servers():
    with LoopbackServer(models=["m", "embedder"]) as first, LoopbackServer(models=["m"]) as second:
        yield first, second


@pytest.fixture
def disk_cache(tmp_path):
    """DSPy's response cache, on disk inside tmp_path for the test (it is a file DSPy writes)."""
    saved = dspy.cache
    dspy.configure_cache(enable_disk_cache=True, disk_cache_dir=str(tmp_path / "dspy_cache"))
    yield
    dspy.cache = saved


@pytest.fixture
def everything_logged(caplog):
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


def test_planted_key_is_sent_but_never_written(tmp_path, servers, monkeypatch, disk_cache, everything_logged, capsys):
    first, second = servers
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    one = ModelSpec("openai/m", api_base=first.url + "/v1", api_key=SECRET)
    two = ModelSpec("openai/m", api_base=[first.url + "/v1", second.url + "/v1"], api_key=SECRET,
                    num_retries=1, retry_backoff=0.01, extra={"extra_headers": {"X-Api-Key": SECRET}})
    from_env = ModelSpec("openai/m", api_base=first.url + "/v1")  # litellm reads OPENAI_API_KEY
    students = {"keyed": make_lm(one), "keyed-pair": make_lm(two), "from-env": make_lm(from_env)}
    first.faults = second.faults = lambda record: "http401" if "Item 03" in json.dumps(record.body) else None

    # An evaluation, with one item failing on every student.
    questions = [Question(text=f"Item {i:02d}: what is {i} + 1?", answer=str(i + 1), source="secrets", line=i)
                 for i in range(6)]
    report = evaluate(questions, methods={"cot": ChainOfThoughtQA("numeric")}, students=students, kind="numeric",
                      out_dir=tmp_path / "eval", threads=2, progress=False)
    assert report.answered_now == 3 * 5 and report.failures == {"auth": 3}

    # A corpus build: teacher and embedder are keyed specs served by the loopback server.
    corpus_questions = [Question(text=f"Corpus question {i}: a train travels {i} km in {i + 1} hours; its speed?",
                                 answer="1", source="corpus", line=i) for i in range(12)]
    teacher = ModelSpec("openai/m", api_base=first.url + "/v1", api_key=SECRET, max_tokens=2000)
    embedder = make_embedder(ModelSpec("openai/embedder", api_base=first.url + "/v1", api_key=SECRET))
    from sklearn.cluster import KMeans

    builder = CorpusBuilder(embedder=embedder, reducer=NoReduction(), map_reducer=None,
                            clusterer=KMeans(n_clusters=2, n_init=2, random_state=0))
    build = build_corpus(corpus_questions, tmp_path / "corpus", domain="speed problems", teacher=teacher,
                         embedder=embedder, builder=builder, progress=False)
    assert build.guides_written == 2 and Manifest.load(tmp_path / "corpus").teacher == teacher.public_dict()

    # A saved program whose predictor has the keyed, load-balanced LM set on it.
    program = ChainOfThoughtQA("numeric")
    program.answer.predict.demos = [dspy.Example(question="What is 1 + 1?", reasoning="Add.", answer=2.0)]
    program.set_lm(students["keyed-pair"])
    save_program(program, tmp_path / "programs" / "cot.json")

    # The key did reach the servers, from the spec and from the environment ...
    sent = [r.headers.get("Authorization") for s in servers for r in s.requests if r.method == "POST"]
    assert sent and set(sent) == {f"Bearer {SECRET}"}
    assert any(r.headers.get("X-Api-Key") == SECRET for s in servers for r in s.requests)

    # ... and nowhere else.
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert {"results.jsonl", "failures.jsonl", "summary.json", "summary.csv", "manifest.json", "guides.jsonl",
            "cot.json"} <= {path.name for path in written}
    assert any("dspy_cache" in str(path) for path in written) and any("chroma" in str(path) for path in written)
    leaking = [str(path.relative_to(tmp_path)) for path in written if SECRET.encode() in path.read_bytes()]
    assert leaking == []
    captured = capsys.readouterr()
    # Older openai SDKs log request options (`extra_headers` included) at DEBUG, newer ones do not:
    # whatever the installed version logs, instret.lm.models.hide_in_logs redacts it on that logger.
    logging.getLogger("openai._base_client").debug("Request options: %s", {"extra_headers": {"X-Api-Key": SECRET}})
    logged = everything_logged.text + "".join(str(record.__dict__) for record in everything_logged.records)
    assert any(r.name == "openai._base_client" and "***" in r.getMessage() for r in everything_logged.records)
    assert SECRET not in captured.out and SECRET not in captured.err and SECRET not in logged
