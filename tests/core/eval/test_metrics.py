"""Evaluation metrics against hand-computed values: pass@k, intervals, lengths, AES, paired McNemar tests."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attncore.eval.metrics import (
    PairedOutcomes,
    aes,
    mcnemar_exact_p,
    mean_interval,
    mean_or_none,
    mean_pass_at_k,
    median_or_none,
    paired_outcomes,
    pass_at_1_interval,
    pass_at_k,
    pass_k_values,
)

Z95 = 1.959963984540054


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert pass_at_k(5, 2, 4) == 1.0  # only 3 wrong samples: any 4 hold a right one
    assert pass_at_k(16, 0, 8) == 0.0
    assert pass_at_k(16, 16, 1) == 1.0
    assert pass_at_k(16, 4, 4) == pytest.approx(1 - 495 / 1820)  # C(12,4) / C(16,4)


@given(st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample(nck):
    n, c, k = nck
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 2, 5)


def test_mean_pass_at_k_averages_problems():
    outcomes = [[True, False, False, False], [True, True, False, False]]
    assert mean_pass_at_k(outcomes, 1) == pytest.approx((0.25 + 0.5) / 2)
    assert mean_pass_at_k(outcomes, 2) == pytest.approx((0.5 + (1 - 1 / 6)) / 2)


def test_reported_k_values():
    assert pass_k_values(1) == [1]
    assert pass_k_values(4) == [1, 2, 4]
    assert pass_k_values(6) == [1, 2, 4, 6]
    assert pass_k_values(16) == [1, 2, 4, 8, 16]


def test_mean_interval_hand_values():
    interval = mean_interval([1.0, 0.0, 1.0, 1.0])  # mean .75, sd .5, se .25
    assert interval.mean == 0.75
    assert interval.low == pytest.approx(0.75 - Z95 * 0.25)
    assert interval.high == 1.0, "clipped to [0, 1]"
    assert mean_interval([0.3]) == mean_interval([0.3]).__class__(0.3, None, None)
    flat = mean_interval([0.5, 0.5, 0.5])
    assert (flat.low, flat.high) == (0.5, 0.5)


def test_pass_at_1_interval_is_clustered_by_problem():
    # per-problem accuracies 0.5, 1, 0, 0.5: mean .5, sd sqrt(1/6), se sqrt(1/6)/2
    outcomes = [[True, False], [True, True], [False, False], [True, False]]
    interval = pass_at_1_interval(outcomes)
    half = Z95 * math.sqrt(1 / 6) / 2
    assert interval.mean == 0.5
    assert interval.low == pytest.approx(0.5 - half) and interval.low == pytest.approx(0.099924, abs=1e-6)
    assert interval.high == pytest.approx(0.5 + half)
    # one sample per problem: the normal interval of a proportion with the sample variance
    single = pass_at_1_interval([[True], [False], [True], [True], [False]])
    assert single.mean == pytest.approx(0.6)
    assert single.mean - single.low == pytest.approx(Z95 * math.sqrt(0.3 / 5))  # sample variance 0.3


def test_length_summaries():
    assert mean_or_none([3, 4, 8]) == 5.0 and median_or_none([3, 4, 8]) == 4.0
    assert median_or_none([1, 2, 3, 10]) == 2.5
    assert mean_or_none([]) is None and median_or_none([]) is None


def test_aes_hand_values():
    # shorter by 40% and 20% more accurate (relative): 0.4 + 3 * 0.2
    assert aes(0.6, 600, 0.5, 1000) == pytest.approx(1.0)
    # shorter by 40% but 20% less accurate: 0.4 - 5 * 0.2
    assert aes(0.4, 600, 0.5, 1000) == pytest.approx(-0.6)
    # longer by 10% at equal accuracy
    assert aes(0.5, 1100, 0.5, 1000) == pytest.approx(-0.1)
    assert aes(0.5, 1000, 0.5, 1000) == 0.0
    assert aes(0.5, 100, 0.0, 1000) is None


def test_mcnemar_exact_hand_values():
    # 1 vs 4 discordant: 2 * (C(5,0) + C(5,1)) / 2^5 = 12 / 32
    assert mcnemar_exact_p(1, 4) == 0.375
    assert mcnemar_exact_p(0, 6) == 2 / 64
    assert mcnemar_exact_p(3, 3) == 1.0, "an even split is capped at 1"
    assert mcnemar_exact_p(0, 0) == 1.0, "no discordant sample, no evidence"
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


@given(st.integers(0, 40), st.integers(0, 40))
def test_mcnemar_exact_is_symmetric_and_a_probability(a, b):
    p = mcnemar_exact_p(a, b)
    assert p == mcnemar_exact_p(b, a) and 0 < p <= 1
    assert mcnemar_exact_p(a, b + 1) <= p or b + 1 <= a, "a wider split is no less significant"


def test_paired_outcomes_pair_by_id_over_shared_samples():
    base = {"p0#0": True, "p0#1": False, "p1#0": True, "p2#0": True}
    run = {"p0#0": True, "p0#1": True, "p1#0": False, "p3#0": True}
    assert paired_outcomes(base, run) == PairedOutcomes(shared=3, only_base=1, only_run=1, p_value=1.0)
    assert paired_outcomes(base, {"other#0": True}) is None
