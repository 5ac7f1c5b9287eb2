"""Grader accuracy on MATH500: each reference solution's boxed answer must grade equal to the gold answer,
and a one-digit perturbation of each gold answer must grade wrong."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from attncore.data import DataConfig, Problem, load_problems
from attncore.grading import Grader, GradeResult, GradingMode
from attncore.paths import data_dir

MATH500_FILE = "benchmarks/math500/test.jsonl"
_DIGIT = re.compile(r"\d")


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    root = data_dir()
    if root is None or not (root / MATH500_FILE).is_file():
        pytest.skip("the MATH500 reference data is not available")
    return load_problems(DataConfig(name="math500"))


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(workers=2, timeout_s=10.0) as pool:
        yield pool


def _report(problems: list[Problem], results: list[GradeResult], want: bool) -> list[str]:
    return [
        f"{problem.id}: gold {problem.answer!r}, pred {result.pred!r} ({result.reason})"
        for problem, result in zip(problems, results, strict=True)
        if result.correct is not want
    ]


def perturb(answer: str) -> str:
    """Change the first digit (a wrong value for every MATH500 answer) or append `+1` when there is none."""
    match = _DIGIT.search(answer)
    if match is None:
        return answer + "+1"
    digit = int(match.group())
    return f"{answer[: match.start()]}{(digit + 1) % 10}{answer[match.end() :]}"


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GradingMode.MATH, GradingMode.ATTNPO])
def test_reference_solutions_grade_correct(
    problems: list[Problem], grader: Grader, mode: GradingMode
) -> None:
    prefix = "</think>" if mode is GradingMode.ATTNPO else ""
    responses = [prefix + (problem.rationale or "") for problem in problems]
    results = grader.grade(responses, [problem.answer for problem in problems], mode=mode)
    failures = _report(problems, results, want=True)
    print(f"MATH500 {mode}: {len(problems) - len(failures)}/{len(problems)} reference answers agree")
    assert len(problems) == 500
    assert failures == []


@pytest.mark.slow
def test_perturbed_gold_answers_grade_wrong(problems: list[Problem], grader: Grader) -> None:
    responses = [f"The answer is $\\boxed{{{perturb(problem.answer)}}}$." for problem in problems]
    results = grader.grade(responses, [problem.answer for problem in problems])
    assert _report(problems, results, want=False) == []
