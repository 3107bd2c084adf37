"""Build options from the README through the CLI: a user's CSV, outlier policy, cluster size,
guide style, and a held-out split (MMLU law has no train split) that evaluation then uses."""

import csv
import json

import pytest
from helpers.loopback import LoopbackServer, answers

from instret import Manifest
from instret.cli.main import main
from instret.data import SAMPLE_GSM8K

pytestmark = pytest.mark.slow


@pytest.fixture
def user_csv(tmp_path):
    path = tmp_path / "mine.csv"
    rows = [json.loads(line) for line in SAMPLE_GSM8K.read_text().splitlines()]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "target", "topic"])
        for row in rows:
            writer.writerow([row["question"], row["answer"].split("####")[-1].strip(), "arithmetic"])
    return path


def test_user_csv_with_build_options_and_holdout(user_csv, tmp_path, capsys):
    out = tmp_path / "corpus"
    with LoopbackServer(models=("teacher", "student"), responder=answers(answer=1.0)) as server:
        assert main(["corpus", "build", "--train", str(user_csv), "--format", "csv", "--field", "text=prompt",
                     "--field", "answer=target", "--field", "subject=topic", "--domain", "math",
                     "--teacher", "ollama_chat/teacher", "--teacher-api-base", server.url, "--out", str(out),
                     "--outliers", "general", "--min-cluster-size", "6", "--style", "detailed",
                     "--holdout-fraction", "0.5", "--no-progress"]) == 0
        teacher_prompts = [r.body["messages"][-1]["content"] for r in server.requests_for("/api/chat")]

        manifest = Manifest.load(out)
        held_out = manifest.split["held_out_question_ids"]
        assert held_out and len(held_out) + len(manifest.question_ids) == 200
        assert not set(held_out) & set(manifest.question_ids)
        assert manifest.clustering["outliers"] == "general"
        assert manifest.clustering["clusterer"]["min_cluster_size"] == 6
        assert manifest.guide_style == "detailed" and all("detailed" in p for p in teacher_prompts)

        evaluate = ["eval", "--corpus", str(out), "--test", str(user_csv), "--format", "csv", "--field",
                    "text=prompt", "--field", "answer=target", "--student", "ollama_chat/student",
                    "--student-api-base", server.url, "--methods", "zero_shot", "--limit", "5", "--no-progress"]
        assert main([*evaluate, "--out", str(tmp_path / "leaky")]) == 2
        assert "use --holdout" in capsys.readouterr().err
        assert main([*evaluate, "--holdout", "--out", str(tmp_path / "run")]) == 0
    asked = {json.loads(line)["question_id"] for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()}
    assert len(asked) == 5 and asked <= set(held_out)
