"""`instret corpus build|show|map`, in-process through `instret.cli.main.main` and as the installed script.

Builds use the real embedder, UMAP, HDBSCAN and Chroma. The teacher is either an Ollama URL
nobody listens on (the build must stop with exit 3 and say which server to start) or the
in-process scripted LM of `scripted.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port
from helpers.scripted import guide_response, scripted_lm

from instret import Corpus, Manifest, build_corpus
from instret.corpus.manifest import CHROMA, CLUSTERING, EMBEDDINGS, QUESTIONS_FILE
from instret.cli.main import EXIT_INCOMPLETE, main
from instret.data import SAMPLE_GSM8K
from instret.corpus.manifest import MANIFEST

INSTRET = Path(sys.executable).with_name("instret")
TEACHER = "ollama_chat/qwen2.5:14b"
BAD_LINE = 3
slow = pytest.mark.slow


def _clean_env() -> dict:
    """This process's environment without settings that would change which models the CLI picks."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith("INSTRET_") and key != "OLLAMA_HOST"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run every test from its own empty folder, with no instret settings in the environment."""
    for key in list(os.environ):
        if key.startswith("INSTRET_") or key == "OLLAMA_HOST":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _dead_teacher() -> list[str]:
    return ["--teacher", TEACHER, "--teacher-api-base", f"http://127.0.0.1:{free_port()}"]


def _bad_file(folder: Path) -> Path:
    """The bundled sample with an empty question inserted as line BAD_LINE."""
    lines = SAMPLE_GSM8K.read_text(encoding="utf-8").splitlines(keepends=True)
    bad = json.dumps({"question": "   ", "answer": "Nothing to see.\n#### 3"}) + "\n"
    path = folder / "train-with-bad-row.jsonl"
    path.write_text("".join(lines[:BAD_LINE - 1] + [bad] + lines[BAD_LINE - 1:]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory):
    """`instret corpus build` on the bundled sample, run as a user runs it, with no teacher server."""
    cwd = tmp_path_factory.mktemp("cli-subprocess")
    port = free_port()  # bound and released: nothing listens there
    out = cwd / "gsm8k"
    result = subprocess.run([str(INSTRET), "corpus", "build", "--teacher", TEACHER, "--teacher-api-base",
                             f"http://127.0.0.1:{port}", "--out", "gsm8k", "--no-progress"],
                            cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=600)
    return out, port, result


@pytest.fixture(scope="module")
def finished(unreachable, tmp_path_factory, sample_questions, embedder):
    """The unreachable build's folder, finished in-process by `build_corpus` with the scripted teacher."""
    folder = tmp_path_factory.mktemp("cli-finished") / "gsm8k"
    shutil.copytree(unreachable[0], folder)
    lm, _ = scripted_lm(guide_response)
    report = build_corpus(sample_questions, folder, domain="grade-school math", teacher=lm, embedder=embedder,
                          sources=[str(SAMPLE_GSM8K)], progress=False)
    assert report.complete and report.clustering_reused
    assert report.n_embedded == report.n_clusters  # only the guide texts were new
    return folder, report


# --- fast: argument handling and input errors, before any model loads ------------------------------------


def test_help_in_process(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    assert "corpus" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        main(["corpus", "build", "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert "--teacher-api-base" in text and "--skip-bad-rows" in text and "--chroma-url" in text
    assert main([]) == 2  # no command: help, and a usage exit code
    assert "corpus" in capsys.readouterr().out


def test_help_as_installed_script_loads_no_heavy_library():
    result = subprocess.run([str(INSTRET), "--help"], env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: instret" in result.stdout and "corpus" in result.stdout
    probe = ("import sys\nfrom instret.cli.main import main\ntry:\n    main(['corpus', 'build', '--help'])\n"
             "except SystemExit:\n    pass\n"
             "print(sorted(m for m in ('dspy', 'litellm', 'chromadb', 'torch', 'umap') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], env=_clean_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_bad_row_stops_with_file_line_and_field(tmp_path, capsys):
    bad = _bad_file(tmp_path)
    code = main(["corpus", "build", "--train", str(bad), "--domain", "math", "--out", "out", "--no-progress",
                 *_dead_teacher()])
    assert code == 2
    error = capsys.readouterr().err
    assert f"{bad}:{BAD_LINE}: field 'question'" in error and "empty question text" in error
    assert error.startswith("instret: error:")
    assert not (tmp_path / "out").exists()  # stopped before writing anything


def test_train_without_domain_is_refused(tmp_path, capsys):
    code = main(["corpus", "build", "--train", str(SAMPLE_GSM8K), "--out", "out", "--no-progress",
                 *_dead_teacher()])
    assert code == 2
    error = capsys.readouterr().err
    assert "--domain is required with --train" in error and "--domain math" in error
    assert not (tmp_path / "out").exists()


def test_missing_train_file_and_non_corpus_are_errors_not_tracebacks(tmp_path, capsys):
    assert main(["corpus", "build", "--train", "nope.jsonl", "--domain", "math", "--no-progress",
                 *_dead_teacher()]) == 2
    assert "question file not found: nope.jsonl" in capsys.readouterr().err
    assert main(["corpus", "show", str(tmp_path)]) == 2
    assert "is not an instret corpus" in capsys.readouterr().err


# --- slow: real builds ----------------------------------------------------------------------------------


@slow
def test_unreachable_teacher_exits_3_and_says_what_to_start(unreachable):
    out, port, result = unreachable
    assert result.returncode == EXIT_INCOMPLETE, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "200 questions" in result.stdout
    assert f"no Ollama server answers at http://127.0.0.1:{port}" in result.stderr
    assert "`ollama serve`" in result.stderr and "`ollama pull qwen2.5:14b`" in result.stderr
    assert "run the same command again" in result.stderr

    manifest = Manifest.load(out)
    assert manifest.complete is False and manifest.n_guides == 0 and manifest.n_clusters >= 2
    assert manifest.teacher["model"] == TEACHER
    assert f"{manifest.n_clusters} of {manifest.n_clusters} guides are still missing" in result.stderr
    assert (out / MANIFEST).is_file() and (out / CLUSTERING).is_file() and (out / QUESTIONS_FILE).is_file()
    assert (out / EMBEDDINGS).is_file() and (out / EMBEDDINGS).stat().st_size > 200 * 384 * 4


@slow
def test_rerun_in_process_reuses_everything(unreachable, tmp_path, capsys):
    shutil.copytree(unreachable[0], tmp_path / "gsm8k")
    code = main(["corpus", "build", "--out", "gsm8k", "--no-progress", *_dead_teacher()])
    captured = capsys.readouterr()
    assert code == EXIT_INCOMPLETE
    assert "embedded 0 new texts (200 from cache)" in captured.out
    assert "`ollama serve`" in captured.err and "`ollama pull qwen2.5:14b`" in captured.err
    assert not Manifest.load(tmp_path / "gsm8k").complete
    assert main(["corpus", "show", "gsm8k"]) == 0
    assert "INCOMPLETE" in capsys.readouterr().out


@slow
def test_skip_bad_rows_continues(unreachable, tmp_path, capsys):
    bad = _bad_file(tmp_path)
    shutil.copytree(unreachable[0], tmp_path / "gsm8k")  # the 200 good rows are the sample's: cached
    code = main(["corpus", "build", "--train", str(bad), "--domain", "grade-school math", "--skip-bad-rows",
                 "--out", "gsm8k", "--no-progress", *_dead_teacher()])
    captured = capsys.readouterr()
    assert code == EXIT_INCOMPLETE  # got past the bad row, all the way to the teacher
    assert "200 questions (0 duplicates merged, 0 skipped for a missing image, 1 bad rows)" in captured.out
    assert f"skipped {bad}:{BAD_LINE}: field 'question': empty question text" in captured.out
    assert "embedded 0 new texts (200 from cache)" in captured.out
    manifest = Manifest.load(tmp_path / "gsm8k")
    assert [s["path"] for s in manifest.sources] == [str(bad)] and len(manifest.question_ids) == 200


@slow
def test_show_prints_every_guide_title(finished, capsys):
    folder, report = finished
    assert main(["corpus", "show", str(folder), "--examples", "2"]) == 0
    text = capsys.readouterr().out
    titles = [g.guide.title for g in Corpus.open(folder).guides()]
    assert len(titles) == report.n_clusters
    assert all(title in text for title in titles)
    assert "200 questions" in text and "INCOMPLETE" not in text
    assert text.count("       - ") == sum(min(2, len(g.question_ids)) for g in Corpus.open(folder).guides())


@slow
def test_map_writes_a_png(finished, tmp_path, capsys):
    folder, _ = finished
    assert main(["corpus", "map", str(folder), "-o", "x.png"]) == 0
    png = tmp_path / "x.png"
    assert "wrote x.png" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@slow
def test_finished_corpus_keeps_its_store_in_the_folder(finished):
    folder, report = finished
    assert (folder / CHROMA).is_dir()
    assert Manifest.load(folder).store == {"path": CHROMA, "name": "gsm8k"}
    assert Corpus.open(folder).store.count() == report.n_clusters
