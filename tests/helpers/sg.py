"""Scripted guide and solver models for the Solution Guidance tests, and a worker that writes SG
data in its own process with a slow teacher, so a test can kill it.

    python sg_helpers.py OUT_DIR SECONDS_PER_TEACHER_REPLY N_QUESTIONS
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for `helpers`

from helpers.scripted import scripted_lm  # noqa: E402

GOOD_GUIDANCE = ("Asked: the quantity the question asks for.\nGiven: the numbers stated in the question.\n"
                 "Steps:\n1. Find the quantity each part of the story describes.\n"
                 "2. Combine those quantities as the question says.\n3. Check the result answers the question.")


def field_of(user: str, name: str) -> str:
    """The text of input field `name` in a ChatAdapter prompt."""
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?:\n\n\[\[ ## |\n\nRespond with|\Z)", user, re.S)
    return match.group(1).strip() if match else ""


def guidance_reply(guidance: str) -> str:
    return f"[[ ## guidance ## ]]\n{guidance}\n\n[[ ## completed ## ]]"


def answer_reply(answer) -> str:
    return f"[[ ## reasoning ## ]]\nFollowing the guidance.\n\n[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def gold_solver(golds: dict[str, str]):
    """A solver that answers each question (found by its text) with its gold answer."""

    def respond(system, user):
        return answer_reply(golds.get(field_of(user, "question"), "0"))

    return scripted_lm(respond)


def _main(out: str, delay: float, n: int) -> None:
    from instret.data import SAMPLE_GSM8K
    from instret.data.loaders import load_questions
    from instret.training.sg_data import generate_sg_data

    questions = load_questions(str(SAMPLE_GSM8K)).questions[:n]

    def slow_teacher(system, user):
        time.sleep(delay)
        return guidance_reply(GOOD_GUIDANCE)

    teacher, _ = scripted_lm(slow_teacher)
    solver, _ = gold_solver({q.text: q.answer for q in questions})
    generate_sg_data(questions, teacher=teacher, solver=solver, kind="numeric", out_dir=out, threads=1,
                     progress=False)


if __name__ == "__main__":
    _main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
