"""Arithmetic statements in text: the `a op b = c` equations that traces write and the oracle reads.

The generator renders every computation with `render_equation`; the oracle parses any text back with
`parse_equations`, so both sides agree on what counts as a computation. Values are exact `Fraction`s,
so `7 / 2 = 3.5` and `1,200 + 5 = 1205` compare without rounding.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

# Operator symbols a trace may use, mapped to the canonical "+", "-", "*", "/".
OPERATORS = {"+": "+", "-": "-", "−": "-", "×": "*", "*": "*", "x": "*", "÷": "/", "/": "/"}
# How the generator writes each canonical operator.
SYMBOLS = {"+": "+", "-": "-", "*": "×", "/": "÷"}
INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}

_NUMBER = r"\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_OPERATOR = r"[+\-−×*x÷/]"
_EQUATION = re.compile(
    rf"(?<![\w.$])(?P<expr>{_NUMBER}(?:\s*{_OPERATOR}\s*{_NUMBER})+)\s*=\s*(?P<result>-?{_NUMBER})(?!\d|,\d)"
)
_TOKEN = re.compile(rf"{_NUMBER}|{_OPERATOR}")
_NUMBER_ONLY = re.compile(rf"(?<![\w.])-?{_NUMBER}(?!\d)")


def parse_number(text: str) -> Fraction:
    """'1,200' -> 1200, '$4' -> 4, '2.5' -> 5/2, '-3' -> -3."""
    return Fraction(text.replace(",", "").replace("$", ""))


def format_number(value: Fraction | int) -> str:
    """Exact integers without a decimal point, other values as a plain decimal."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    return format(float(value), "g")


def apply(operator: str, left: Fraction | int, right: Fraction | int) -> Fraction:
    """`left operator right` for a canonical operator; division by zero raises ZeroDivisionError."""
    a, b = Fraction(left), Fraction(right)
    if operator == "+":
        return a + b
    if operator == "-":
        return a - b
    if operator == "*":
        return a * b
    if operator == "/":
        return a / b
    raise ValueError(f"unknown operator {operator!r}")


def evaluate(operands: tuple[Fraction, ...], operators: tuple[str, ...]) -> Fraction:
    """A flat expression with the usual precedence (× and ÷ before + and −), left to right."""
    terms: list[Fraction] = [operands[0]]
    signs: list[str] = []
    for operator, operand in zip(operators, operands[1:], strict=True):
        if operator in "*/":
            terms[-1] = apply(operator, terms[-1], operand)
        else:
            signs.append(operator)
            terms.append(operand)
    total = terms[0]
    for sign, term in zip(signs, terms[1:], strict=True):
        total = apply(sign, total, term)
    return total


@dataclass(frozen=True)
class Equation:
    """One `expression = result` statement found in a text; `correct` says whether the arithmetic holds."""

    operands: tuple[Fraction, ...]
    operators: tuple[str, ...]
    result: Fraction
    correct: bool
    span: tuple[int, int]


def parse_equations(text: str) -> list[Equation]:
    """Every flat `a op b [op c ...] = r` statement in `text`, in order; stated results are kept even when wrong."""
    found = []
    for match in _EQUATION.finditer(text):
        tokens = _TOKEN.findall(match.group("expr"))
        operands = tuple(parse_number(t) for t in tokens[0::2])
        operators = tuple(OPERATORS[t] for t in tokens[1::2])
        result = parse_number(match.group("result"))
        try:
            correct = evaluate(operands, operators) == result
        except ZeroDivisionError:
            correct = False
        found.append(Equation(operands, operators, result, correct, match.span()))
    return found


def stray_equals(text: str, equations: list[Equation]) -> int:
    """How many '=' signs in `text` lie outside the parsed equations (a sign of garbled arithmetic)."""
    covered = sum(text.count("=", *eq.span) for eq in equations)
    return text.count("=") - covered


def numbers_in(text: str) -> Iterator[Fraction]:
    """Every number written in digits in `text` (the quantities of a problem statement)."""
    for match in _NUMBER_ONLY.finditer(text):
        yield parse_number(match.group())


def render_equation(left: int, operator: str, right: int, result: int) -> str:
    """The generator's way of writing one computation, e.g. `36 ÷ 4 = 9`."""
    return f"{left} {SYMBOLS[operator]} {right} = {result}"
