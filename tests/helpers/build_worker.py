"""Run a corpus build in its own process with a slow scripted teacher, so a test can kill it."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for `helpers`

from helpers.scripted import guide_response, scripted_lm  # noqa: E402

from instret import build_corpus  # noqa: E402
from instret.data import SAMPLE_GSM8K  # noqa: E402
from instret.data.loaders import load_questions  # noqa: E402


def slow_guide(system, user):
    time.sleep(float(sys.argv[2]))
    return guide_response(system, user)


if __name__ == "__main__":
    lm, _ = scripted_lm(slow_guide)
    questions = load_questions(str(SAMPLE_GSM8K)).questions
    build_corpus(questions, sys.argv[1], domain="grade-school math", teacher=lm, threads=1, progress=False)
