"""Step Ranking Accuracy (SRA): how well a step score puts essential steps above redundant ones.

The one home of the rule (attnpo-spec §5, our chosen definition): within a response, every pair of an
essential step e and a redundant step d counts 1 when `S_e > S_d` and 1/2 when `S_e = S_d`;
`SRA_r` is the mean over the response's pairs, and a set's SRA is the mean of `SRA_r` over the
responses with at least one pair. Chance is 0.5. Steps labelled neither way (dropped by a judge,
unreadable for the oracle) take part in no pair.

Pairs split by direction: `after` pairs have the redundant step after the essential one (a re-check,
a detour at the end), `before` pairs have it before (a plan, a restatement). A score that only
prefers later steps is right on every `before` pair and wrong on every `after` pair, so the split
tells position from content. Scores are vectorised over any leading dimensions (layers, heads,
candidate ensembles): `(..., S)` against `(S,)` labels.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Direction = Literal["all", "after", "before"]
DIRECTIONS: tuple[Direction, ...] = ("all", "after", "before")


def pair_mask(essential: Tensor, redundant: Tensor | None = None, direction: Direction = "all") -> Tensor:
    """(S, S) bool: entry (e, d) marks a counted pair of essential step e and redundant step d.

    `redundant` defaults to every step that is not essential; `after` keeps pairs with d > e,
    `before` pairs with d < e.
    """
    essential = essential.bool()
    redundant = ~essential if redundant is None else redundant.bool() & ~essential
    mask = essential[:, None] & redundant[None, :]
    index = torch.arange(len(essential), device=essential.device)
    if direction == "after":
        mask &= index[None, :] > index[:, None]
    elif direction == "before":
        mask &= index[None, :] < index[:, None]
    elif direction != "all":
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return mask


def pair_wins(scores: Tensor, pairs: Tensor) -> Tensor:
    """Summed pair credit (..., ): 1 per pair with `S_e > S_d`, 1/2 per tie; scores (..., S), pairs (S, S)."""
    diff = scores[..., :, None] - scores[..., None, :]  # (..., S, S): S_e - S_d at (e, d)
    credit = (diff > 0).to(torch.float64) + 0.5 * (diff == 0).to(torch.float64)
    return (credit * pairs).sum((-2, -1))


def step_ranking_accuracy(
    scores: Tensor, essential: Tensor, redundant: Tensor | None = None, direction: Direction = "all"
) -> Tensor:
    """`SRA_r` of one response for every leading index: scores (..., S), labels (S,) -> (...,) float64.

    NaN where the response has no pair (in that direction): it does not count towards a mean.
    """
    if scores.shape[-1] != essential.shape[-1]:
        raise ValueError(f"scores cover {scores.shape[-1]} steps, labels {essential.shape[-1]}")
    pairs = pair_mask(essential, redundant, direction).to(scores.device)
    n = int(pairs.sum())
    if n == 0:
        return torch.full(scores.shape[:-1], float("nan"), dtype=torch.float64, device=scores.device)
    return pair_wins(scores, pairs) / n


def responses_with_pairs(per_response: Tensor) -> Tensor:
    """(R,) bool: which rows of an (R, ...) `SRA_r` tensor are defined (the response has a pair).

    Whether a response has a pair depends only on its labels, so a row is all NaN or NaN-free.
    """
    missing = per_response.isnan().reshape(len(per_response), -1)
    if bool((missing.any(1) != missing.all(1)).any()):
        raise ValueError("a response's SRA is NaN for some scores but not others")
    return ~missing.all(1) if missing.shape[1] else torch.ones(len(per_response), dtype=torch.bool)


def mean_sra(per_response: Tensor) -> Tensor:
    """SRA: mean of (R, ...) `SRA_r` over the responses with at least one pair; NaN when none has one."""
    kept = per_response[responses_with_pairs(per_response)]
    if len(kept) == 0:
        return torch.full(per_response.shape[1:], float("nan"), dtype=torch.float64)
    return kept.to(torch.float64).mean(0)


def bootstrap_interval(
    per_response: Tensor, samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Percentile bootstrap interval of `mean_sra`, resampling responses (with a pair) with replacement.

    per_response: (R, ...). Returns (low, high), each (...); NaN when no response has a pair. The
    same resampled response sets serve every leading index, so intervals of heads are comparable.
    """
    if samples < 1 or not 0 < confidence < 1:
        raise ValueError(f"need samples >= 1 and 0 < confidence < 1, got {samples}, {confidence}")
    kept = per_response[responses_with_pairs(per_response)].to(torch.float64)
    shape = per_response.shape[1:]
    if len(kept) == 0:
        nan = torch.full(shape, float("nan"), dtype=torch.float64)
        return nan, nan.clone()
    n = len(kept)
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(n, (samples, n), generator=generator)
    counts = torch.zeros(samples, n, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(samples, n, dtype=torch.float64)
    )
    means = counts @ kept.reshape(n, -1) / n  # (samples, prod(shape))
    tail = (1 - confidence) / 2
    bounds = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64), dim=0)
    return bounds[0].reshape(shape), bounds[1].reshape(shape)
