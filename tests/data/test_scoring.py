"""Scoring per answer kind: what counts as the same answer, and what is a parse failure."""

import pytest

from instret.data.questions import Question
from instret.data.scoring import (ScoredAnswer, canonical_answer, extract_answer, normalize_math, recover_answer, score,
                             score_answer)
from instret.signatures.answering import answer_signature, kind_of


@pytest.mark.parametrize("predicted, gold", [
    ("18", "18"), ("18.0", "18"), (18.0, "18"), (18, "18.00"), ("$18", "18"), ("\\$18", "18"), ("$ 18", "18"),
    ("1,000", "1000"), ("1000", "1,000"), ("$1,234.50", "1234.5"), ("18 dollars", "18"), ("18 apples.", "18"),
    ("-5", "-5"), ("−5", "-5"), ("-$5", "-5"), ("$-5", "-5"), ("50%", "50"), ("50 percent", "50"), ("0.5", ".5"),
    ("3/4", "0.75"), ("\\frac{3}{4}", "0.75"), ("$18$", "18"), ("\\boxed{18}", "18"), (0.1 + 0.2, "0.3"),
    ("The answer is 18.", "18"), ("so she pays 3 * 6 = $18.", "18"), ("3 + 4 = 7\n#### 7", "7"),
    ("Answer: 1,080 cookies", "1080"),
])
def test_numeric_equal(predicted, gold):
    assert score("numeric", predicted, gold)


@pytest.mark.parametrize("predicted, gold", [
    ("17", "18"), (17.999, "18"), ("1000001", "1000000"), ("0.5", "50"), ("1,5", "15"), ("-18", "18"),
])
def test_numeric_different(predicted, gold):
    result = score_answer("numeric", predicted, gold)
    assert not result.correct and not result.parse_failed


@pytest.mark.parametrize("predicted", ["eighteen", "", "   ", None, float("nan"), float("inf"), True, "I don't know"])
def test_numeric_parse_failure_scores_wrong(predicted):
    assert score_answer("numeric", predicted, "18") == ScoredAnswer(correct=False, parsed=None, parse_failed=True)


def test_numeric_canonical_text():
    assert canonical_answer("numeric", 18.0) == "18"
    assert canonical_answer("numeric", "$1,234.50") == "1234.5"
    assert canonical_answer("numeric", "1/3") == "1/3"
    assert score_answer("numeric", "$1,000", "1000") == ScoredAnswer(True, "1000", False)


@pytest.mark.parametrize("predicted, gold", [
    ("\\frac{1}{2}", "0.5"), ("0.5", "\\frac12"), ("1/2", "\\frac{1}{2}"), ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("\\tfrac12", "0.5"), ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"), ("$\\frac{1}{2}$", "\\frac{1}{2}"),
    ("\\frac {1} {2}", "\\frac{1}{2}"), ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("\\left(3, \\frac\\pi2\\right)", "(3,\\frac{\\pi}{2})"), ("5.", "5"), ("30^\\circ", "30"), ("30^{\\circ}", "30"),
    ("\\text{Monday}", "Monday"), ("\\text{even}", "\\text{ even }"), ("5\\text{ cm}", "5"), ("5 cm", "5"),
    ("10\\%", "10"), ("x = 5", "5"), ("\\$18", "18"), ("1,000", "1000"), ("2\\sqrt{3}", "\\sqrt{12}"),
    ("\\sqrt3", "\\sqrt{3}"), ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"), ("(0.5, 1]", "(\\frac12,1]"),
    ("3, 1, 2", "1,2,3"), ("\\text{(C)}", "C"), ("-\\frac{1}{2}", "-0.5"), ("\\fbox{7}", "7"),
    ("The final answer is $\\frac{1}{2}$.", "\\frac12"), ("2^{10}", "1024"), ("\\infty", "\\infty"),
])
def test_expression_equal(predicted, gold):
    assert score("expression", predicted, gold)


@pytest.mark.parametrize("predicted, gold", [
    ("\\frac{1}{3}", "0.333"), ("(1,2)", "(2,1)"), ("(1,2)", "[1,2]"), ("x+1", "x+2"), ("\\sqrt{2}", "2"),
    ("1,2", "1,2,3"), ("2\\pi", "6.28"), ("\\frac{1}{2}", "\\frac{1}{0}"), ("5x", "5"), ("2i", "2"),
    ("1000000000001", "1000000000000"), ("10^{12}+1", "10^{12}"),
])
def test_expression_different(predicted, gold):
    result = score_answer("expression", predicted, gold)
    assert not result.correct and not result.parse_failed


def test_expression_normalizer():
    assert normalize_math("\\boxed{\\left( \\dfrac{1}{2}, 3 \\right).}") == "(\\frac{1}{2},3)"
    assert normalize_math("$\\frac12$") == "\\frac{1}{2}"
    assert score_answer("expression", "", "5").parse_failed
    assert score_answer("expression", "\\boxed{}", "5").parse_failed


def test_expression_evaluation_is_safe():
    # Never eval-ed: names and huge powers are simply not numbers, and nothing hangs.
    assert not score("expression", "__import__('os')", "0")
    assert not score("expression", "9^{9^{9^{9}}}", "1")
    assert score("expression", "9^{9^{9^{9}}}", "9^{9^{9^{9}}}")  # still equal as text


@pytest.mark.parametrize("predicted", [
    "B", "b", "(B)", "(b)", "B.", "B)", "B) 42 apples", "B: 42 apples", "[B]", "**B**", "Option B", "Answer: B",
    "The answer is B", "The correct answer is (B).", "the answer is b.", "\\boxed{B}", "I think the answer is **B**",
])
def test_letters(predicted):
    assert score_answer("choice", predicted, "B") == ScoredAnswer(True, "B", False)


@pytest.mark.parametrize("predicted", ["A patient presents", "Because it is", "The answer is a bit unclear",
                                       "", "none of them", "(A) or (B)"])
def test_letters_unparseable(predicted):
    assert score_answer("choice", predicted, "A").parse_failed


def test_letter_wrong_and_option_text():
    assert score_answer("choice", "C", "B") == ScoredAnswer(False, "C", False)
    assert extract_answer("choice", "Insulin", options={"A": "Glucagon", "B": "Insulin"}) == "B"


def test_extract_answer_from_free_text():
    assert extract_answer("numeric", "She has 3 + 4 = 7 apples, then buys 11 more, so 18 in all.") == "18"
    assert extract_answer("numeric", "#### 1,080") == "1080"
    assert extract_answer("numeric", "no digits here") is None
    assert extract_answer("expression", "so $x = \\boxed{\\dfrac{3}{4}}$ and we are done") == "\\frac{3}{4}"
    assert extract_answer("expression", "a long explanation\nwith no marked answer at all in it") is None
    assert extract_answer("choice", "Looking at each option... The answer is (D).") == "D"


def test_recover_answer_from_unparseable_reply():
    from dspy.utils.exceptions import AdapterParseError

    import dspy

    reply = "[[ ## reasoning ## ]]\n3 boxes of 6\n\n[[ ## answer ## ]]\n$18 dollars\n\n[[ ## completed ## ]]"
    error = AdapterParseError("ChatAdapter", dspy.Signature("question -> answer: float"), reply)
    assert recover_answer("numeric", error) == "18"
    assert recover_answer("numeric", ValueError("no reply attached")) is None


def test_kind_of():
    assert kind_of("gsm8k") == kind_of("SVAMP") == kind_of("grade-school math") == "numeric"
    assert kind_of("MATH") == kind_of("competition math") == "expression"
    assert kind_of("medqa") == kind_of("HEAD-QA") == kind_of("mmlu") == "choice"
    assert kind_of(Question("Which?", answer="B", options={"A": "x", "B": "y"})) == "choice"
    assert kind_of(Question("How many?", answer="18", solution="... #### 18")) == "numeric"
    assert kind_of(Question("Find x.", answer="5", solution="so $x=\\boxed{5}$")) == "expression"
    with pytest.raises(ValueError, match="numeric, expression, choice"):
        kind_of("poetry")
    with pytest.raises(ValueError, match="unknown answer kind"):
        score("letters", "B", "B")


def test_answer_signature_per_kind():
    numeric, choice = answer_signature("numeric", guided=False), answer_signature("choice", guided=True)
    assert numeric.output_fields["answer"].annotation is float and "guides" not in numeric.input_fields
    assert list(choice.input_fields) == ["question", "options", "guides"]
    assert "reference material" in choice.input_fields["guides"].json_schema_extra["desc"]
    assert "LaTeX" in answer_signature("expression", guided=True).output_fields["answer"].json_schema_extra["desc"]
    with pytest.raises(ValueError, match="kind_of"):
        answer_signature("letters", guided=True)
