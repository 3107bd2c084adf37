"""Teacher intervention programs over the real HTTP path: a teacher and a student served by the
loopback server (OpenAI-compatible, honouring `stop` and `max_tokens`, scripted log-probabilities)."""

from __future__ import annotations

import json
import math
import urllib.request

import dspy
import pytest
from helpers.loopback import LoopbackServer, logprob_tokens
from helpers.scripted import scripted_lm

from instret.lm.models import make_lm
from instret.lm.reply_prefix import PrefillIgnored
from instret.lm.spec import ModelSpec
from instret.lm.steps import (LogprobsUnavailable, UncertaintyPolicy, is_final, mean_probability, render_steps,
                              split_steps, step_cap, stop_before, token_logprobs)
from instret.programs.methods import NEEDS_TEACHER, make_program
from instret.programs.intervention import FirstStepQA, OnUncertaintyQA

from helpers.intervention import (CONTINUATION, FAST, QUESTION, TEACHER_SOLUTION, Script, continues,  # noqa: F401
                                  continuing, field, given_steps, number_of_next_step, open_marker, reply)


@pytest.fixture
def server():
    script = Script()
    with LoopbackServer(models=("teacher", "student"), responder=script, logprob=script.logprob) as running:
        running.script = script
        yield running


def lm(server, name: str, **settings):
    return make_lm(ModelSpec(f"openai/{name}", api_base=server.url + "/v1", extra=FAST, **settings))


def chats(server, model: str):
    return [r for r in server.requests_for("/v1/chat/completions") if r.model == model]


# --- steps and log-probabilities ------------------------------------------------------------

def test_steps_split_on_numbered_lines_and_renumber():
    text = "Step 1: 3 * 12 = 36\n  so 36 pens\n\nStep 2: 36 - 5 = 31\n**Step 3:** done"
    assert split_steps(text) == ["Step 1: 3 * 12 = 36\nso 36 pens", "Step 2: 36 - 5 = 31", "**Step 3:** done"]
    assert split_steps("first line\nsecond line") == ["first line", "second line"]  # no markers: one per line
    assert split_steps("1. add\n2) subtract") == ["1. add", "2) subtract"]
    assert render_steps(["1. add", "Step 7: subtract"]) == "Step 1: add\nStep 2: subtract"
    assert stop_before(3)[:2] == ["Step 3:", "\n3. "]
    assert step_cap(2) > step_cap(1) and step_cap(5, make_lm("openai/x", api_base="http://h/v1", max_tokens=50)) == 50
    assert is_final("Step 4: The final answer is 31.") and not is_final("Step 2: 36 - 5 = 31")


def test_mean_probability_counts_only_the_steps_tokens():
    text = "[[ ## next_step ## ]]\nStep 2: 36 - 5 = 31\n\n[[ ## completed ## ]]"
    tokens = logprob_tokens(text)
    assert "".join(tokens) == text
    inside = set(range(len(tokens)))
    start, end = text.index("Step 2"), text.index("Step 2") + len("Step 2: 36 - 5 = 31")
    position, chosen = 0, []
    for i, token in enumerate(tokens):  # every token holding a character of the step ("\nStep" too)
        if position < end and position + len(token) > start:
            chosen.append(i)
        position += len(token)
    logprobs = {"content": [{"token": t, "logprob": math.log(0.5) if i in chosen else 0.0}
                            for i, t in enumerate(tokens)]}
    assert inside - set(chosen)  # header tokens exist and are left out
    assert mean_probability(logprobs, "Step 2: 36 - 5 = 31") == pytest.approx(0.5)
    assert mean_probability({"content": []}, "x") is None

    class Entry:  # litellm's objects
        def __init__(self, token, logprob):
            self.token, self.logprob = token, logprob

    class Logprobs:
        content = [Entry("a", math.log(0.25)), Entry("b", math.log(0.75))]

    assert token_logprobs(Logprobs()) == [("a", math.log(0.25)), ("b", math.log(0.75))]
    assert mean_probability(Logprobs(), "ab") == pytest.approx(0.5)


def test_policy_threshold_and_cap():
    policy = UncertaintyPolicy(threshold=0.7, max_interventions=1)
    assert policy.should_intervene(0.5, 0) and not policy.should_intervene(0.5, 1)
    assert not policy.should_intervene(0.8, 0) and policy.should_intervene(None, 0)
    with pytest.raises(ValueError, match="threshold"):
        UncertaintyPolicy(threshold=1.5)


# --- the loopback server's log-probabilities -------------------------------------------------

def test_loopback_returns_openai_logprobs_and_the_http_path_reads_them(server):
    student = lm(server, "student")
    out = student(messages=[{"role": "user", "content": "hi"}], logprobs=True)[0]
    (sent,) = chats(server, "student")
    assert sent.body["logprobs"] is True

    body = dict(sent.body, top_logprobs=2)  # the same request, sent by hand: what the server returns
    raw = urllib.request.Request(server.url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    choice = json.loads(urllib.request.urlopen(raw, timeout=10).read())["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(entry["token"] for entry in content) == choice["message"]["content"] == out["text"]
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"} and entry["logprob"] <= 0
        assert entry["bytes"] == list(entry["token"].encode()) and len(entry["top_logprobs"]) == 2
    assert token_logprobs(out["logprobs"]) == [(e["token"], e["logprob"]) for e in content]
    assert isinstance(student(messages=[{"role": "user", "content": "hi"}])[0], str)  # not asked: none sent


# --- first_step ------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2])
def test_first_step_student_prompt_carries_exactly_k_teacher_steps(server, k):
    program = make_program("first_step", kind="numeric", teacher=lm(server, "teacher"), teacher_steps=k,
                           handoff="prompt")
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)

    (asked,) = chats(server, "teacher")
    assert f"Step {k + 1}:" in asked.body["stop"]  # the server stops the teacher before step k+1
    assert asked.body.get("max_completion_tokens", asked.body.get("max_tokens")) == step_cap(k)
    (student_call,) = chats(server, "student")
    assert field(student_call.body["messages"][-1]["content"], "steps_so_far") == "\n".join(TEACHER_SOLUTION[:k])
    assert prediction.teacher_steps == "\n".join(TEACHER_SOLUTION[:k]) and prediction.answer == 31.0
    assert prediction.reasoning.startswith(prediction.teacher_steps)


def test_first_step_cuts_a_teacher_that_ignores_stop():
    teacher, engine = scripted_lm(lambda system, user: reply(steps="\n".join(TEACHER_SOLUTION)))
    student, seen = scripted_lm(lambda system, user: reply(reasoning="rest", answer="31"))
    program = FirstStepQA("numeric", teacher=teacher, teacher_steps=1, handoff="prompt")
    with dspy.context(lm=student):
        assert program(question=QUESTION).teacher_steps == TEACHER_SOLUTION[0]
    assert engine.calls == 1 and field(seen.prompts[0], "steps_so_far") == TEACHER_SOLUTION[0]


@pytest.mark.parametrize("echo_prefix", [False, True])
def test_first_step_reply_handoff_puts_the_teacher_steps_at_the_start_of_the_students_own_reply(server, echo_prefix):
    server.responder = continuing(server.script, echo_prefix)
    program = make_program("first_step", kind="numeric", teacher=lm(server, "teacher"), handoff="reply")
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)
        make_program("cot", kind="numeric")(question=QUESTION)

    continued, cot = chats(server, "student")
    *prompt, prefill = continued.body["messages"]
    assert prompt == cot.body["messages"]  # the student's prompt is cot's, word for word
    assert prefill == {"role": "assistant", "content": f"[[ ## reasoning ## ]]\n{TEACHER_SOLUTION[0]}\n"}
    assert prediction.teacher_steps == TEACHER_SOLUTION[0] and prediction.answer == 31.0
    assert prediction.reasoning == f"{TEACHER_SOLUTION[0]}\nStep 2: He gives away 5, so 36 - 5 = 31."


def test_a_server_that_starts_a_new_reply_instead_of_continuing_gets_the_clear_error(server):
    server.responder = lambda request: (server.script(request) if request.model == "teacher"
                                        else reply(reasoning="Step 1: my own start", answer="31"))
    program = make_program("first_step", kind="numeric", teacher=lm(server, "teacher"), handoff="reply")
    with dspy.context(lm=lm(server, "student")), pytest.raises(PrefillIgnored, match="--handoff prompt"):
        program(question=QUESTION)


def test_reply_handoff_under_the_json_adapter_passes_the_steps_in_the_prompt(server):
    server.responder = lambda request: (server.script(request) if request.model == "teacher"
                                        else json.dumps({"reasoning": "Step 2: 36 - 5 = 31", "answer": 31}))
    program = make_program("first_step", kind="numeric", teacher=lm(server, "teacher"), handoff="reply")
    with dspy.context(lm=lm(server, "student"), adapter=dspy.JSONAdapter()):
        assert program(question=QUESTION).answer == 31.0
    (student_call,) = chats(server, "student")
    assert student_call.body["messages"][-1]["role"] == "user"
    assert field(student_call.body["messages"][-1]["content"], "steps_so_far") == TEACHER_SOLUTION[0]
    with pytest.raises(ValueError, match="handoff must be one of prompt, reply"):
        make_program("first_step", kind="numeric", teacher=lm(server, "teacher"), handoff="prefill")


# --- on_uncertainty ---------------------------------------------------------------------------

@pytest.mark.parametrize("handoff", ["prompt", "reply"])
@pytest.mark.parametrize("threshold,cap,rewritten", [(0.9, 3, [2, 4]), (0.9, 1, [2]), (0.25, 3, [4]), (0.1, 3, [])])
def test_on_uncertainty_rewrites_exactly_the_unsure_steps_within_the_cap(server, threshold, cap, rewritten, handoff):
    server.script.confidence = {1: 0.99, 2: 0.3, 3: 0.95, 4: 0.2, 5: 0.97}
    program = make_program("on_uncertainty", kind="numeric", teacher=lm(server, "teacher"), threshold=threshold,
                           max_interventions=cap, handoff=handoff)
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)

    assert prediction.rewritten_steps == rewritten and prediction.interventions == len(rewritten)
    assert prediction.step_confidences == pytest.approx([0.99, 0.3, 0.95, 0.2, 0.97])  # header tokens left out
    assert len(chats(server, "teacher")) == len(rewritten)
    drafts = [r for r in chats(server, "student") if r.body.get("logprobs")]
    assert len(drafts) == 5 and [r.body["stop"][0] for r in drafts] == [f"Step {n}:" for n in range(2, 7)]
    drafted = [f"Step {n}: student step {n}" for n in range(1, 5)] + ["Step 5: The final answer is 31."]
    written = [f"Step {n}: teacher fix {n}" if n in rewritten else drafted[n - 1] for n in range(1, 6)]
    if handoff == "prompt":  # a last call answers from the steps in its prompt
        assert given_steps(chats(server, "student")[-1]).splitlines() == written
        assert all("`next_step`" in r.body["messages"][0]["content"] for r in drafts)
    else:  # every call continues one reply; the last draft went on to the answer: no further call
        assert len(chats(server, "student")) == 5
        assert [given_steps(r).splitlines() for r in drafts] == [written[:n] for n in range(5)]
        assert [open_marker(r) for r in chats(server, "student")] == [1, 2, 3, 4, 5]  # each begins its step
        assert prediction.reasoning == "\n".join(written)
    assert prediction.answer == 31.0


def test_a_draft_stopped_before_any_token_of_its_own_is_unsure_not_an_error(server):
    server.script.silent = {2}  # the student writes nothing after the `Step 2:` it was given
    program = make_program("on_uncertainty@0.5", kind="numeric", teacher=lm(server, "teacher"), handoff="reply")
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)
    assert prediction.step_confidences[1] is None and prediction.rewritten_steps == [2]
    assert prediction.reasoning.splitlines()[1] == "Step 2: teacher fix 2" and prediction.answer == 31.0


def test_an_empty_draft_the_teacher_does_not_rewrite_ends_the_steps(server):
    server.script.silent = {2}  # no intervention left: the empty step 2 is not kept, the student answers from step 1
    program = OnUncertaintyQA("numeric", teacher=lm(server, "teacher"), policy=UncertaintyPolicy(0.5, 0))
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)
    assert prediction.step_confidences == pytest.approx([0.99, None]) and prediction.rewritten_steps == []
    assert given_steps(chats(server, "student")[-1]) == "Step 1: student step 1"
    assert prediction.reasoning.splitlines() == ["Step 1: student step 1", "Step 9: student finishes."]


def test_a_draft_whose_scores_the_server_left_out_is_unsure_once_the_backend_has_scored(server):
    server.script.unscored = {3}  # as llama.cpp, when every token of the reply was held back for a stop
    program = make_program("on_uncertainty@0.5", kind="numeric", teacher=lm(server, "teacher"), handoff="reply")
    with dspy.context(lm=lm(server, "student")):
        prediction = program(question=QUESTION)
    assert prediction.step_confidences[2] is None and prediction.rewritten_steps == [3]
    assert prediction.reasoning.splitlines()[2] == "Step 3: teacher fix 3" and prediction.answer == 31.0
    server.script.unscored = {1}  # nothing scored yet: the backend may not return log-probabilities at all
    with dspy.context(lm=lm(server, "student")), pytest.raises(LogprobsUnavailable, match="returned no token"):
        program(question=QUESTION)


def test_a_teacher_step_stands_in_the_prompt_of_every_later_student_step(server):
    server.script.confidence = {1: 0.2}
    program = make_program("on_uncertainty@0.9", kind="numeric", teacher=lm(server, "teacher"), handoff="prompt")
    with dspy.context(lm=lm(server, "student")):
        program(question=QUESTION)
    later = [field(r.body["messages"][-1]["content"], "steps_so_far") for r in chats(server, "student")[1:]]
    assert later and all(text.startswith("Step 1: teacher fix 1") for text in later)


def test_ollama_student_gets_the_clear_error_before_any_call(server):
    program = make_program("on_uncertainty", kind="numeric", teacher=lm(server, "teacher"))
    ollama = make_lm(ModelSpec("ollama_chat/student", api_base=server.url, extra=FAST))
    advice = r"openai/student --student-api-base http://.*:11434/v1"
    with dspy.context(lm=ollama), pytest.raises(LogprobsUnavailable, match=advice):
        program(question=QUESTION)
    assert server.hits["/api/chat"] == 0 and server.hits["/v1/chat/completions"] == 0


def test_a_backend_that_returns_no_logprobs_gets_the_clear_error(server):
    student, engine = scripted_lm(lambda system, user: reply(next_step="Step 1: go"))
    program = OnUncertaintyQA("numeric", teacher=lm(server, "teacher"))
    with dspy.context(lm=student), pytest.raises(LogprobsUnavailable, match="scripted/teacher returned no token"):
        program(question=QUESTION)
    assert engine.calls == 1 and not chats(server, "teacher")


# --- quest_cot, teacher_cot, registry, saved state ---------------------------------------------

def test_quest_cot_asks_the_student_for_its_starting_question_first(server):
    server.responder = lambda request: reply(start_question="How many pens at first?", reasoning="36 - 5", answer="31")
    with dspy.context(lm=lm(server, "student")):
        prediction = make_program("quest_cot", kind="numeric")(question=QUESTION)
    assert (prediction.start_question, prediction.answer) == ("How many pens at first?", 31.0)
    system = chats(server, "student")[0].body["messages"][0]["content"]
    assert system.index("`start_question`") < system.index("`reasoning`") < system.index("`answer`")


def test_teacher_cot_asks_only_the_teacher(server):
    server.responder = lambda request: reply(reasoning="36 - 5 = 31", answer="31")
    with dspy.context(lm=lm(server, "student")):
        program = make_program("teacher_cot", kind="numeric", teacher=lm(server, "teacher"))
        assert program(question=QUESTION).answer == 31
    assert len(chats(server, "teacher")) == 1 and not chats(server, "student")


def test_registry_variants_and_missing_teacher(server):
    teacher = lm(server, "teacher")
    assert {"first_step", "on_uncertainty", "teacher_cot"} <= NEEDS_TEACHER
    assert make_program("first_step@2", kind="numeric", teacher=teacher).teacher_steps == 2
    assert make_program("on_uncertainty@0.7", kind="numeric", teacher=teacher).policy.threshold == 0.7
    capped = make_program("on_uncertainty", kind="choice", teacher=teacher, max_interventions=1)
    assert capped.policy.max_interventions == 1
    for bad, message in [("cot@2", "only first_step@"), ("first_step@x", "integer"), ("first_step@0", "1 or more")]:
        with pytest.raises(ValueError, match=message):
            make_program(bad, kind="numeric", teacher=teacher)
    for method in ("first_step", "on_uncertainty", "teacher_cot"):
        with pytest.raises(ValueError, match="--teacher MODEL"):
            make_program(method, kind="numeric")
    by_string = make_program("teacher_cot", kind="numeric", teacher=f"openai/teacher@{server.url}/v1".split("@")[0])
    assert by_string.answer.predict.lm.model == "openai/teacher"


def test_saved_state_has_no_endpoint_and_loading_keeps_the_teacher(server, tmp_path):
    teacher = lm(server, "teacher")
    program = make_program("on_uncertainty", kind="numeric", teacher=teacher)
    program.step.demos = [dspy.Example(question="q", steps_so_far="(none)", next_step="Step 1: x")]
    path = tmp_path / "program.json"
    program.save(str(path))
    text = path.read_text()
    assert server.url not in text and "127.0.0.1" not in text and "api_base" not in text
    assert all(state["lm"] is None for state in json.loads(text).values() if isinstance(state, dict) and "lm" in state)

    fresh = make_program("on_uncertainty", kind="numeric", teacher=teacher)
    fresh.load(str(path))
    assert fresh.rewrite.lm is teacher and fresh.step.lm is None and len(fresh.step.demos) == 1


def test_bootstrap_compiles_both_roles_and_keeps_the_very_teacher(server, tmp_path):
    from instret.data.questions import Question
    from instret.training.optimize import trainset_from

    server.script.confidence = {2: 0.3}
    teacher = lm(server, "teacher")
    train = trainset_from([Question(f"{QUESTION} (shop {n})", answer="31") for n in range(3)])
    for method in ("first_step", "on_uncertainty"):
        program = make_program(method, kind="numeric", teacher=teacher)
        with dspy.context(lm=lm(server, "student")):
            compiled = dspy.BootstrapFewShot(metric=lambda example, prediction, trace=None: True,
                                             max_bootstrapped_demos=2).compile(program, trainset=train)
        pinned = {name: predictor.lm for name, predictor in compiled.named_predictors()}
        teacher_side = {"first_step": "lead", "on_uncertainty": "rewrite"}[method]
        assert pinned.pop(teacher_side) is teacher and set(pinned.values()) == {None}  # reset_copy kept it
        assert all(predictor.demos for _, predictor in compiled.named_predictors())
        assert all("logprobs" not in demo for _, p in compiled.named_predictors() for demo in p.demos)
        compiled.save(str(tmp_path / f"{method}.json"))
        assert server.url not in (tmp_path / f"{method}.json").read_text()
