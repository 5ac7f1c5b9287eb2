"""Multiple-choice letters and code execution: extraction, the grading rules, and the worker pool."""

from __future__ import annotations

import json

import pytest

from attncore.errors import UserError
from attncore.grading import Grader, Reason
from attncore.grading.code import extract_code, passes_tests, same_stdout
from attncore.grading.extract import extract_choice
from attncore.grading.rules import grade_response


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("So the answer is $\\boxed{B}$.", "B"),
        ("\\boxed{(C)}", "C"),
        ("\\boxed{\\text{D}}", "D"),
        ("\\boxed{\\textbf{(A)}}", "A"),
        ("\\boxed{B) 42}", "B"),
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("The correct option is **D**", "D"),
        ("I compared them.\n(C)", "C"),
        ("the answer is A, since", "A"),
        ("\\boxed{42}", None),
        ("A train leaves at 3 pm and arrives at 5 pm.", None),
        ("The answer is a number", None),
        ("Answer: (B) or maybe \\boxed{C}", "C"),
    ],
)
def test_extract_choice(text, letter):
    assert extract_choice(text) == letter


def test_choice_rule_reads_the_answer_after_thinking():
    assert grade_response("Maybe \\boxed{A}? </think>The answer is \\boxed{C}.", "C", "choice").correct
    wrong = grade_response("</think>\\boxed{A}", "C", "choice")
    assert (wrong.correct, wrong.pred, wrong.reason) == (False, "A", Reason.OK)
    assert grade_response("I am not sure.", "C", "choice").reason == Reason.NO_ANSWER
    assert grade_response("\\boxed{c}", "(C)", "choice").correct is False, "letters are upper case"
    with pytest.raises(UserError, match="option letters"):
        grade_response("\\boxed{C}", "42", "choice")


STDIN_SPEC = json.dumps(
    {
        "fn_name": None,
        "tests": [
            {"input": "2 3\n", "output": "5\n", "testtype": "stdin"},
            {"input": "10 -4\n", "output": "6", "testtype": "stdin"},
        ],
    }
)
FUNCTIONAL_SPEC = json.dumps(
    {
        "fn_name": "twoSum",
        "tests": [
            {"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "testtype": "functional"},
            {"input": "[3, 2, 4]\n6", "output": "[1, 2]", "testtype": "functional"},
        ],
    }
)
ADD = "a, b = map(int, input().split())\nprint(a + b)\n"
TWO_SUM = """
class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
            seen[x] = i
"""


def test_extract_code_takes_the_last_block():
    text = "First try:\n```python\nprint(1)\n```\nBetter:\n```python\nprint(2)\n```\nDone."
    assert extract_code(text) == "print(2)\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("no code here") is None


def test_stdout_comparison():
    assert same_stdout("5\n", "5")
    assert same_stdout("1 2  3 \n4\n", "1 2 3\n4")
    assert same_stdout("2.50\n", "2.5")
    assert not same_stdout("1 2\n", "1 2 3")
    assert not same_stdout("5\n6\n", "5")


def test_programs_pass_or_fail_their_tests():
    assert passes_tests(ADD, STDIN_SPEC)
    assert not passes_tests("a, b = map(int, input().split())\nprint(a - b)\n", STDIN_SPEC)
    assert not passes_tests("raise SystemExit(1)\n", STDIN_SPEC), "a crash fails"
    assert passes_tests(TWO_SUM, FUNCTIONAL_SPEC)
    assert not passes_tests(TWO_SUM.replace("return [seen[target - x], i]", "return [i]"), FUNCTIONAL_SPEC)
    assert not passes_tests("while True:\n    pass\n", STDIN_SPEC, timeout_s=1.0), "a busy loop times out"


def test_code_rule_and_pool():
    response = f"Let me write it.</think>Here it is:\n```python\n{ADD}```"
    result = grade_response(response, STDIN_SPEC, "code")
    assert (result.correct, result.reason) == (True, Reason.OK)
    assert grade_response("</think>I cannot solve it.", STDIN_SPEC, "code").reason == Reason.NO_ANSWER
    with Grader("code", workers=1, timeout_s=30.0) as grader:
        verdicts = grader.grade([response, "```python\nprint(0)\n```"], [STDIN_SPEC, STDIN_SPEC])
        assert [v.correct for v in verdicts] == [True, False]
        assert [v.correct for v in grader.grade(["\\boxed{B}", "\\boxed{D}"], ["B", "C"], "choice")] == [
            True,
            False,
        ]
        with pytest.raises(UserError, match="JSON test specification"):
            grader.grade(["```python\nprint(0)\n```"], ["5"])
