"""Final answers of competition math (MATH): LaTeX normalized, then compared exactly.

`normalize_math` strips what does not change the value (`\\boxed`, `\\left`, units, `\\dfrac`, spacing);
`expressions_equal` compares two normalized answers, evaluating constant expressions with exact
fractions (floats only for roots and pi) by walking the syntax tree: model output is never `eval`-ed.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from fractions import Fraction

_SPACING = re.compile(r"\\[!,;:> ]|\\q?quad|~")
_SIZERS = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|textnormal|operatorname)\s*\{([^{}]*)\}")
_RIGHT_UNITS = re.compile(r"^(.*?[\d}])\s*\\(?:text|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z .]*\}(?:\^\{?\d\}?)?$")
_BARE_UNITS = re.compile(r"^(-?[\d.,/]+)\s+[A-Za-z]{2,}(?:\s+[A-Za-z]+)*\.?$")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree")


def normalize_math(text: str) -> str:
    r"""Canonical text of a MATH final answer: `\boxed{}`, `$`, `\left(`, `\dfrac`, `\text{}`,
    `^\circ`, spaces and a trailing period are all stripped, `\frac12` becomes `\frac{1}{2}`."""
    text = str(text).strip()
    boxed = boxed_answer(text)
    if boxed is not None:
        text = boxed
    text = strip_math_wrappers(text)
    text = _RIGHT_UNITS.sub(r"\1", text)  # "5\text{ cm}" -> "5"
    text = _BARE_UNITS.sub(r"\1", text)   # "5 cm" -> "5"
    text = text.replace("\\$", "").replace("\\%", "").replace("%", "").replace("\\displaystyle", "")
    text = _DEGREES.sub("", text)
    text = _SPACING.sub("", _SIZERS.sub("", text))
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    while _TEXT_WRAPPER.search(text):
        text = _TEXT_WRAPPER.sub(r"\1", text)
    text = re.sub(r"\s+", "", text).rstrip(".").replace("$", "")
    text = re.sub(r"(?<![\d}.])\.(\d)", r"0.\1", text)  # ".5" -> "0.5"
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")  # thousands separators; tuples keep their commas
    # Brace one-token arguments: "\frac12", "\frac\pi2", "\frac{1}2" -> "\frac{1}{2}".
    text = re.sub(r"\\frac(?!\{)(\\[a-zA-Z]+|\w)", r"\\frac{\1}", text)
    text = re.sub(r"\\frac\{([^{}]*)\}(?!\{)(\\[a-zA-Z]+|\w)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\sqrt(\d|[a-zA-Z](?![a-zA-Z]))", r"\\sqrt{\1}", text)
    text = re.sub(r"^(-?\d+)/(\d+)$", r"\\frac{\1}{\2}", text)
    assignment = re.fullmatch(r"[a-zA-Z](?:_\{?\w+\}?)?=([^=]+)", text)
    if assignment:
        text = assignment.group(1)  # "x=5" -> "5"
    letter = re.fullmatch(r"\(([A-Za-z])\)", text)
    return letter.group(1) if letter else text


def expressions_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    if re.fullmatch(r"[A-Za-z]{2,}", a) and re.fullmatch(r"[A-Za-z]{2,}", b):
        return a.lower() == b.lower()  # words such as "Monday", "even"
    x, y = _latex_value(a), _latex_value(b)
    if isinstance(x, Fraction) and isinstance(y, Fraction):
        return x == y  # exactly, so 10^{12}+1 is not 10^{12}
    if x is not None and y is not None:  # roots or pi: equal up to float rounding
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
    parts_a, parts_b = _top_level_parts(a), _top_level_parts(b)
    if parts_a is None or parts_b is None or len(parts_a[1]) != len(parts_b[1]) or len(parts_a[1]) < 2:
        return False
    (brackets_a, items_a), (brackets_b, items_b) = parts_a, parts_b
    if brackets_a != brackets_b:
        return False
    if brackets_a:  # tuples and intervals: in order
        return all(expressions_equal(x, y) for x, y in zip(items_a, items_b))
    remaining = list(items_b)  # "all solutions, separated by commas": any order
    for item in items_a:
        match = next((i for i, other in enumerate(remaining) if expressions_equal(item, other)), None)
        if match is None:
            return False
        remaining.pop(match)
    return True


def _top_level_parts(text: str) -> tuple[str, list[str]] | None:
    """("()", items) for "(a,b)", ("", items) for "a,b"; None when unbalanced."""
    brackets = ""
    if len(text) >= 2 and text[0] in "([" and text[-1] in ")]":
        brackets, text = text[0] + text[-1], text[1:-1]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if depth < 0:
            return None
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return brackets, items


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.USub: operator.neg, ast.UAdd: operator.pos}


def _latex_value(text: str) -> Fraction | float | None:
    r"""The value of a constant expression (`\frac{\sqrt{3}}{2}`, `2^{10}`, `2\pi`); None otherwise.

    Only digits, + - * / ^, \frac, \sqrt and \pi are understood. Evaluation walks the syntax tree
    (model output is never `eval`-ed), exactly with fractions until a root or pi needs floats.
    """
    if len(text) > 300:
        return None
    expression = text
    for _ in range(20):  # innermost first; nesting deeper than this is not a plain number
        replaced = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", expression)
        replaced = re.sub(r"\\sqrt\[([^{}\]]*)\]\{([^{}]*)\}", r"((\2)^(1/(\1)))", replaced)
        replaced = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", replaced)
        if replaced == expression:
            break
        expression = replaced
    expression = expression.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/")
    expression = expression.replace("{", "(").replace("}", ")").replace("^", "**")
    if not re.fullmatch(r"(?:[\d.+\-*/()]|sqrt|pi)+", expression) or not re.search(r"\d|pi", expression):
        return None
    # Implicit multiplication: 2sqrt(3), 2pi, )(, 3(
    expression = re.sub(r"(\d|\)|pi)(?=sqrt|pi|\()", r"\1*", expression)
    expression = re.sub(r"(\)|pi)(?=\d)", r"\1*", expression)
    try:
        return _evaluate(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError):
        return None


def _evaluate(node) -> Fraction | float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return Fraction(str(node.value))
    if isinstance(node, ast.Name) and node.id == "pi":
        return math.pi
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "sqrt" and len(node.args) == 1:
        return _power(_evaluate(node.args[0]), Fraction(1, 2))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError(f"unsupported expression node {type(node).__name__}")


def _power(base, exponent):
    if isinstance(base, Fraction) and isinstance(exponent, Fraction) and exponent.denominator == 1:
        if abs(exponent) * max(base.numerator.bit_length(), base.denominator.bit_length()) > 4096:
            raise ValueError("too large to be a final answer")  # 9^{9^{9}} would take forever exactly
        return base ** int(exponent)
    if base < 0 and (not isinstance(exponent, Fraction) or exponent.denominator != 1):
        raise ValueError("complex value")
    if isinstance(base, Fraction) and exponent == Fraction(1, 2):
        root = Fraction(math.isqrt(base.numerator), math.isqrt(base.denominator))
        if root * root == base:
            return root  # sqrt{4/9} stays exact
    return float(base) ** float(exponent)


def boxed_answer(text: str) -> str | None:
    """The last `\\boxed{}` (or `\\fbox{}`) of a model's text."""
    from instret.data.formats import last_boxed

    return last_boxed(text.replace("\\fbox{", "\\boxed{"))


def strip_math_wrappers(text: str) -> str:
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            return text[len(left):-len(right)].strip()
    return text
