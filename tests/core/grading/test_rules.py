"""Per-mode grading rules and answer equivalence, run in-process (no pool, no timeout)."""

from __future__ import annotations

import pytest

from attncore.errors import UserError
from attncore.grading import GradeResult, Reason
from attncore.grading.rules import grade_response

# (gold, equivalent prediction)
EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("0.5", "\\frac{1}{2}"),
    ("14/3", "\\dfrac{14}{3}"),
    ("\\dfrac{14}{3}", "14/3"),
    ("3", "x=3"),
    ("3", "3.0"),
    ("025", "25"),
    ("(1,2]", "(1, 2]"),
    ("(-\\infty, 3) \\cup (5, \\infty)", "(-\\infty,3)\\cup(5,\\infty)"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("90^\\circ", "90"),
    ("\\text{Evelyn}", "Evelyn"),
    ("\\text{(C)}", "C"),
    ("10,\\!000", "10000"),
    ("5\\text{ cm}", "5"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("x^2+1", "1+x^2"),
    ("1,2,3", "3,2,1"),
    ("\\frac{1}{3}", "0.333333"),
    ("528", "52_8"),
    ("4210_{5}", "4210_5"),
]

# (gold, wrong prediction)
NOT_EQUIVALENT = [
    ("2", "3"),
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("14/3", "3/14"),
    ("(1,2)", "[1,2]"),
    ("[1,2)", "(1,2]"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi)"),
    ("90^\\circ", "91"),
    ("\\text{Evelyn}", "\\text{Bob}"),
    ("\\text{(C)}", "\\text{(D)}"),
    ("x^2+1", "x^2-1"),
    ("1,2", "1,3"),
    ("\\frac{1}{3}", "0.333"),
    (".0000672", ".0000673"),
    ("4210_{5}", "4210_{6}"),
    ("-1", "1"),
]


# The attnpo response also boxes a wrong answer inside its thinking, which must not count.
RESPONSE_TEMPLATES = {
    "math": "Some work first: $2 + 2 = 4$.\n\nSo the answer is $\\boxed{{{pred}}}$.",
    "attnpo": "Let me think. Maybe \\boxed{{wrong}}.</think>The answer is $\\boxed{{{pred}}}$.",
}


@pytest.mark.parametrize("mode", ["math", "attnpo"])
@pytest.mark.parametrize(("gold", "pred"), EQUIVALENT)
def test_equivalent_answers_are_correct(gold: str, pred: str, mode: str) -> None:
    response = RESPONSE_TEMPLATES[mode].format(pred=pred)
    assert grade_response(response, gold, mode) == GradeResult(True, pred, Reason.OK)


@pytest.mark.parametrize("mode", ["math", "attnpo"])
@pytest.mark.parametrize(("gold", "pred"), NOT_EQUIVALENT)
def test_different_answers_are_wrong(gold: str, pred: str, mode: str) -> None:
    response = RESPONSE_TEMPLATES[mode].format(pred=pred)
    assert grade_response(response, gold, mode) == GradeResult(False, pred, Reason.OK)


@pytest.mark.parametrize(
    ("response", "correct", "pred"),
    [
        ("Therefore, the final answer is $\\frac{14}{3}$.", True, "\\frac{14}{3}"),
        ("The answer is 14/3", True, "14/3"),
        ("The answer is 5.", False, "5"),
        # Only the text after the last </think> counts, box or not.
        ("<think>the answer is \\boxed{14/3}</think>\nIt is $\\boxed{5}$.", False, "5"),
        ("<think>\\boxed{5}</think>\nThe final answer is $\\frac{14}{3}$.", True, "\\frac{14}{3}"),
    ],
)
def test_math_mode_falls_back_to_math_verify_extraction(response: str, correct: bool, pred: str) -> None:
    assert grade_response(response, "\\frac{14}{3}", "math") == GradeResult(correct, pred, Reason.OK)


def test_math_mode_without_any_answer() -> None:
    assert grade_response("I do not know.", "3", "math") == GradeResult(False, None, Reason.NO_ANSWER)
    assert grade_response("$\\boxed{ }$", "3", "math").reason is Reason.NO_ANSWER


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Thinking.</think>\\boxed{3}", GradeResult(True, "3", Reason.OK)),
        ("<think>Thinking.</think>\\boxed{3}", GradeResult(False, None, Reason.MALFORMED_THINK)),
        ("Think.</think>More.</think>\\boxed{3}", GradeResult(False, None, Reason.MALFORMED_THINK)),
        ("No thinking tags at all: \\boxed{3}", GradeResult(False, None, Reason.MALFORMED_THINK)),
        ("\\boxed{3} inside the thinking only</think>so, three.", GradeResult(False, None, Reason.NO_ANSWER)),
        ("Thinking.</think>The answer is 3.", GradeResult(False, None, Reason.NO_ANSWER)),
        ("Thinking.</think>\\boxed{3", GradeResult(False, None, Reason.NO_ANSWER)),
    ],
)
def test_attnpo_mode_requires_one_close_tag_and_a_box_after_it(response: str, expected: GradeResult) -> None:
    assert grade_response(response, "3", "attnpo") == expected


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        ("5 + 13 = 18\n#### 18", "18", GradeResult(True, "18", Reason.OK)),
        ("#### $18.00", "18", GradeResult(True, "18.00", Reason.OK)),
        ("#### 1,234 apples.", "1234", GradeResult(True, "1234", Reason.OK)),
        ("#### 0.5", "1/2", GradeResult(True, "0.5", Reason.OK)),
        ("#### 17", "18", GradeResult(False, "17", Reason.OK)),
        ("#### 18\nActually no.\n#### 19", "18", GradeResult(False, "19", Reason.OK)),
        ("The answer is 18.", "18", GradeResult(False, None, Reason.NO_ANSWER)),
        ("<think>#### 18</think>I am not sure.", "18", GradeResult(False, None, Reason.NO_ANSWER)),
    ],
)
def test_gsm8k_mode_compares_the_last_marked_number(response: str, gold: str, expected: GradeResult) -> None:
    assert grade_response(response, gold, "gsm8k") == expected


def test_gsm8k_mode_rejects_a_non_numeric_gold() -> None:
    with pytest.raises(UserError, match="numeric gold"):
        grade_response("#### 3", "\\frac{1}{2}", "gsm8k")


def test_unknown_mode_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown grading mode 'maths'"):
        grade_response("\\boxed{3}", "3", "maths")
