"""Where instruction retrieval hands the guide to the student: in its prompt only, or also
restated at the start of its own reply (`--guide-handoff reply`), over the real HTTP path."""

from __future__ import annotations

import dspy
import pytest
from helpers.intervention import FAST
from helpers.loopback import LoopbackServer

from instret.corpus.guides import Guide
from instret.lm.models import make_lm
from instret.lm.spec import ModelSpec
from instret.programs.answering import InstructionRetrievalQA, guide_opening
from instret.programs.methods import variant

GUIDE = Guide(title="Totals of equal groups", applies_when="Questions that count equal groups.",
              background="A total of equal groups is the number of groups times the size of one group.",
              procedure=["Find the number of groups.", "Find the size of one group.", "Multiply them."],
              pitfalls=["Adding instead of multiplying."])
QUESTION = "Tom has 3 boxes of 12 pens. How many pens does he have?"
CONTINUATION = " There are 3 groups of 12, so 3 * 12 = 36.\n\n[[ ## answer ## ]]\n36\n\n[[ ## completed ## ]]"


def retriever(*guides):
    """A retriever that finds `guides` for every question (the real one is tested on a real corpus)."""
    return lambda query: dspy.Prediction(guides=list(guides), scores=[0.8] * len(guides),
                                         ids=[f"g{n}" for n in range(len(guides))])


def respond(request) -> str:
    if request.body["messages"][-1]["role"] == "assistant":
        return CONTINUATION  # the continuation alone, as vLLM and Ollama return it
    return "[[ ## reasoning ## ]]\n3 * 12 = 36.\n\n[[ ## answer ## ]]\n36\n\n[[ ## completed ## ]]"


@pytest.fixture
def student():
    with LoopbackServer(models=("student",), responder=respond) as server:
        yield make_lm(ModelSpec("openai/student", api_base=server.url + "/v1", extra=FAST)), server


def test_reply_handoff_starts_the_students_reply_with_the_guide_restated(student):
    lm, server = student
    with dspy.context(lm=lm):
        prediction = InstructionRetrievalQA(retriever(GUIDE), "numeric", handoff="reply")(QUESTION)
    messages = server.requests_for("/v1/chat/completions")[-1].body["messages"]
    assert messages[-1]["role"] == "assistant"
    opened = messages[-1]["content"]
    assert opened.startswith('[[ ## reasoning ## ]]\nThe guide "Totals of equal groups" applies.')
    assert GUIDE.background in opened and "\n1. Find the number of groups.\n2. Find the size" in opened
    assert "### Guide 1: Totals of equal groups" in messages[-2]["content"]  # still in the prompt too
    assert prediction.reasoning.startswith(guide_opening(GUIDE)) and prediction.reasoning.endswith("3 * 12 = 36.")
    assert prediction.answer == 36.0 and prediction.reference_ids == ["g0"]


def test_prompt_handoff_and_a_question_without_a_guide_prefill_nothing(student):
    lm, server = student
    with dspy.context(lm=lm):
        prompted = InstructionRetrievalQA(retriever(GUIDE), "numeric", handoff="prompt")(QUESTION)
        alone = InstructionRetrievalQA(retriever(), "numeric", handoff="reply")(QUESTION)
    for request in server.requests_for("/v1/chat/completions"):
        assert request.body["messages"][-1]["role"] == "user"
    first = server.requests_for("/v1/chat/completions")[0].body["messages"][-1]["content"]
    assert "### Guide 1: Totals of equal groups" in first
    assert prompted.reasoning == alone.reasoning == "3 * 12 = 36." and alone.reference_ids == []


def test_the_handoff_is_a_variant_and_a_bad_one_is_refused():
    assert variant("instruction_retrieval@reply") == ("instruction_retrieval", {"guide_handoff": "reply"})
    with pytest.raises(ValueError, match="guide handoff must be one of prompt, reply, got 'sideways'"):
        InstructionRetrievalQA(retriever(GUIDE), "numeric", handoff="sideways")
