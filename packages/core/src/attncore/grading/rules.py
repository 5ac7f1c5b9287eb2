"""The grading rule of each mode, applied to one response in the calling process.

`grade_response` has no timeout of its own: a pathological answer can keep sympy busy for minutes. Use it
on trusted text (tests, reference solutions); `Grader` runs it in worker processes with a hard limit.
"""

from __future__ import annotations

from attncore.grading.code import extract_code, passes_tests
from attncore.grading.equivalence import answers_equivalent, extract_final_answer
from attncore.grading.extract import extract_boxed, extract_choice, extract_gsm8k
from attncore.grading.normalize import choice_gold, has_inner_control_characters, numeric_gold, parse_number
from attncore.grading.result import GradeResult, GradingMode, Reason, as_mode
from attncore.think import split_thinking

_WARM_UP = (
    ("</think>So the answer is $\\boxed{\\dfrac{14}{3}}$.", "14/3", GradingMode.ATTNPO),
    (
        "The interval is $\\boxed{(-\\infty, 3) \\cup (5, \\infty)}$.",
        "(-\\infty,3)\\cup(5,\\infty)",
        GradingMode.MATH,
    ),
    ("The final answer is $x = 3$.", "3", GradingMode.MATH),
    ("She pays 5 + 13 = 18 dollars.\n#### 18", "18", GradingMode.GSM8K),
    ("</think>The answer is $\\boxed{C}$.", "C", GradingMode.CHOICE),
)


def grade_response(response: str, gold: str, mode: GradingMode | str = GradingMode.MATH) -> GradeResult:
    """Grade one response against its gold answer under `mode` (see `GradingMode`)."""
    mode = as_mode(mode)
    split = split_thinking(response)
    if mode is GradingMode.GSM8K:
        expected = numeric_gold(gold)
        pred = extract_gsm8k(split.answer)
        if pred is None:
            return GradeResult(False, None, Reason.NO_ANSWER)
        return GradeResult(parse_number(pred) == expected, pred, Reason.OK)
    if mode is GradingMode.CODE:
        code = extract_code(split.answer)
        if code is None:
            return GradeResult(False, None, Reason.NO_ANSWER)
        return GradeResult(passes_tests(code, gold), None, Reason.OK)
    if mode is GradingMode.CHOICE:
        expected_letter = choice_gold(gold)
        pred = extract_choice(split.answer)
        if pred is None:
            return GradeResult(False, None, Reason.NO_ANSWER)
        return GradeResult(pred == expected_letter, pred, Reason.OK)
    if mode is GradingMode.ATTNPO:
        if not split.attnpo_form:
            return GradeResult(False, None, Reason.MALFORMED_THINK)
        pred = extract_boxed(split.answer)
    else:
        pred = extract_boxed(split.answer)
        # math-verify reads free text around a control character as it likes (`4\x002` as 4): none is read.
        if pred is None and not has_inner_control_characters(split.answer):
            pred = extract_final_answer(split.answer)
    if pred is None or not pred.strip():
        return GradeResult(False, pred, Reason.NO_ANSWER)
    return GradeResult(answers_equivalent(gold, pred), pred, Reason.OK)


def warm_up() -> None:
    """Grade a few answers in every mode so that math-verify's regexes and caches are built."""
    for response, gold, mode in _WARM_UP:
        grade_response(response, gold, mode)
