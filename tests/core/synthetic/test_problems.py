"""Synthetic word problems: reproducible, solvable by their stored operations, numbers within range."""

from __future__ import annotations

import random
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attncore.errors import UserError
from attncore.synthetic.arithmetic import apply, numbers_in
from attncore.synthetic.config import ProblemConfig
from attncore.synthetic.problems import SyntheticProblem, generate_problem


@st.composite
def problem_configs(draw) -> ProblemConfig:
    low = draw(st.integers(1, 10))
    f_low = draw(st.integers(2, 4))
    d_low = draw(st.integers(0, 2))
    return ProblemConfig(
        number_range=(low, draw(st.integers(low + 40, 150))),
        factor_range=(f_low, draw(st.integers(f_low + 3, 12))),
        max_value=draw(st.integers(800, 5000)),
        distractors=(d_low, draw(st.integers(d_low, 3))),
    )


def evaluate(problem: SyntheticProblem) -> list[Fraction]:
    """Recompute every operation from the problem's given numbers and the results it references."""
    values: list[Fraction] = []
    for op in problem.operations:
        left = op.left if op.left_from is None else values[op.left_from]
        right = op.right if op.right_from is None else values[op.right_from]
        values.append(apply(op.op, left, right))
    return values


def test_same_seed_gives_the_same_problem_and_another_seed_a_different_one():
    cfg = ProblemConfig()
    first = generate_problem(random.Random(7), cfg, 4)
    assert generate_problem(random.Random(7), cfg, 4) == first
    assert generate_problem(random.Random(8), cfg, 4) != first


def test_a_hand_checked_problem():
    problem = generate_problem(random.Random(7), ProblemConfig(distractors=(0, 0)), 2)
    assert problem.text == (
        "Tom bakes 25 cookies. Ava bakes 35 cookies. Then she bakes 17 more cookies in the afternoon. "
        "How many more cookies does Ava have than Tom?"
    )
    # Ava's chain first, then the difference with the larger amount first.
    assert [(op.left, op.op, op.right, op.result) for op in problem.operations] == [
        (35, "+", 17, 52),
        (52, "-", 25, 27),
    ]
    assert [(op.left_from, op.right_from) for op in problem.operations] == [(None, None), (0, None)]
    assert problem.answer == 27
    assert problem.quantities == (35, 17, 25)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**9), difficulty=st.integers(1, 6), cfg=problem_configs())
def test_generated_problems_are_consistent(seed: int, difficulty: int, cfg: ProblemConfig):
    problem = generate_problem(random.Random(seed), cfg, difficulty)
    ops = problem.operations

    # The answer is the evaluation of the stored operations, and every result is a whole number.
    values = evaluate(problem)
    assert [Fraction(op.result) for op in ops] == values
    assert problem.answer == values[-1]
    assert all(v.denominator == 1 and 1 <= v <= cfg.max_value for v in values)
    assert problem.difficulty == difficulty == len(ops)

    # Every intermediate result is used exactly once later: all operations are needed for the answer.
    references = [i for op in ops for i in (op.left_from, op.right_from) if i is not None]
    assert sorted(references) == list(range(len(ops) - 1))
    assert all(i < k for k, op in enumerate(ops) for i in (op.left_from, op.right_from) if i is not None)

    # Given numbers lie in their ranges: factors for × and ÷, the number range otherwise.
    for op in ops:
        if op.left_from is None:
            assert cfg.number_range[0] <= op.left <= cfg.number_range[1]
        if op.right_from is None:
            low, high = cfg.factor_range if op.op in "*/" else cfg.number_range
            assert low <= op.right <= high
    assert all(cfg.number_range[0] <= d <= cfg.number_range[1] for d in problem.distractors)
    assert cfg.distractors[0] <= len(problem.distractors) <= cfg.distractors[1]

    # Every number is distinct, the text states exactly the quantities, and distractors are unused.
    every_value = [*problem.quantities, *(op.result for op in ops)]
    assert len(set(every_value)) == len(every_value)
    assert sorted(numbers_in(problem.text)) == sorted(problem.quantities)
    operands = {n for op in ops for n in (op.left, op.right)}
    assert not operands & set(problem.distractors)


def test_all_four_operations_occur():
    cfg = ProblemConfig()
    ops = {op.op for seed in range(200) for op in generate_problem(random.Random(seed), cfg, 4).operations}
    assert ops == {"+", "-", "*", "/"}


def test_impossible_ranges_are_a_user_error():
    cfg = ProblemConfig(number_range=(2, 3), factor_range=(2, 2))
    with pytest.raises(UserError, match="could not draw a problem of difficulty 6"):
        generate_problem(random.Random(0), cfg, 6)


def test_a_repeated_event_gets_a_distinct_name():
    # One theme has only two "+" events, so long chains repeat events; each repeat is named apart.
    cfg = ProblemConfig(difficulty=(6, 6), number_range=(2, 12), factor_range=(2, 5), max_value=100)
    problems = [generate_problem(random.Random(seed), cfg, 6) for seed in range(300)]
    repeated = [p for p in problems if any(op.meaning.endswith(" again") for op in p.operations)]
    assert len(repeated) >= 20
    for problem in problems:
        meanings = [op.meaning for op in problem.operations]
        assert len(set(meanings)) == len(meanings), meanings
    first = next(op.meaning for op in repeated[0].operations if op.meaning.endswith(" again"))
    assert first.removesuffix(" again") in [op.meaning for op in repeated[0].operations]


def test_uniform_difficulty_draws_are_unchanged_by_the_weights_option():
    # Weights left out draw as `randint` always did, so earlier datasets regenerate identically.
    cfg = ProblemConfig(difficulty=(2, 5))
    drawn = [cfg.draw_difficulty(random.Random(seed)) for seed in range(50)]
    assert drawn == [random.Random(seed).randint(2, 5) for seed in range(50)]


def test_difficulty_weights_set_the_mix():
    cfg = ProblemConfig(difficulty=(1, 4), difficulty_weights=(1, 2, 0, 7))
    rng = random.Random(0)
    counts = Counter(cfg.draw_difficulty(rng) for _ in range(10_000))
    assert counts[3] == 0
    assert counts[1] / 10_000 == pytest.approx(0.1, abs=0.015)
    assert counts[2] / 10_000 == pytest.approx(0.2, abs=0.02)
    assert counts[4] / 10_000 == pytest.approx(0.7, abs=0.02)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ((1, 2), "difficulty_weights has 2 weights for the 4 difficulties 1..4"),
        ((1, -1, 1, 1), "must be non-negative with a positive sum"),
        ((0, 0, 0, 0), "must be non-negative with a positive sum"),
    ],
)
def test_bad_difficulty_weights_are_rejected(weights, message):
    with pytest.raises(ValueError, match=message):
        ProblemConfig(difficulty=(1, 4), difficulty_weights=weights)
