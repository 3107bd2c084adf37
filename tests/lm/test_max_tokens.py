"""Output caps: every role has a default max_tokens, a flag or the config overrides it, and a reply
cut by the cap is counted as truncated, never as a silent parse failure.

The loopback server honours `max_tokens` and `stop` on its OpenAI-compatible path as a real
server does: it cuts the reply and says `finish_reason: "length"` (or "stop").
"""

from __future__ import annotations

import json

import pytest
from helpers import FIXTURES
from helpers.loopback import LoopbackServer, chat_reply

import dspy
from instret.cli.main import main
from instret.data.questions import Question
from instret.evaluation.run import RESULTS, evaluate
from instret.lm.config import load_settings
from instret.lm.models import ModelSpec, make_lm
from instret.lm.recovery import answer_with_recovery
from instret.lm.spec import DEFAULT_MAX_TOKENS, END_OF_REPLY
from instret.programs import ChainOfThoughtQA

CHAT = "/v1/chat/completions"
RAMBLING = "I add 3 and 4 and then I add 3 and 4 again. " * 40  # numbers everywhere, no answer field


def rambles(request) -> str:
    """A model in a loop: it never reaches its answer, in either adapter's format."""
    if "Outputs will be a JSON object" in request.system or request.wants_json:
        return json.dumps({"reasoning": RAMBLING, "answer": 7})
    return f"[[ ## reasoning ## ]]\n{RAMBLING}\n\n[[ ## answer ## ]]\n7\n\n{END_OF_REPLY}"


def rambles_until_sampled(request) -> str:
    """Loops on its first try; a fresh sample (temperature set) answers briefly."""
    if request.options.get("temperature") is None:
        return rambles(request)
    return chat_reply({"reasoning": "3 + 4 = 7.", "answer": 7})


def sent_cap(body: dict) -> int | None:
    return body.get("max_completion_tokens") or body.get("max_tokens")


def lm(server, max_tokens):
    return make_lm(ModelSpec("openai/m", api_base=server.url + "/v1", max_tokens=max_tokens, num_retries=0,
                             extra={"cache": False}))


@pytest.mark.parametrize("responder, path, answer", [(rambles, "truncated", None),
                                                     (rambles_until_sampled, "fresh_sample", "7")])
def test_a_capped_reply_is_truncated_not_guessed(responder, path, answer):
    with LoopbackServer(models=["m"], responder=responder) as server:
        with dspy.context(lm=lm(server, 40)):
            attempt = answer_with_recovery(ChainOfThoughtQA("numeric"), "numeric", "What is 3 + 4?")
        # The cut text is full of numbers, but the lenient extractor is not trusted with a cut reply.
        assert (attempt.path, attempt.answer) == (path, answer)
        assert attempt.truncated and attempt.replies[0].truncated
        assert attempt.calls[0].finish_reason == "length" and attempt.calls[0].completion_tokens == 40
        assert all(sent_cap(r.body) == 40 for r in server.requests_for(CHAT))


def test_eval_counts_truncated_rows_apart_from_parse_failures(tmp_path):
    questions = [Question(text="What is 3 + 4?", answer="7", source="t", line=1),
                 Question(text="What is 4 + 3?", answer="7", source="t", line=2)]
    with LoopbackServer(models=["m"], responder=rambles) as server:
        report = evaluate(questions, methods={"cot": ChainOfThoughtQA("numeric")}, students={"m": lm(server, 40)},
                          kind="numeric", out_dir=tmp_path, threads=2, progress=False)
    records = [json.loads(line) for line in (tmp_path / RESULTS).read_text().splitlines()]
    assert all(r["recovery"] == "truncated" and r["truncated"] and not r["parse_failed"] and not r["correct"]
               for r in records)
    assert all(len(r["outputs"]["unparsed_replies"]) == 3 for r in records)  # every raw reply kept
    (row,) = report.summary
    assert (row["truncated"], row["hit_max_tokens"], row["parse_failures"], row["recovered_truncated"]) == (2, 2, 0, 2)


def test_every_role_has_a_cap_that_the_config_and_flags_override(tmp_path):
    settings = load_settings(env={})
    assert (settings.student.max_tokens, settings.teacher.max_tokens) == (DEFAULT_MAX_TOKENS["student"],
                                                                           DEFAULT_MAX_TOKENS["teacher"])
    config = tmp_path / "instret.toml"
    config.write_text('[student]\nmodel = "openai/s"\nmax_tokens = 300\n[teacher]\nmax_tokens = 900\n')
    settings = load_settings(config, env={})
    assert (settings.student.max_tokens, settings.teacher.max_tokens) == (300, 900)
    settings = load_settings(config, env={}, student_max_tokens=64, teacher_max_tokens=128)
    assert (settings.student.max_tokens, settings.teacher.max_tokens) == (64, 128)


@pytest.mark.parametrize("flag, cap", [((), DEFAULT_MAX_TOKENS["student"]), (("--max-tokens", "25"), 25)])
def test_eval_sends_the_cap_and_stops_at_the_end_marker(tmp_path, flag, cap, monkeypatch):
    monkeypatch.delenv("INSTRET_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./instret.toml
    with LoopbackServer(models=["m"], responder=rambles) as server:
        code = main(["eval", "--test", str(FIXTURES / "data" / "gsm8k_test.jsonl"), "--limit", "2",
                     "--student", "openai/m", "--student-api-base", server.url + "/v1", "--methods", "cot",
                     "--threads", "2", "--out", str(tmp_path / "run"), "--no-progress", *flag])
        assert code == 0
        bodies = [r.body for r in server.requests_for(CHAT)]
    assert bodies and all(sent_cap(b) == cap and b["stop"] == [END_OF_REPLY] for b in bodies)
    (row,) = json.loads((tmp_path / "run" / "summary.json").read_text())
    # Capped at 25 the loop is cut (truncated); at the default the reply ends at the end marker and parses.
    assert row["truncated"] == (2 if cap == 25 else 0) and row["parse_failures"] == 0


def test_invalid_cap_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--test", "x.jsonl", "--max-tokens", "0"])
    assert "must be 1 or more" in capsys.readouterr().err
