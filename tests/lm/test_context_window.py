"""Choosing Ollama's `num_ctx` from the prompts a program produces, against `tests/helpers/loopback.py`.

The loopback server reports the model's trained window on /api/show (`context_length`) and
records the `options.num_ctx` of each real /api/chat request.
"""

from __future__ import annotations

import logging
import warnings

import pytest
from helpers.loopback import LoopbackServer, answers

import dspy
from instret.lm.context import (CHARS_PER_TOKEN, MIN_NUM_CTX, ContextWarning, estimate_tokens, fit_num_ctx,
                             plan_num_ctx, program_prompts)
from instret.lm.models import ModelSpec, make_lm

GUIDE = "Step: read the question, list the quantities, relate them, compute, check the units. " * 20


class GuidedQA(dspy.Module):
    """A guided answering program: the guide and demos lengthen every prompt."""

    def __init__(self):
        super().__init__()
        self.solve = dspy.ChainOfThought("guide, question -> answer: float")

    def forward(self, question, guide=GUIDE):
        return self.solve(guide=guide, question=question)


def with_demos(program: GuidedQA, count: int) -> GuidedQA:
    program.solve.predict.demos = [dspy.Example(guide=GUIDE, question=f"Demo {i}: what is {i} + {i}?",
                                                reasoning=f"Add {i} and {i}.", answer=2.0 * i) for i in range(count)]
    return program


INPUTS = [{"question": f"What is {i} times 3?"} for i in range(5)]


@pytest.fixture
def server():
    with LoopbackServer(models=["m"], responder=answers(answer=3.0), context_length=32768) as srv:
        yield srv


def spec_for(server, **fields) -> ModelSpec:
    return ModelSpec("ollama_chat/m", api_base=server.url, extra={"cache": False, "num_retries": 0}, **fields)


def test_estimates_are_conservative_character_counts():
    assert estimate_tokens("x" * 1000) == 400 == 1000 / CHARS_PER_TOKEN
    messages = [{"role": "system", "content": "a" * 250}, {"role": "user", "content": [{"type": "text", "text": "b" * 25}]}]
    assert estimate_tokens(messages) == (8 + 100) + (8 + 10)
    assert estimate_tokens(1234) == 1234


def test_program_prompts_are_what_the_server_receives(server):
    program = with_demos(GuidedQA(), 3)
    prompts = program_prompts(program, INPUTS)
    assert len(prompts) == len(INPUTS)
    assert "Demo 2: what is 2 + 2?" in str(prompts[0]) and GUIDE.strip() in str(prompts[0])

    with dspy.context(lm=make_lm(spec_for(server))):
        for kwargs in INPUTS:
            program(**kwargs)
    sent = [[{"role": m["role"], "content": m["content"]} for m in r.body["messages"]]
            for r in server.requests_for("/api/chat")]
    assert sent == prompts


def test_chosen_num_ctx_reaches_the_chat_request(server):
    short, long = GuidedQA(), with_demos(GuidedQA(), 12)
    short_spec = fit_num_ctx(spec_for(server), program_prompts(short, INPUTS), max_tokens=512)
    long_prompts = program_prompts(long, INPUTS)
    long_spec = fit_num_ctx(spec_for(server), long_prompts, max_tokens=512)

    longest = max(map(estimate_tokens, long_prompts))
    assert short_spec.num_ctx == MIN_NUM_CTX
    assert long_spec.num_ctx >= longest + 512 and long_spec.num_ctx < 2 * (longest + 512)
    assert long_spec.num_ctx & (long_spec.num_ctx - 1) == 0  # a power of two
    assert long_spec.max_tokens == 512

    with dspy.context(lm=make_lm(long_spec)):
        long(**INPUTS[0])
    (chat,) = server.requests_for("/api/chat")
    assert chat.options["num_ctx"] == long_spec.num_ctx and chat.options["num_predict"] == 512


def test_prompt_larger_than_the_model_warns_and_caps(server, caplog):
    server.context_length = 4096
    prompts = program_prompts(with_demos(GuidedQA(), 12), INPUTS)
    assert max(map(estimate_tokens, prompts)) + 512 > 4096

    with caplog.at_level(logging.WARNING, logger="instret.lm.context"), pytest.warns(ContextWarning, match="cut them"):
        spec = fit_num_ctx(spec_for(server), prompts, max_tokens=512)
    assert spec.num_ctx == 4096  # never more than the model's trained window
    assert "context window is 4096" in caplog.text
    plan = plan_num_ctx(spec_for(server), prompts, 512)
    assert plan.context_length == 4096 and len(plan.warnings) == 1 and "5 of 5 prompts" in plan.warnings[0]

    with dspy.context(lm=make_lm(spec)):
        GuidedQA()(**INPUTS[0])
    assert server.requests_for("/api/chat")[-1].options["num_ctx"] == 4096


def test_known_counts_larger_settings_and_several_servers(server):
    assert fit_num_ctx(spec_for(server), [1500], max_tokens=600).num_ctx == 4096
    assert fit_num_ctx(spec_for(server, num_ctx=16384), [100], max_tokens=100).num_ctx == 16384  # kept
    with LoopbackServer(models=["m"], context_length=8192) as small:
        both = ModelSpec("ollama_chat/m", api_base=[server.url, small.url])
        with pytest.warns(ContextWarning):
            assert fit_num_ctx(both, [30000], max_tokens=100).num_ctx == 8192  # the smaller server decides


def test_no_server_or_no_ollama_means_no_cap_and_no_change():
    down = ModelSpec("ollama_chat/m", api_base="http://127.0.0.1:9")  # nothing listens on the discard port
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_num_ctx(down, [30000], max_tokens=1000).num_ctx == 32768
    openai = ModelSpec("openai/m", api_base="http://127.0.0.1:9/v1")
    assert fit_num_ctx(openai, [30000]) is openai and plan_num_ctx(openai, [30000]).num_ctx is None
