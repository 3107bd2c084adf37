"""Guides stay general; the journal survives a torn last line."""

import json

from instret.corpus.guides import Guide, find_leaks, guide_quality
from instret.data.files import Journal
from instret.data.questions import Question


def make_guide(**overrides):
    fields = dict(title="Rates", applies_when="Cost per item questions.", background="Unit rate = total / count.",
                  procedure=["Find the total.", "Find the count.", "Divide."], pitfalls=["Mixing units."])
    return Guide(**(fields | overrides))


QUESTION = Question(text="Tom buys 3 pens for 6 dollars in the shop near his school on a sunny day. "
                         "How much does one pen cost?", answer="2")


def test_general_guide_has_no_leaks():
    assert find_leaks(make_guide(), [QUESTION]) == []
    assert guide_quality(make_guide(), [QUESTION]) == 1.0


def test_copied_question_and_stated_answer_are_leaks():
    copying = make_guide(background="Tom buys 3 pens for 6 dollars in the shop near his school on a sunny day.")
    answering = make_guide(procedure=["Divide 6 by 3.", "So the answer is 2.", "Check."])
    assert any("verbatim" in leak for leak in find_leaks(copying, [QUESTION]))
    assert any("states the answer" in leak for leak in find_leaks(answering, [QUESTION]))
    assert guide_quality(answering, [QUESTION]) < 1.0


def test_render_numbers_steps_once():
    text = make_guide(procedure=["1. Find the total.", "Step 2: Find the count.", "Divide."]).render()
    assert "1. Find the total.\n2. Find the count.\n3. Divide." in text


def test_journal_cuts_a_torn_last_line(tmp_path):
    journal = Journal(tmp_path / "guides.jsonl", key="guide_id")
    journal.append({"guide_id": "a", "n": 1})
    with open(journal.path, "a") as handle:
        handle.write('{"guide_id": "b", "n"')  # what kill -9 mid-write leaves
    reopened = Journal(journal.path, key="guide_id")
    assert set(reopened.read()) == {"a"}
    reopened.append({"guide_id": "c", "n": 3})
    lines = journal.path.read_text().splitlines()
    assert [json.loads(line)["guide_id"] for line in lines] == ["a", "c"]
