"""Evaluation metrics as pure functions of per-sample outcomes: pass@k, intervals, lengths, AES, and the
paired comparison of two runs on the same samples.

Outcomes are grouped by problem (`outcomes[i]` holds the verdicts of problem i's samples), because
samples of one problem are not independent: both the pass@k estimator and the interval treat the
problem, not the sample, as the unit.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples is correct) from n samples of which c are
    correct: `1 - C(n-c, k) / C(n, k)` (Chen et al. 2021), computed exactly on integers."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(outcomes: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k of a benchmark: the per-problem estimate averaged over problems."""
    if not outcomes:
        raise ValueError("pass@k of an empty benchmark")
    return math.fsum(pass_at_k(len(o), sum(map(bool, o)), k) for o in outcomes) / len(outcomes)


def pass_k_values(n: int) -> list[int]:
    """The k reported for n samples per problem: powers of two below n, and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) < n]
    return [*ks, n]


@dataclass(frozen=True)
class Interval:
    """A mean with the bounds of its confidence interval (None when it cannot be estimated)."""

    mean: float
    low: float | None
    high: float | None


def mean_interval(
    values: Sequence[float], confidence: float = CONFIDENCE, bounds: tuple[float, float] = (0.0, 1.0)
) -> Interval:
    """Mean with the normal-approximation interval `mean ± z · s / sqrt(m)`, clipped to `bounds`.

    `s` is the sample standard deviation of the m values. Fewer than two values give no interval; m
    equal values give a zero-width one.
    """
    if not values:
        raise ValueError("mean of no values")
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return Interval(mean, None, None)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, max(bounds[0], mean - half), min(bounds[1], mean + half))


def pass_at_1_interval(outcomes: Sequence[Sequence[bool]], confidence: float = CONFIDENCE) -> Interval:
    """pass@1 (the mean accuracy over all samples, each problem weighted equally) with a 95% interval
    over problems: the mean of the per-problem accuracies and its clustered standard error (with one
    sample per problem this is the usual normal interval of a proportion)."""
    if any(len(o) == 0 for o in outcomes):
        raise ValueError("every problem needs at least one sample")
    return mean_interval([sum(map(bool, o)) / len(o) for o in outcomes], confidence)


def mean_or_none(values: Iterable[float]) -> float | None:
    values = list(values)
    return math.fsum(values) / len(values) if values else None


def median_or_none(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(statistics.median(values)) if values else None


def aes(accuracy: float, length: float, base_accuracy: float, base_length: float) -> float | None:
    """Accuracy-efficiency score of a run against a baseline (attnpo-spec §9; the definition is
    assumed there, not confirmed): with `dL = (L_base - L) / L_base` and `dA = (A - A_base) / A_base`,
    `AES = dL + 3 dA` when `dA >= 0`, else `dL - 5 |dA|`. None when the baseline's accuracy or length
    is zero (the relative changes are undefined)."""
    if base_accuracy <= 0 or base_length <= 0:
        return None
    d_length = (base_length - length) / base_length
    d_accuracy = (accuracy - base_accuracy) / base_accuracy
    return d_length + 3 * d_accuracy if d_accuracy >= 0 else d_length - 5 * abs(d_accuracy)


@dataclass(frozen=True)
class PairedOutcomes:
    """Two runs' verdicts on the same samples: how many only one of them got right, and the two-sided
    exact McNemar p-value of that split (the samples both got right or both wrong carry no evidence)."""

    shared: int
    only_base: int
    only_run: int
    p_value: float


def mcnemar_exact_p(only_base: int, only_run: int) -> float:
    """Two-sided exact McNemar test: under "the runs are equally good" each of the `only_base + only_run`
    discordant samples falls either way with probability 1/2, so the p-value is twice the binomial tail
    of the smaller count (at most 1)."""
    if only_base < 0 or only_run < 0:
        raise ValueError(f"counts must be non-negative, got {only_base}, {only_run}")
    n = only_base + only_run
    tail = sum(math.comb(n, i) for i in range(min(only_base, only_run) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_outcomes(base: Mapping[str, bool], run: Mapping[str, bool]) -> PairedOutcomes | None:
    """Pair two runs' verdicts by sample id (`problem#sample`, or the problem id with one sample each);
    None when they share no sample."""
    shared = base.keys() & run.keys()
    if not shared:
        return None
    only_base = sum(bool(base[k]) and not run[k] for k in shared)
    only_run = sum(bool(run[k]) and not base[k] for k in shared)
    return PairedOutcomes(len(shared), only_base, only_run, mcnemar_exact_p(only_base, only_run))
