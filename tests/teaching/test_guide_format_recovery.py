"""A teacher that breaks the guide format: a fresh sample, then the JSON adapter, then a recorded
failure with every raw reply kept; each failure reported once, whole, with where its replies are.

The teacher is a loopback OpenAI-compatible server; each cluster's example questions say how it
misbehaves.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers.loopback import LoopbackServer, chat_reply

from instret.cli.main import main
from instret.corpus.clustering import Cluster
from instret.corpus.manifest import JOURNAL, Manifest
from instret.data import SAMPLE_GSM8K
from instret.data.files import Journal
from instret.data.questions import Question
from instret.lm.models import ModelSpec, make_lm
from instret.programs import GuideWriter
from instret.teaching.build import guide_writing
from instret.teaching.writing import FAILED_GUIDES, write_guides

GUIDE = {"title": "Sums", "applies_when": "Adding quantities.", "background": "Addition combines amounts.",
         "procedure": ["List the amounts.", "Add them.", "Check the total."], "pitfalls": ["Dropping an amount."]}
ECHO = json.dumps({"properties": {"title": {"type": "string"}, "procedure": {"type": "array"}}, "required": ["title"]})
RAMBLE = "Adapter " * 400  # runs to any cap; "Adapter" as the prefix the old report cut into "Ada", "Adapt" ...


def wants_json(request) -> bool:
    return request.wants_json or "Outputs will be a JSON object" in request.system


def teacher_reply(request) -> str:
    case = re.search(r"Case (\w+)", request.user).group(1)
    sampled = request.options.get("temperature") is not None
    if case == "good" or (case == "sampled" and sampled) or (case == "json" and wants_json(request)):
        return json.dumps({"guide": GUIDE}) if wants_json(request) else chat_reply({"guide": GUIDE})
    if case == "ramble":
        return RAMBLE
    return ECHO  # the 1.5B's failure: the schema echoed instead of filled


CASES = {"good": "direct", "sampled": "fresh_sample", "json": "json_adapter", "echo": "failed", "ramble": "truncated"}


def clusters_and_samples():
    clusters, samples = [], {}
    for label, case in enumerate(CASES):
        questions = [Question(text=f"Case {case}: what is {label} + {k}?", answer=str(label + k)) for k in range(2)]
        cluster = Cluster(label, [q.id for q in questions], np.zeros(3, dtype=np.float32))
        clusters.append(cluster)
        samples[cluster.id] = questions
    return clusters, samples


def test_each_guide_takes_its_path_and_failures_keep_their_replies(tmp_path):
    clusters, samples = clusters_and_samples()
    case_of = {c.id: re.search(r"Case (\w+)", samples[c.id][0].text).group(1) for c in clusters}
    journal, failures = Journal(tmp_path / JOURNAL, key="guide_id"), Journal(tmp_path / FAILED_GUIDES, key="guide_id")
    with LoopbackServer(models=["t"], responder=teacher_reply) as server:
        teacher = make_lm(ModelSpec("openai/t", api_base=server.url + "/v1", max_tokens=200, num_retries=0,
                                    extra={"cache": False}))
        report = write_guides(clusters, samples, writer=GuideWriter(), teacher_lm=teacher, journal=journal,
                              domain="math", style="concise", threads=2, progress=False, failures=failures)
    assert report.recovery == {path: 1 for path in CASES.values()}
    written = journal.read()
    assert {case_of[g]: r["recovery"] for g, r in written.items()} == {"good": "direct", "sampled": "fresh_sample",
                                                                     "json": "json_adapter"}
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in written.values())
    assert report.tokens["prompt_tokens"] > sum(r["prompt_tokens"] for r in written.values())  # failures cost too

    failed = failures.read()
    assert set(failed) == set(report.failed) and {case_of[g] for g in failed} == {"echo", "ramble"}
    for guide_id, record in failed.items():
        assert [r["step"] for r in record["replies"]] == ["direct", "fresh_sample", "json_adapter"]
        expected = RAMBLE[:40] if case_of[guide_id] == "ramble" else ECHO
        assert all(r["raw"].startswith(expected) for r in record["replies"] if r["raw"])  # kept whole, not cut at 300
        reason = report.failed[guide_id]
        assert "\n" not in reason and reason.endswith(f"raw replies in {tmp_path / FAILED_GUIDES}")
        assert reason.startswith(f"{CASES[case_of[guide_id]]} after 3 tries: ")
    ramble = next(r for g, r in failed.items() if case_of[g] == "ramble")
    assert ramble["truncated"] and "raise the teacher's max_tokens" in ramble["reason"]

    summary = guide_writing(written, failures, clusters, teacher)
    assert summary["recovery"] == {path: 1 for path in CASES.values()}
    assert (summary["guides"], summary["failed"], summary["failed_guides_file"]) == (3, 2, FAILED_GUIDES)


@pytest.mark.slow
def test_build_reports_each_failed_guide_once_whole(tmp_path, capsys):
    """The CLI: a teacher that only echoes the schema; every failure is printed once, on one line,
    with where its replies are; no fragment of an error is printed on a line of its own."""
    train = tmp_path / "train.jsonl"
    questions = [json.loads(line) for line in SAMPLE_GSM8K.read_text().splitlines()]
    train.write_text("".join(json.dumps({**q, "question": "Case echo: " + q["question"]}) + "\n" for q in questions))
    out = tmp_path / "corpus"
    with LoopbackServer(models=["t"], responder=teacher_reply) as server:
        code = main(["corpus", "build", "--train", str(train), "--domain", "math", "--out", str(out),
                     "--teacher", "openai/t", "--teacher-api-base", server.url + "/v1", "--teacher-max-tokens", "300",
                     "--no-progress"])
        bodies = [r.body for r in server.requests_for("/v1/chat/completions")]
    assert code == 3
    assert all((b.get("max_completion_tokens") or b.get("max_tokens")) == 300 for b in bodies)
    err = capsys.readouterr().err
    failed = Journal(out / FAILED_GUIDES, key="guide_id").read()
    assert failed
    for guide_id in failed:
        (line,) = [line for line in err.splitlines() if guide_id in line]
        assert line.strip().startswith(f"{guide_id}: failed after 3 tries: ") and str(out / FAILED_GUIDES) in line
    assert not any(re.fullmatch(r"\s*Ada\w*", line) for line in err.splitlines())
    manifest = Manifest.load(out)
    assert manifest.guide_writing["recovery"] == {"failed": len(failed)}
    assert manifest.guide_writing["failed_guides_file"] == FAILED_GUIDES
    assert manifest.teacher["max_tokens"] == 300
