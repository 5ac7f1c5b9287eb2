"""The worker pool: verdicts in order, per-call modes, hard timeouts, dead workers, user errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from attncore.errors import UserError
from attncore.grading import Grader, GradeResult, Reason, grade_answers

NESTING = 10_000


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(workers=2, timeout_s=1.0) as pool:
        yield pool


def test_verdicts_come_back_in_input_order(grader: Grader) -> None:
    responses = [f"So the answer is $\\boxed{{{n}}}$." for n in range(20)]
    golds = [str(n if n % 3 else n + 1) for n in range(20)]
    results = grader.grade(responses, golds)
    assert [r.pred for r in results] == [str(n) for n in range(20)]
    assert [r.correct for r in results] == [n % 3 != 0 for n in range(20)]


def test_mode_can_change_per_call(grader: Grader) -> None:
    response = "Half of it.</think>\\boxed{\\dfrac{1}{2}}\n#### 0.5"
    assert grader.grade([response], ["1/2"], mode="attnpo") == [GradeResult(True, "\\dfrac{1}{2}", Reason.OK)]
    assert grader.grade([response], ["1/2"], mode="gsm8k") == [GradeResult(True, "0.5", Reason.OK)]
    assert grader.grade(["<think>" + response], ["1/2"], mode="attnpo")[0].reason is Reason.MALFORMED_THINK


ADVERSARIAL = {
    "nested braces": "\\boxed{" + "{" * NESTING + "3" + "}" * NESTING + "}",
    "nested fractions": "\\boxed{" + "\\frac{1}{" * NESTING + "2" + "}" * NESTING + "}",
    "megabyte expression": "The answer is " + "1+" * 500_000 + "1",
    "unbalanced braces": "\\boxed{\\frac{1}{2" + "{" * 1000,
    "power tower": "\\boxed{9^{9^{9^{9}}}}",
    "NUL bytes": "\x00" * 1000 + "\\boxed{\x00}",
}


def test_adversarial_answers_are_wrong_and_the_pool_survives(grader: Grader) -> None:
    results = dict(
        zip(ADVERSARIAL, grader.grade(list(ADVERSARIAL.values()), ["7"] * len(ADVERSARIAL)), strict=True)
    )
    assert not any(result.correct for result in results.values())
    # sympy would evaluate 9^(9^(9^9)) for hours: only the parent's hard limit ends it.
    assert results["power tower"] == GradeResult(False, None, Reason.TIMEOUT)
    assert results["unbalanced braces"].reason in {Reason.OK, Reason.NO_ANSWER}
    # Killed workers were replaced: the pool still grades at full width.
    assert grader.grade(["\\boxed{7}", "\\boxed{8}"], ["7", "7"]) == [
        GradeResult(True, "7", Reason.OK),
        GradeResult(False, "8", Reason.OK),
    ]


def test_megabyte_gsm8k_number_is_wrong_not_an_error(grader: Grader) -> None:
    [result] = grader.grade(["#### " + "9" * 1_000_000], ["7"], mode="gsm8k")
    assert (result.correct, result.reason, len(result.pred or "")) == (False, Reason.OK, 1_000_000)


def test_a_worker_that_died_while_idle_is_replaced(grader: Grader) -> None:
    grader.wait_ready()  # a replacement from an earlier test may still be starting (a death then is a start failure)
    victim = grader.processes[0]
    victim.kill()
    victim.join()
    assert grader.grade(["\\boxed{5}"] * 4, ["5"] * 4) == [GradeResult(True, "5", Reason.OK)] * 4
    assert victim not in grader.processes
    assert all(process.is_alive() for process in grader.processes)


def test_grade_answers_is_a_one_shot_pool() -> None:
    results = grade_answers(["#### 18", "#### 17", "no marker"], ["18", "18", "18"], mode="gsm8k", workers=1)
    assert results == [
        GradeResult(True, "18", Reason.OK),
        GradeResult(False, "17", Reason.OK),
        GradeResult(False, None, Reason.NO_ANSWER),
    ]


def test_a_closed_grader_restarts_on_the_next_call() -> None:
    grader = Grader(workers=1)
    try:
        assert grader.grade(["\\boxed{1}"], ["1"])[0].correct
        grader.close()
        assert grader.grade(["\\boxed{2}"], ["1"]) == [GradeResult(False, "2", Reason.OK)]
    finally:
        grader.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Grader(workers=0), "at least one worker"),
        (lambda: Grader(timeout_s=0), "timeout must be positive"),
        (lambda: Grader(mode="maths"), "unknown grading mode 'maths'"),
        (lambda: Grader().grade(["a", "b"], ["1"]), "2 responses but 1 gold answers"),
        (lambda: Grader().grade(["#### 1"], ["\\frac{1}{2}"], mode="gsm8k"), "numeric gold answers"),
    ],
)
def test_user_mistakes_fail_before_any_worker_starts(make, message: str) -> None:
    with pytest.raises(UserError, match=message):
        make()


def test_importing_the_package_leaves_math_verify_to_the_workers() -> None:
    check = "import sys, attncore.grading; print('math_verify' in sys.modules, 'sympy' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == ["False", "False"]
