"""`instret corpus build` granularity from the command line: tiny inputs build one guide, the
teacher's cost is shown before it is called, `--guides N` makes N, `--dry-run` calls no teacher."""

import json

import pytest
from helpers.loopback import LoopbackServer

from instret import Manifest
from instret.cli.main import main
from instret.data import SAMPLE_GSM8K

pytestmark = pytest.mark.slow


def sample_file(tmp_path, n: int):
    path = tmp_path / f"first{n}.jsonl"
    path.write_text("".join(line + "\n" for line in SAMPLE_GSM8K.read_text().splitlines()[:n]))
    return path


def build(train, out, server, *extra):
    return main(["corpus", "build", "--train", str(train), "--domain", "math", "--teacher", "ollama_chat/teacher",
                 "--teacher-api-base", server.url, "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("n", [1, 6])
def test_a_handful_of_questions_builds_one_guide(tmp_path, capsys, n):
    with LoopbackServer(models=("teacher",)) as server:
        assert build(sample_file(tmp_path, n), tmp_path / "corpus", server) == 0
        assert len(server.requests_for("/api/chat")) == 1
    out = capsys.readouterr().out
    assert f"{n} questions → 1 clusters" in out and "too few to split" in out
    assert "teacher: 1 of 1 guides to write × about" in out
    manifest = Manifest.load(tmp_path / "corpus")
    assert manifest.complete and manifest.n_guides == 1 and "too few" in manifest.clustering["note"]
    json.loads((tmp_path / "corpus" / "manifest.json").read_text())  # strict JSON


def test_guides_knob_and_dry_run(tmp_path, capsys):
    train = sample_file(tmp_path, 60)
    with LoopbackServer(models=("teacher",)) as server:
        assert build(train, tmp_path / "corpus", server, "--guides", "5", "--dry-run") == 0
        assert server.requests_for("/api/chat") == []
    out = capsys.readouterr().out
    plan = next(line for line in out.splitlines() if line.startswith("teacher: "))
    assert "5 of 5 guides to write" in plan and "prompt tokens" in plan
    assert "Dry run: no teacher called" in out
    manifest = Manifest.load(tmp_path / "corpus")
    assert manifest.n_clusters == 5 and manifest.clustering["n_guides"] == 5 and manifest.n_guides == 0

    with LoopbackServer(models=("teacher",)) as server:
        assert build(train, tmp_path / "corpus", server, "--cluster-size", "10") == 0
        written = len(server.requests_for("/api/chat"))
    manifest = Manifest.load(tmp_path / "corpus")
    assert manifest.clustering["cluster_size"] == 10 and manifest.complete
    assert written == manifest.n_clusters and 4 <= manifest.n_clusters <= 9  # about 60 / 10, none over 20
    assert max(manifest.clustering["cluster_sizes"].values()) <= 20


def test_both_knobs_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["corpus", "build", "--guides", "5", "--cluster-size", "10"])
    assert "not allowed with argument" in capsys.readouterr().err
