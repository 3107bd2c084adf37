"""What a new user meets with no model server running (issue 7): the corpus the main job leaves
(clusters, no guides), then `answer`, `compile`, `eval`, `corpus show` and `corpus map` on it.

The corpus is built as the README's first command builds it: the bundled sample, a teacher
nobody answers for. Every failure must be one line saying what to do, and nothing may claim
success ("wrote ...") when nothing was done.
"""

from __future__ import annotations

import json
import os

import pytest
from helpers import FIXTURES, free_port
from helpers.loopback import LoopbackServer

from instret import Corpus, Manifest
from instret.cli.main import EXIT_INCOMPLETE, main
from instret.corpus.manifest import MANIFEST

pytestmark = pytest.mark.slow
TEST_FILE = FIXTURES / "data" / "gsm8k_test.jsonl"
QUESTION = "Tom has 3 boxes of 12 pens. How many pens does he have?"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("INSTRET_") or key == "OLLAMA_HOST":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def dead() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there


@pytest.fixture(scope="module")
def no_guides(tmp_path_factory):
    """What `instret corpus build` leaves when no teacher answers: clusters saved, no guide."""
    folder = tmp_path_factory.mktemp("main-job") / "gsm8k"
    code = main(["corpus", "build", "--out", str(folder), "--teacher-api-base", dead(), "--no-progress"])
    assert code == EXIT_INCOMPLETE
    manifest = Manifest.load(folder)
    assert manifest.n_guides == 0 and manifest.n_clusters >= 2
    return folder


# --- item 3: a corpus with no guides says so, once, and which command finishes it -------------------------


@pytest.mark.parametrize("method", ["instruction_retrieval", "passage_rag"])
def test_answer_on_a_corpus_without_guides_says_how_to_finish_it(no_guides, method, capsys):
    code = main(["answer", "--corpus", str(no_guides), "--method", method, "--student-api-base", dead(), QUESTION])
    error = capsys.readouterr().err
    assert code == 2
    assert f"corpus {no_guides} has no guides yet" in error
    assert f"`instret corpus build --out {no_guides}`" in error  # the bundled sample: no --train to repeat
    assert "reshape" not in error and "Traceback" not in error


def test_compile_on_a_corpus_without_guides_fails_once_and_writes_nothing(no_guides, tmp_path, capsys):
    code = main(["compile", "--corpus", str(no_guides), "--student-api-base", dead(), "--train", str(TEST_FILE),
                 "--limit", "3", "-o", str(tmp_path / "p.json")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("has no guides yet") == 1 and "reshape" not in captured.err
    assert "wrote" not in captured.out and not (tmp_path / "p.json").exists()


def test_the_finishing_command_repeats_the_inputs_a_build_was_given(no_guides, tmp_path):
    corpus = Corpus.open(no_guides)
    corpus.manifest.sources = [{"path": "my data/train.jsonl", "sha256": "x"}]
    corpus.manifest.domain, corpus.manifest.guide_style = "medicine", "detailed"
    assert corpus.build_command() == (f"instret corpus build --train 'my data/train.jsonl' --domain medicine "
                                      f"--style detailed --out {no_guides}")
    corpus.manifest.clustering = {**corpus.manifest.clustering, "cluster_size": 12}
    assert "--cluster-size 12 " in corpus.build_command()
    corpus.manifest.clustering["n_guides"] = 4  # an exact count wins, as on the command line
    assert "--guides 4 " in corpus.build_command() and "--cluster-size" not in corpus.build_command()


# --- item 6: show and map present clusters whether or not they have a guide ------------------------------


def test_show_lists_every_cluster_with_typical_questions(no_guides, capsys):
    assert main(["corpus", "show", str(no_guides)]) == 0
    text = capsys.readouterr().out
    manifest = Manifest.load(no_guides)
    clusters = Corpus.open(no_guides).clusters()
    assert len(clusters) == manifest.n_clusters and sum(c.size for c in clusters) == 200
    assert text.count("(no guide yet)") == manifest.n_clusters
    assert text.count("       - ") == sum(min(3, c.size) for c in clusters)
    sizes = sorted(manifest.clustering["cluster_sizes"].values(), reverse=True)
    assert [c.size for c in clusters] == sizes and all(f"[{size:4d}]" in text for size in sizes)
    assert f"`instret corpus build --out {no_guides}` writes them" in text


def test_clusters_without_guides_are_named_by_distinct_telling_words(no_guides):
    clusters = Corpus.open(no_guides).clusters()
    assert all(len(c.words) == 3 and c.guide is None for c in clusters)
    assert len({c.name for c in clusters}) == len(clusters)
    assert all(word.isalpha() and word not in {"the", "and", "how", "many"} for c in clusters for word in c.words)


def test_map_labels_every_cluster_in_a_legend(no_guides, tmp_path, monkeypatch, capsys):
    import matplotlib.pyplot as plt

    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)  # keep the figure to read its legend
    assert main(["corpus", "map", str(no_guides), "-o", "map.png"]) == 0
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    legend = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    clusters = Corpus.open(no_guides).clusters()
    assert len(legend) == len(clusters)
    assert all(f"{n}. {c.name[:20]}" in entry for n, (c, entry) in enumerate(zip(clusters, legend), 1))
    tags = [t.get_text() for t in drawn[0].axes[0].texts]
    assert tags == [str(n) for n in range(1, len(clusters) + 1)]  # a numbered tag on each cluster
    plt.close(drawn[0].number)


def test_cluster_colours_and_markers_tell_twenty_clusters_apart():
    from instret.corpus.corpus import cluster_style

    styles = [cluster_style(n) for n in range(20)]
    assert len(set(styles)) == 20
    assert all(styles[n][0] != styles[n + 1][0] for n in range(19))  # neighbours never share a colour
    assert cluster_style(0, general=True)[1] != styles[0][1]


# --- item 10: the manifest is strict JSON ---------------------------------------------------------------


def test_manifest_is_strict_json(no_guides, tmp_path):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    text = (no_guides / MANIFEST).read_text()
    data = json.loads(text, parse_constant=refuse)  # what jq and JavaScript accept
    assert data["clustering"]["clusterer"]["cluster_selection_epsilon_max"] == "inf"
    manifest = Manifest.load(no_guides)
    manifest.clustering["odd"] = [float("nan"), float("-inf")]
    manifest.save(tmp_path)
    assert json.loads((tmp_path / MANIFEST).read_text(), parse_constant=refuse)["clustering"]["odd"] == ["nan", "-inf"]


# --- items 2, 4, 5: no server, or a server that fails every call ------------------------------------------


def test_answer_with_no_server_is_one_line_with_the_fix(capsys):
    code = main(["answer", "--method", "zero_shot", "--student-api-base", dead(), QUESTION])
    error = capsys.readouterr().err
    assert code == 1
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert "`ollama serve`" in error and "INSTRET_STUDENT_API_BASE" in error and "`ollama pull qwen2.5:3b`" in error


def test_answer_whose_call_fails_is_one_line(capsys):
    with LoopbackServer(models=("student",), faults=lambda request: "http400") as server:
        code = main(["answer", "--method", "zero_shot", "--student", "ollama_chat/student", "--student-api-base",
                     server.url, QUESTION])
    error = capsys.readouterr().err
    assert code == 1 and len(error.strip().splitlines()) == 1
    assert error.startswith("instret: error: the student ollama_chat/student did not answer:")


def test_compile_with_no_server_checks_the_student_first(tmp_path, capsys):
    code = main(["compile", "--method", "cot", "--student-api-base", dead(), "--train", str(TEST_FILE),
                 "-o", str(tmp_path / "p.json")])
    captured = capsys.readouterr()
    assert code == 1 and "`ollama serve`" in captured.err and "[student]" in captured.err
    assert "wrote" not in captured.out and not (tmp_path / "p.json").exists()


def test_compile_that_compiled_nothing_fails_with_the_reason(tmp_path, capsys):
    with LoopbackServer(models=("student",), faults=lambda request: "http400") as server:
        code = main(["compile", "--method", "cot", "--student", "ollama_chat/student", "--student-api-base",
                     server.url, "--train", str(TEST_FILE), "--limit", "3", "-o", str(tmp_path / "p.json")])
        asked = len(server.requests_for("/api/chat"))
    captured = capsys.readouterr()
    assert asked >= 3 and code == 1
    assert "nothing was compiled: all 3 runs of the program failed" in captured.err
    assert "loopback fault http400" in captured.err
    assert "wrote" not in captured.out and not (tmp_path / "p.json").exists()


def test_advice_names_the_role_and_its_real_settings(tmp_path, capsys):
    assert main(["eval", "--test", str(TEST_FILE), "--methods", "zero_shot", "--student-api-base", dead(),
                 "--out", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "api_base under [student] in instret.toml or INSTRET_STUDENT_API_BASE" in error
    assert "ollama_chat/" not in error.split("ollama pull")[0]  # no model string where a setting is named
    assert main(["compile", "--method", "cot", "--optimizer", "mipro", "--teacher", "ollama_chat/big",
                 "--teacher-api-base", dead(), "--train", str(TEST_FILE), "--student-api-base", dead()]) == 1
    error = capsys.readouterr().err
    assert "[student] in instret.toml or INSTRET_STUDENT_API_BASE" in error
    assert "[teacher] in instret.toml or INSTRET_TEACHER_API_BASE" in error and "`ollama pull big`" in error
