"""`instret sg data` over HTTP against the loopback OpenAI-compatible server (a guide model and a
solver model), `instret eval` with solution guidance (and the SG data's cost amortised), and
`instret sg finetune`'s message for data that is not there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.loopback import LoopbackServer
from helpers.sg import GOOD_GUIDANCE, answer_reply, field_of, guidance_reply

from instret.cli.main import main

TRAIN = Path(__file__).parents[1] / "fixtures" / "data" / "gsm8k_train.jsonl"


def guide_and_solver(data: Path, tmp_path, monkeypatch) -> LoopbackServer:
    """A server with a guide model that writes good guidance and a solver that answers each
    question of `data` with its gold answer; run from `tmp_path`, with no role set by the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("INSTRET_TEACHER", "INSTRET_STUDENT", "INSTRET_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    golds = {json.loads(line)["question"]: json.loads(line)["answer"].rsplit("####", 1)[1].strip()
             for line in data.read_text().splitlines()}

    def respond(request):
        if request.model == "guide":
            return guidance_reply(GOOD_GUIDANCE)
        return answer_reply(golds[field_of(request.user, "question")])

    return LoopbackServer(models=["guide", "solver"], responder=respond)


def test_sg_data_over_http(tmp_path, monkeypatch, capsys):
    with guide_and_solver(TRAIN, tmp_path, monkeypatch) as server:
        base = server.url + "/v1"
        code = main(["sg", "data", "--train", str(TRAIN), "--teacher", "openai/guide", "--teacher-api-base", base,
                     "--solver", "openai/solver", "--solver-api-base", base, "--out", "sg", "--no-progress"])
        guide_requests = [r for r in server.requests_for("/v1/chat/completions") if r.body.get("model") == "guide"]
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 of 3 questions have accepted guidance" in out and "instret sg finetune --data sg" in out
    assert len((tmp_path / "sg" / "train.jsonl").read_text().splitlines()) == 3
    assert all(r.body.get("temperature") == 0.7 for r in guide_requests) and len(guide_requests) == 3
    assert json.loads((tmp_path / "sg" / "report.json").read_text())["settings"]["teacher"] == "openai/guide"


def test_sg_data_from_solution_sends_the_worked_solution_to_the_guide(tmp_path, monkeypatch, capsys):
    with guide_and_solver(TRAIN, tmp_path, monkeypatch) as server:
        base = server.url + "/v1"
        code = main(["sg", "data", "--train", str(TRAIN), "--teacher", "openai/guide", "--teacher-api-base", base,
                     "--solver", "openai/solver", "--solver-api-base", base, "--out", "sg", "--no-progress",
                     "--from-solution", "--limit", "1"])
        requests = server.requests_for("/v1/chat/completions")
    assert code == 0, capsys.readouterr().err
    guide, = [r.body["messages"][-1]["content"] for r in requests if r.body.get("model") == "guide"]
    solver, = [r.body["messages"][-1]["content"] for r in requests if r.body.get("model") == "solver"]
    assert field_of(guide, "worked_solution") == ("Natalia sold 48/2 = 24 clips in May.\n"
                                                  "Natalia sold 48+24 = 72 clips altogether in April and May.")
    assert "worked_solution" not in solver
    assert json.loads((tmp_path / "sg" / "report.json").read_text())["settings"]["from_solution"] is True


def test_sg_finetune_without_data_says_where_it_comes_from(tmp_path, capsys):
    code = main(["sg", "finetune", "--data", str(tmp_path / "nothing"), "--base", "some.gguf", "--out",
                 str(tmp_path / "out")])
    assert code == 2
    assert "instret sg data" in capsys.readouterr().err


def test_eval_solution_guidance_counts_guide_tokens_apart(tmp_path, monkeypatch, capsys):
    """`instret eval --methods cot,solution_guidance`: the guide model (--teacher) writes the guidance,
    the student answers; the summary reports the guide's tokens apart from the student's."""
    test = Path(__file__).parents[1] / "fixtures" / "data" / "gsm8k_test.jsonl"
    with guide_and_solver(test, tmp_path, monkeypatch) as server:
        base = server.url + "/v1"
        code = main(["eval", "--test", str(test), "--limit", "3", "--student", "openai/solver", "--student-api-base",
                     base, "--teacher", "openai/guide", "--teacher-api-base", base, "--methods",
                     "cot,solution_guidance", "--out", "run", "--no-progress"])
        guided = [r for r in server.requests_for("/v1/chat/completions") if r.body.get("model") == "solver"
                  and GOOD_GUIDANCE.splitlines()[0] in json.dumps(r.body)]
    assert code == 0, capsys.readouterr()
    rows = {row["method"]: row for row in json.loads((tmp_path / "run" / "summary.json").read_text())}
    assert rows["solution_guidance"]["teacher_tokens_per_question"] > 0 and rows["cot"]["teacher_tokens_per_question"] == 0
    assert rows["solution_guidance"]["accuracy"] == 1.0 and len(guided) == 3
    results = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    sg = [r for r in results if r["method"] == "solution_guidance"]
    assert all(r["teacher_completion_tokens"] > 0 and r["completion_tokens"] > 0 for r in sg)
    assert all(r["outputs"]["guidance"] == GOOD_GUIDANCE for r in sg)


def test_eval_amortises_the_sg_data_it_is_given(tmp_path, monkeypatch, capsys):
    """`instret sg data` then `instret eval --sg-data`: the teacher tokens the SG data cost are spread
    over solution_guidance's questions and added to its per-question guide tokens; cot carries none."""
    test = Path(__file__).parents[1] / "fixtures" / "data" / "gsm8k_test.jsonl"
    with guide_and_solver(TRAIN, tmp_path, monkeypatch) as server:
        base = server.url + "/v1"
        assert main(["sg", "data", "--train", str(TRAIN), "--teacher", "openai/guide", "--teacher-api-base", base,
                     "--solver", "openai/solver", "--solver-api-base", base, "--out", "sg", "--no-progress"]) == 0
    spent = json.loads((tmp_path / "sg" / "report.json").read_text())["teacher_tokens"]
    spent = spent["prompt_tokens"] + spent["completion_tokens"]
    assert spent > 0
    with guide_and_solver(test, tmp_path, monkeypatch) as server:
        base = server.url + "/v1"
        code = main(["eval", "--test", str(test), "--limit", "3", "--student", "openai/solver", "--student-api-base",
                     base, "--teacher", "openai/guide", "--teacher-api-base", base, "--methods",
                     "cot,solution_guidance", "--sg-data", "sg", "--out", "run", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    results = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    per_question = sum(r["teacher_prompt_tokens"] + r["teacher_completion_tokens"] for r in results
                       if r["method"] == "solution_guidance") / 3
    rows = {row["method"]: row for row in json.loads((tmp_path / "run" / "summary.json").read_text())}
    assert rows["solution_guidance"]["teacher_setup_tokens"] == spent
    assert rows["solution_guidance"]["teacher_tokens_per_question"] == pytest.approx(per_question + spent / 3)
    assert rows["cot"]["teacher_tokens_per_question"] == 0 and "teacher_setup_tokens" not in rows["cot"]
    assert f"includes SG data sg, {spent:,} teacher tokens spent once, amortised over its 3 questions" in printed
