"""Issue 24's cost axis: the teacher's tokens written, read and computed, and read from the server's
prompt cache add up exactly to what the server reported, through DSPy and litellm, cache hits
included; a server that reports no cache is "not reported", never 0; `--price` changes the priced
column and the chart's axis.

The loopback server's OpenAI-compatible replies report a third of each prompt as cached, in
`usage.prompt_tokens_details.cached_tokens`, where llama.cpp's server, vLLM and OpenAI put it (the
embedded llama.cpp answers a repeated prompt with `"prompt_tokens_details": {"cached_tokens": 776}`
of 784). Its Ollama API, like Ollama through litellm, reports none.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter

import pytest
from helpers import FIXTURES, loopback
from helpers.loopback import LoopbackServer, apply_stop, count_tokens, dspy_responder

import dspy
from instret.cli.main import main
from instret.data.questions import Question
from instret.evaluation.cost import LOCAL_PRICE, Price, default_price, parse_price
from instret.evaluation.report import format_table, summarize, teacher_cost_figure
from instret.evaluation.run import RESULTS, evaluate
from instret.lm.models import ModelSpec, make_lm
from instret.programs.answering import AnsweringProgram
from instret.signatures.answering import answer_signature

QUESTIONS = [Question(text=f"Item {i}: what is {i} + 7?", answer=str(i + 7), source="split", line=i) for i in range(3)]


def cached_part(prompt_tokens: int) -> int:
    return prompt_tokens // 3


class HintedQA(AnsweringProgram):
    """The smallest two-model method: the teacher writes a hint, the student answers with it."""

    def __init__(self, teacher):
        super().__init__("numeric")
        self.hint = dspy.Predict("question -> hint")
        self.hint.set_lm(teacher)
        self.answer = dspy.ChainOfThought(answer_signature("numeric", guided=True))

    def forward(self, question: str, options=None):
        return self.answer(question=question, guides=self.hint(question=question).hint)


class Billing:
    """Answers any DSPy prompt and books, by role and question, what the server reports."""

    def __init__(self):
        self.booked: Counter = Counter()
        self._lock = threading.Lock()

    def __call__(self, request) -> str:
        reply = dspy_responder(request)
        sent, _ = apply_stop(reply, request.body.get("stop"),
                             request.body.get("max_completion_tokens") or request.body.get("max_tokens"))
        role = "teacher" if "`hint`" in request.system else "student"
        question = re.search(r"Item \d+", request.user).group(0)
        prompt = count_tokens(request.text)
        with self._lock:
            self.booked[role, question, "prompt"] += prompt
            self.booked[role, question, "cached"] += cached_part(prompt)
            self.booked[role, question, "completion"] += count_tokens(sent)
        return reply

    def total(self, role: str, part: str) -> int:
        return sum(v for (r, _, p), v in self.booked.items() if r == role and p == part)


@pytest.fixture
def server(monkeypatch):
    original = loopback._Handler._json

    def reporting_cache(self, obj, status=200, headers=None, fault=None):
        usage = obj.get("usage") if isinstance(obj, dict) and self.path == "/v1/chat/completions" else None
        if usage and "prompt_tokens" in usage:
            usage["prompt_tokens_details"] = {"cached_tokens": cached_part(usage["prompt_tokens"])}
        return original(self, obj, status, headers, fault)

    monkeypatch.setattr(loopback._Handler, "_json", reporting_cache)
    with LoopbackServer(models=("teacher", "student"), responder=Billing()) as running:
        yield running


@pytest.fixture
def dspy_cache(tmp_path):
    """DSPy's real memory + disk cache in a temporary folder; the suite's (none) is put back after."""
    previous = dspy.cache
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=str(tmp_path / "dspy-cache"))
    yield dspy.cache
    with dspy._cache_lock:
        dspy.cache = previous


#: How each path reaches the server: DSPy's native lm15 engine (llama.cpp, vLLM), litellm (hosted
#: providers; extra_headers are litellm-only), litellm's Ollama client.
ENGINES = {"lm15": ("openai", {}), "litellm": ("openai", {"extra_headers": {"X-Test": "1"}}),
           "ollama": ("ollama_chat", {})}


def lm(server, engine: str, model: str, cache: bool = False, **fields):
    provider, extra = ENGINES[engine]
    api_base = server.url + ("/v1" if provider == "openai" else "")
    return make_lm(ModelSpec(f"{provider}/{model}", api_base=api_base, num_retries=0,
                             num_ctx=4096 if provider == "ollama_chat" else None,
                             extra={**extra, "cache": cache}, **fields))


def run(server, out, engine: str, cache: bool = False, price=None):
    teacher, student = lm(server, engine, "teacher", cache), lm(server, engine, "student", cache)
    report = evaluate(QUESTIONS, methods={"hinted": HintedQA(teacher)}, students={"s": student}, kind="numeric",
                      out_dir=out, threads=3, teacher=teacher, progress=False, price=price)
    records = [json.loads(line) for line in (out / RESULTS).read_text().splitlines()]
    (row,) = report.summary
    return records, row


@pytest.mark.parametrize("engine", ["lm15", "litellm"])
def test_the_split_sums_exactly_to_what_the_server_reported(server, tmp_path, engine):
    records, row = run(server, tmp_path, engine)
    billing = server.responder
    for record in records:
        question = re.search(r"Item \d+", record["inputs"]["question"]).group(0)
        assert record["teacher_prompt_cached_tokens"] == billing.booked["teacher", question, "cached"] > 0
        assert record["prompt_cached_tokens"] == billing.booked["student", question, "cached"] > 0
    written, read, cached = (billing.total("teacher", part) for part in ("completion", "prompt", "cached"))
    assert (row["teacher_written_tokens"], row["teacher_read_tokens"], row["teacher_cached_tokens"]) == (written, read, cached)
    assert row["teacher_computed_tokens"] == read - cached and row["teacher_cache_reported"] is True
    assert row["teacher_written_tokens"] + row["teacher_read_tokens"] == row["teacher_tokens_per_question"] * 3
    assert row["teacher_cached_per_question"] == cached / 3 and row["teacher_computed_per_question"] == (read - cached) / 3
    assert row["prompt_cached_tokens"] == billing.total("student", "cached")
    assert row["teacher_price_per_question"] == pytest.approx(((read - cached) * 1 + cached * 0.1 + written * 4) / 1e6 / 3)
    table = format_table([row])
    assert f"{cached / 3:,.0f}" in table and "not reported" not in table


@pytest.mark.parametrize("engine", ["lm15", "litellm"])
def test_a_dspy_cache_hit_counts_the_server_cache_it_had_when_produced(server, tmp_path, dspy_cache, engine):
    first, _ = run(server, tmp_path / "first", engine, cache=True)
    asked = len(server.requests)
    again, row = run(server, tmp_path / "again", engine, cache=True)
    assert len(server.requests) == asked and all(r["cached"] for r in again)  # nothing reached the server
    by_question = {r["question_id"]: r for r in first}
    for record in again:
        produced = by_question[record["question_id"]]
        for key in ("teacher_prompt_cached_tokens", "prompt_cached_tokens", "teacher_prompt_tokens"):
            assert record[key] == produced[key] and record[key] > 0, key
    assert row["teacher_cached_tokens"] == server.responder.total("teacher", "cached")  # booked once, by the first run


def test_a_server_that_reports_no_cache_is_not_reported_and_priced_as_computed(server, tmp_path):
    records, row = run(server, tmp_path, "ollama")
    assert all(r["teacher_prompt_cached_tokens"] is None and r["prompt_cached_tokens"] is None for r in records)
    assert row["teacher_cached_tokens"] is None and row["teacher_computed_tokens"] is None
    assert row["teacher_cache_reported"] is False and row["mean_prompt_cached_tokens"] is None
    read, written = row["teacher_read_tokens"], row["teacher_written_tokens"]
    assert read == server.responder.total("teacher", "prompt") > 0
    assert row["teacher_price_per_question"] == pytest.approx((read * 1 + written * 4) / 1e6 / 3)  # an upper bound
    table = format_table([row])
    assert "not reported" in table and "an upper bound" in table and "cache not reported" in table


def old_record(method: str, question: str, teacher_prompt: int, teacher_written: int) -> dict:
    """A row journaled before instret recorded the server's cache: no cached fields at all."""
    return {"method": method, "student": "s", "question_id": question, "correct": method != "cot",
            "parse_failed": False, "recovery": "direct", "prompt_tokens": 300, "completion_tokens": 50,
            "teacher_prompt_tokens": teacher_prompt, "teacher_completion_tokens": teacher_written, "latency_s": 1.0}


def test_rows_journaled_before_the_field_say_not_reported_never_zero():
    records = [old_record("cot", q, 0, 0) for q in "ab"] + [old_record("teacher_cot", q, 300, 200) for q in "ab"]
    rows = {r["method"]: r for r in summarize(records)}
    assert rows["teacher_cot"]["teacher_cached_per_question"] is None
    assert rows["teacher_cot"]["mean_prompt_cached_tokens"] is None
    assert rows["cot"]["teacher_cached_per_question"] == 0  # no teacher prompt at all: a known 0
    lines = {line.split()[0]: line for line in format_table(list(rows.values())).splitlines()[1:3]}
    assert "not reported" in lines["teacher_cot"] and "not reported" not in lines["cot"]


def test_price_changes_the_priced_column_and_the_charts_axis():
    records = [old_record("cot", q, 0, 0) for q in "ab"] + [old_record("teacher_cot", q, 300, 200) for q in "ab"]
    for record in records:
        record["teacher_prompt_cached_tokens"] = 100 if record["teacher_prompt_tokens"] else None
    dear = parse_price("input=2,cached=0.5,output=10")
    rows = {price: {r["method"]: r for r in summarize(records, price=price)} for price in (LOCAL_PRICE, dear)}
    assert rows[LOCAL_PRICE]["teacher_cot"]["teacher_price_per_question"] == pytest.approx((200 + 10 + 800) / 1e6)
    assert rows[dear]["teacher_cot"]["teacher_price_per_question"] == pytest.approx((400 + 50 + 2000) / 1e6)
    assert "input 2, cached 0.5, output 10 per million tokens (USD; --price)" in format_table(list(rows[dear].values()))
    figures = {price: teacher_cost_figure(list(rows[price].values()), "price").axes[0] for price in rows}
    xs = {price: sorted(x for line in axes.lines for x in line.get_xdata()) for price, axes in figures.items()}
    assert xs[LOCAL_PRICE][-1] == pytest.approx(1.01) and xs[dear][-1] == pytest.approx(2.45)  # per 1,000 questions
    assert "USD; --price" in figures[dear].get_xlabel() and "a ratio, not dollars" in figures[LOCAL_PRICE].get_xlabel()
    written = teacher_cost_figure(list(rows[dear].values()), "written").axes[0]
    assert written.get_xlabel() == "teacher tokens written per question"
    assert max(x for line in written.lines for x in line.get_xdata()) == 200


@pytest.mark.parametrize("bad, named", [("input=abc,output=1", "input=abc: 'abc' is not a number"),
                                        ("input=1,outptu=2", "'outptu=2' is not KEY=NUMBER"),
                                        ("input=1", "give output= too"), ("input=-1,output=1", "0 or more"),
                                        ("input=1,input=2,output=3", "input is given twice")])
def test_a_bad_price_names_the_flag_and_the_bad_part(bad, named, capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        main(["eval", "--test", "t.jsonl", "--out", str(tmp_path), "--price", bad])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and "argument --price" in error and named in error
    with pytest.raises(ValueError, match="^--price: "):
        parse_price(bad)


def test_eval_prices_with_the_flag_and_draws_its_axis(server, tmp_path, capsys):
    server.responder = dspy_responder  # the fixture's questions, not "Item N"
    out = tmp_path / "run"
    command = ["eval", "--test", str(FIXTURES / "data" / "gsm8k_test.jsonl"), "--limit", "2", "--methods",
               "cot,teacher_cot", "--student", "openai/student", "--student-api-base", server.url + "/v1",
               "--teacher", "openai/teacher", "--teacher-api-base", server.url + "/v1", "--threads", "2",
               "--out", str(out), "--no-progress", "--price", "input=1,cached=0,output=10", "--cost-axis", "written"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "input 1, cached 0, output 10 per million tokens (USD; --price)" in printed
    assert "frontier: accuracy against teacher tokens written per question" in printed
    rows = {r["method"]: r for r in json.loads((out / "summary.json").read_text())}
    teacher_cot = rows["teacher_cot"]
    assert teacher_cot["teacher_price_per_question"] == pytest.approx(
        (teacher_cot["teacher_computed_per_question"] + 10 * teacher_cot["teacher_written_per_question"]) / 1e6)
    assert {"on_frontier_written", "on_frontier_price"} <= set(teacher_cot)
    assert (out / "teacher_cost.png").read_bytes()[:4] == b"\x89PNG"


def test_the_default_price_is_litellms_for_a_hosted_model_and_a_stated_ratio_for_a_self_hosted_one():
    mini = default_price("openai/gpt-4o-mini")  # the bundled cost map (LITELLM_LOCAL_MODEL_COST_MAP)
    assert (mini.input, mini.cached, mini.output, mini.unit) == (pytest.approx(0.15), pytest.approx(0.075),
                                                                 pytest.approx(0.6), "USD")
    for self_hosted in ("local/qwen2.5-coder-0.5b", "ollama_chat/qwen2.5:3b",
                        ModelSpec("openai/gpt-4o-mini", api_base="http://gpu:8000/v1")):
        assert default_price(self_hosted) == LOCAL_PRICE
    assert default_price(make_lm("local/qwen2.5-coder-0.5b")) == LOCAL_PRICE  # an LM: its engine says local
    unknown = default_price("groq/no-such-model")
    assert unknown.unit == "ratio" and "not in litellm's cost map; give --price" in unknown.source
    assert "a ratio, not dollars" in LOCAL_PRICE.describe()
    assert Price(1, 0.1, 4).of(computed=600, cached=None, written=100) == pytest.approx(1000 / 1e6)
