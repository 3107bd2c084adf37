"""`instret eval` on a real corpus of 200 GSM8K questions, with a loopback student right on every
other question: the fixtures the eval and setup-cost tests share."""

import pytest

from helpers import FIXTURES
from helpers.loopback import LoopbackServer, answers
from helpers.scripted import guide_response, scripted_lm
from instret import build_corpus
from instret.cli.main import main
from instret.data.loaders import load_questions

TEST_FILE = FIXTURES / "data" / "gsm8k_test.jsonl"
METHODS = "zero_shot,cot,passage_rag,generic_guide,instruction_retrieval"
TEST_QUESTIONS = load_questions(str(TEST_FILE)).questions


def gold_for_even_questions(request):
    """Right on questions 0, 2, 4, ...; one off on the others: accuracy 50% for every method."""
    for n, question in enumerate(TEST_QUESTIONS):
        if question.text[:60] in request.user:
            return float(question.answer) + (n % 2)
    return 0.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample_questions, embedder):
    folder = tmp_path_factory.mktemp("eval") / "gsm8k"
    lm, _ = scripted_lm(guide_response)
    build_corpus(sample_questions, folder, domain="grade-school math", teacher=lm, embedder=embedder, progress=False)
    return folder


@pytest.fixture
def student():
    with LoopbackServer(models=("student",), responder=answers(answer=gold_for_even_questions)) as server:
        yield server


def run_eval(corpus, server, out, *extra):
    return main(["eval", "--corpus", str(corpus), "--test", str(TEST_FILE), "--student", "ollama_chat/student",
                 "--student-api-base", server.url, "--methods", METHODS, "--threads", "4", "--out", str(out),
                 "--no-progress", *extra])
