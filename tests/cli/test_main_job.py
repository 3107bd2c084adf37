"""The README's main job, `instret corpus build` with no arguments, end to end over HTTP."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.loopback import LoopbackServer

INSTRET = str(Path(sys.executable).parent / "instret")


@pytest.mark.slow
def test_readme_main_job_against_an_ollama_server(tmp_path):
    with LoopbackServer(models=("qwen2.5:14b",), context_length=32768) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INSTRET_", "OLLAMA_"))}
        env |= {"OLLAMA_HOST": server.url, "DSPY_CACHEDIR": str(tmp_path / "dspy-cache"),
                "INSTRET_TEACHER": "ollama_chat/qwen2.5:14b"}  # the default teacher is the local engine's
        build = subprocess.run([INSTRET, "corpus", "build", "--no-progress"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=600)
        chats = server.requests_for("/api/chat")
    assert build.returncode == 0, build.stderr
    assert "Done." in build.stdout and "0 failed" in build.stdout
    assert re.search(r"^time: embed [\d.]+ s, cluster [\d.]+ s, write guides .+ s, store [\d.]+ s$", build.stdout, re.M)
    show = subprocess.run([INSTRET, "corpus", "show", "corpora/gsm8k-sample"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert show.returncode == 0 and "200 questions" in show.stdout and "INCOMPLETE" not in show.stdout
    n_clusters = int(show.stdout.split(" clusters")[0].rsplit(" ", 1)[-1])
    assert len(chats) == n_clusters
    # Ollama's small default window would cut the teacher's examples off: instret sizes it.
    num_ctx = {r.options.get("num_ctx") for r in chats}
    assert len(num_ctx) == 1 and num_ctx.pop() in (2048, 4096, 8192)
