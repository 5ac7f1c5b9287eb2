"""The mathd-style answer normal form and plain-number parsing."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attncore.errors import UserError
from attncore.grading import normalize_answer, parse_number
from attncore.grading.normalize import mark_control_characters, numeric_gold
from attncore.grading.rules import grade_response


@pytest.mark.parametrize(
    ("answer", "normal"),
    [
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("\\dfrac{14}{3}", "\\frac{14}{3}"),
        ("\\tfrac12", "\\frac{1}{2}"),
        ("\\frac 34", "\\frac{3}{4}"),
        ("\\frac{\\pi}3", "\\frac{\\pi}{3}"),
        ("14/3", "\\frac{14}{3}"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("\\text{Evelyn}", "Evelyn"),
        ("\\text{(C)}", "C"),
        ("x = 3", "3"),
        ("a_1 = 5", "5"),
        ("x + y = 3", "x+y=3"),
        ("10,\\!000", "10000"),
        ("\\$32,348", "32348"),
        ("1,2,3", "1,2,3"),
        ("5\\text{ cm}^2", "5"),
        ("864 \\mbox{ inches}^2", "864"),
        ("50\\%", "50"),
        ("\\sqrt3", "\\sqrt{3}"),
        ("\\sqrt[3]{2}", "\\sqrt[3]{2}"),
        (".5", "0.5"),
        ("-.5", "-0.5"),
        ("52_8", "528"),
        ("4210_{5}", "42105"),
        ("x_1", "x_1"),
        ("12.", "12"),
        ("3\x00\x00", "3"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        ("(-\\infty, 3) \\cup (5, \\infty)", "(-\\infty,3)\\cup(5,\\infty)"),
    ],
)
def test_normalize_answer_cases(answer: str, normal: str) -> None:
    assert normalize_answer(answer) == normal


@given(st.integers(min_value=0, max_value=10**15))
def test_thousands_separators_do_not_change_the_normal_form(value: int) -> None:
    assert normalize_answer(f"{value:,}") == normalize_answer(str(value)) == str(value)


@given(st.integers(min_value=-999, max_value=999), st.integers(min_value=1, max_value=999))
def test_fraction_spellings_share_a_normal_form(numerator: int, denominator: int) -> None:
    expected = f"\\frac{{{numerator}}}{{{denominator}}}"
    for spelling in (
        f"{numerator}/{denominator}",
        f"\\dfrac{{{numerator}}}{{{denominator}}}",
        f"$ {expected} $",
    ):
        assert normalize_answer(spelling) == expected


@given(st.integers(min_value=0, max_value=360), st.sampled_from(["^\\circ", "^{\\circ}", "°", " ^ {\\circ}"]))
def test_degree_signs_are_dropped(value: int, degree: str) -> None:
    assert normalize_answer(f"{value}{degree}") == str(value)


@given(st.text(max_size=300))
def test_normal_form_has_no_whitespace_and_never_raises(text: str) -> None:
    normal = normalize_answer(text)
    assert not any(char.isspace() for char in normal)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("18", Fraction(18)),
        ("-3.50", Fraction(-7, 2)),
        (".5", Fraction(1, 2)),
        ("3/4", Fraction(3, 4)),
        ("025", Fraction(25)),
    ],
)
def test_parse_number_reads_plain_numbers(text: str, value: Fraction) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["1,000", "x", "1/0", "9" * 5000, "1e5", "", "\\frac{1}{2}"])
def test_parse_number_rejects_everything_else(text: str) -> None:
    assert parse_number(text) is None


def test_numeric_gold_accepts_commas_and_rejects_latex() -> None:
    assert numeric_gold("$1,234") == Fraction(1234)
    with pytest.raises(UserError, match="numeric gold"):
        numeric_gold("\\frac{1}{2}")


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x0c", "\x1f", "\x7f", "\x85", "\u200b", "\ufeff"])
@pytest.mark.parametrize(
    ("response", "clean", "mode"),
    [
        ("So the answer is \\boxed{4@2}.", "So the answer is \\boxed{@42@}.", "math"),
        ("</think>So the answer is \\boxed{4@2}.", "</think>So the answer is \\boxed{@42@}.", "attnpo"),
        ("The answer is 4@2.", "@The answer is 42.@", "math"),
        ("5 + 37 = 42\n#### 4@2", "5 + 37 = 42\n#### @42@", "gsm8k"),
    ],
)
def test_a_control_character_inside_an_answer_never_makes_it_right(response, clean, mode, control) -> None:
    """`4<NUL>2` is neither 42 nor 4 nor 2 (control characters used to be deleted, and math-verify reads
    free text around one as 4); at the ends of an answer they are dropped."""
    answer = response.replace("@", control)
    for gold in ("42", "4", "2"):
        assert not grade_response(answer, gold, mode).correct, (answer, gold)
    assert grade_response(clean.replace("@", control), "42", mode).correct


def test_the_control_class_is_unicode_control_and_format_characters() -> None:
    """Every character the grader treats as a control character is one (Cc or Cf), and every Cc is."""
    import sys
    import unicodedata

    marked = [c for c in map(chr, range(sys.maxunicode + 1)) if mark_control_characters(f"a{c}b") != f"a{c}b"]
    assert {unicodedata.category(c) for c in marked} == {"Cc", "Cf"}
    controls = {chr(c) for c in range(0x100) if unicodedata.category(chr(c)) == "Cc"} - set("\t\n\r")
    assert controls <= set(marked)
    assert normalize_answer("4\x002") != normalize_answer("42")
