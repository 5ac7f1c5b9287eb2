"""Step Ranking Accuracy against hand-computed cases and a brute-force loop over pairs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attncore.ranking import (
    bootstrap_interval,
    mean_sra,
    pair_mask,
    responses_with_pairs,
    step_ranking_accuracy,
)


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def b(values):
    return torch.tensor(values, dtype=torch.bool)


def test_hand_cases():
    # One essential step above both redundant ones: 2 of 2 pairs.
    assert step_ranking_accuracy(t([3.0, 1.0, 2.0]), b([1, 0, 0])).item() == 1.0
    # A tie counts half: (1 = 1) -> 0.5, (1 > 0) -> 1; (0.5 + 1) / 2.
    assert step_ranking_accuracy(t([1.0, 1.0, 0.0]), b([1, 0, 0])).item() == 0.75
    # Essential step 1 between redundant steps 0 and 2, scores rising with position.
    scores, essential = t([0.1, 0.5, 0.9]), b([0, 1, 0])
    assert step_ranking_accuracy(scores, essential, direction="before").item() == 1.0  # 0.5 > 0.1
    assert step_ranking_accuracy(scores, essential, direction="after").item() == 0.0  # 0.5 < 0.9
    assert step_ranking_accuracy(scores, essential).item() == 0.5
    # Two essential, two redundant: pairs (0,1) win, (0,3) lose, (2,1) win, (2,3) tie -> 2.5 / 4.
    assert step_ranking_accuracy(t([0.4, 0.2, 0.5, 0.5]), b([1, 0, 1, 0])).item() == 0.625


def test_vectorised_over_heads_and_unlabelled_steps():
    # (layers=2, heads=2, steps=3); step 2 is labelled neither way and takes part in no pair.
    scores = t([[[2, 1, 9], [1, 2, 9]], [[1, 1, 0], [5, 4, 3]]])
    essential, redundant = b([1, 0, 0]), b([0, 1, 0])
    sra = step_ranking_accuracy(scores, essential, redundant)
    assert sra.tolist() == [[1.0, 0.0], [0.5, 1.0]]
    assert pair_mask(essential, redundant).sum().item() == 1


def test_no_pair_is_nan_and_skipped_by_the_mean():
    assert math.isnan(step_ranking_accuracy(t([1.0, 2.0]), b([1, 1])).item())
    assert math.isnan(step_ranking_accuracy(t([1.0, 2.0]), b([1, 0]), direction="before").item())
    per_response = t([[1.0, 0.0], [float("nan")] * 2, [0.5, 0.5]])
    assert responses_with_pairs(per_response).tolist() == [True, False, True]
    assert mean_sra(per_response).tolist() == [0.75, 0.25]
    assert mean_sra(t([[float("nan")]])).isnan().all()
    with pytest.raises(ValueError, match="NaN for some"):
        mean_sra(t([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="cover 2 steps"):
        step_ranking_accuracy(t([1.0, 2.0]), b([1, 0, 0]))


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    generator = torch.Generator().manual_seed(3)
    per_response = torch.rand(50, 4, generator=generator, dtype=torch.float64)
    per_response[7] = float("nan")
    low, high = bootstrap_interval(per_response, samples=500, seed=1)
    again = bootstrap_interval(per_response, samples=500, seed=1)
    assert torch.equal(low, again[0]) and torch.equal(high, again[1])
    mean = mean_sra(per_response)
    assert bool((low < mean).all() and (mean < high).all())
    # The standard error of a mean of 49 uniform values is about 0.041: a 95% interval is about 0.16 wide.
    assert bool(((high - low) > 0.08).all() and ((high - low) < 0.25).all())
    constant = torch.full((10, 2), 0.8, dtype=torch.float64)
    low, high = bootstrap_interval(constant, samples=100)
    assert torch.allclose(low, constant[0]) and torch.allclose(high, constant[0])
    assert all(x.isnan().all() for x in bootstrap_interval(t([[float("nan")]]), samples=10))


def brute_force(scores: list[float], labels: list[int], direction: str) -> float:
    credit, pairs = 0.0, 0
    for e, le in enumerate(labels):
        for d, ld in enumerate(labels):
            if le != 1 or ld != 0:
                continue
            if (direction == "after" and d < e) or (direction == "before" and d > e):
                continue
            pairs += 1
            credit += 1.0 if scores[e] > scores[d] else 0.5 if scores[e] == scores[d] else 0.0
    return credit / pairs if pairs else float("nan")


@st.composite
def labelled_scores(draw):
    n = draw(st.integers(1, 8))
    scores = draw(st.lists(st.integers(0, 4).map(float), min_size=n, max_size=n))  # small range: ties
    labels = draw(st.lists(st.sampled_from([1, 0, -1]), min_size=n, max_size=n))
    return scores, labels


@settings(max_examples=200, deadline=None)
@given(labelled_scores(), st.sampled_from(["all", "after", "before"]))
def test_matches_brute_force(case, direction):
    scores, labels = case
    lab = torch.tensor(labels)
    got = step_ranking_accuracy(t(scores), lab == 1, lab == 0, direction).item()
    want = brute_force(scores, labels, direction)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)


@settings(max_examples=100, deadline=None)
@given(labelled_scores())
def test_order_properties(case):
    scores, labels = case
    lab = torch.tensor(labels)
    essential, redundant = lab == 1, lab == 0
    sra = step_ranking_accuracy(t(scores), essential, redundant)
    if sra.isnan():
        return
    # Only the order matters, and reversing it mirrors the accuracy around chance.
    assert step_ranking_accuracy(t(scores).exp() * 3 + 1, essential, redundant).item() == pytest.approx(
        sra.item()
    )
    assert step_ranking_accuracy(-t(scores), essential, redundant).item() == pytest.approx(1 - sra.item())
    # The overall accuracy is the pair-weighted mix of the two directions.
    total = 0.0
    for direction in ("after", "before"):
        n = int(pair_mask(essential, redundant, direction).sum())
        if n:
            total += n * step_ranking_accuracy(t(scores), essential, redundant, direction).item()
    assert total / int(pair_mask(essential, redundant).sum()) == pytest.approx(sra.item())
