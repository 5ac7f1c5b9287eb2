"""Key-focus-head selection: SRA of every (layer, query head), ensembles, and a rule against position heads.

Input is one `LabelledResponse` per probe response: the step scores `S^{l,h}_k` of every head (from one
all-heads capture) and the step labels. Ensembles score a step with the head-averaged `S_k`
(attnpo-spec §4-5):
- *top-k*: the k eligible heads with the best single-head SRA;
- *greedy*: start from the best eligible head and repeatedly add the eligible head that maximises the
  ensemble's SRA.

Eligibility rejects heads that rank by position rather than content: a head that prefers later steps
wins every pair whose redundant step comes first (a plan, a restatement) and loses every pair whose
redundant step comes last (a re-check). On a probe set where most redundant steps come first such a
head can have a high overall SRA, so a head is eligible only when its SRA reaches `min_direction_sra`
in *each* pair direction that the probe set has pairs in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attncore.ranking import (
    DIRECTIONS,
    Direction,
    bootstrap_interval,
    mean_sra,
    pair_mask,
    step_ranking_accuracy,
)

Head = tuple[int, int]


@dataclass(frozen=True)
class LabelledResponse:
    """One probe response: step scores of every head (layers, heads, steps) and its step labels (steps,)."""

    id: str
    scores: Tensor
    essential: Tensor
    redundant: Tensor

    def pairs(self, direction: Direction = "all") -> int:
        return int(pair_mask(self.essential, self.redundant, direction).sum())


def per_response_sra(responses: Sequence[LabelledResponse], direction: Direction = "all") -> Tensor:
    """(R, layers, heads) `SRA_r` of every head; NaN rows for responses without a pair in `direction`."""
    return torch.stack(
        [step_ranking_accuracy(r.scores, r.essential, r.redundant, direction) for r in responses]
    )


@dataclass(frozen=True)
class HeadTable:
    """SRA of every head overall, with a bootstrap interval, and per pair direction; (layers, heads) each.

    `responses[d]` and `pairs[d]` count the responses with a pair and the pairs, per direction.
    """

    sra: Tensor
    low: Tensor
    high: Tensor
    by_direction: dict[Direction, Tensor]
    responses: dict[Direction, int]
    pairs: dict[Direction, int]


def head_table(
    responses: Sequence[LabelledResponse], samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> HeadTable:
    """Per-head SRA (mean over responses with a pair), its bootstrap interval over responses, and the split."""
    if not responses:
        raise ValueError("no labelled responses to rank steps of")
    per = {d: per_response_sra(responses, d) for d in DIRECTIONS}
    low, high = bootstrap_interval(per["all"], samples, confidence, seed)
    return HeadTable(
        sra=mean_sra(per["all"]),
        low=low,
        high=high,
        by_direction={d: mean_sra(per[d]) for d in ("after", "before")},
        responses={d: int((~per[d].isnan().reshape(len(responses), -1).all(1)).sum()) for d in DIRECTIONS},
        pairs={d: sum(r.pairs(d) for r in responses) for d in DIRECTIONS},
    )


def eligible_heads(table: HeadTable, min_direction_sra: float) -> Tensor:
    """(layers, heads) bool: SRA >= `min_direction_sra` in every direction the probe set has pairs in."""
    ok = torch.ones_like(table.sra, dtype=torch.bool)
    for direction, sra in table.by_direction.items():
        if table.pairs[direction]:
            ok &= sra >= min_direction_sra
    return ok


def ensemble_scores(responses: Sequence[LabelledResponse], heads: Sequence[Head]) -> list[Tensor]:
    """Per response, the (steps,) head-averaged step score `S_k` of `heads`."""
    index = torch.tensor(heads, dtype=torch.long).reshape(-1, 2)
    return [r.scores[index[:, 0], index[:, 1]].mean(0) for r in responses]


def ensemble_per_response(responses: Sequence[LabelledResponse], heads: Sequence[Head]) -> Tensor:
    """(R,) `SRA_r` of the head-averaged step score of `heads` (NaN for responses without a pair)."""
    return torch.stack(
        [
            step_ranking_accuracy(s, r.essential, r.redundant)
            for s, r in zip(ensemble_scores(responses, heads), responses, strict=True)
        ]
    )


@dataclass(frozen=True)
class RankerSummary:
    """SRA of one step ranker (a head, an ensemble, a trivial rule) on the probe set: overall with its
    bootstrap interval, and per pair direction (NaN where the probe set has no such pair)."""

    sra: float
    low: float
    high: float
    after: float
    before: float


def summarise_ranker(
    responses: Sequence[LabelledResponse],
    scores: Sequence[Tensor],
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RankerSummary:
    """SRA figures of any per-response (steps,) scores on the same labelled responses."""
    per = {
        d: torch.stack(
            [
                step_ranking_accuracy(s, r.essential, r.redundant, d)
                for s, r in zip(scores, responses, strict=True)
            ]
        )
        for d in DIRECTIONS
    }
    low, high = bootstrap_interval(per["all"], samples, confidence, seed)
    return RankerSummary(
        float(mean_sra(per["all"])),
        float(low),
        float(high),
        float(mean_sra(per["after"])),
        float(mean_sra(per["before"])),
    )


def ensemble_sra(responses: Sequence[LabelledResponse], heads: Sequence[Head]) -> float:
    """SRA of the head-averaged step score of `heads`."""
    return float(mean_sra(ensemble_per_response(responses, heads)))


@dataclass(frozen=True)
class Ensemble:
    """The first k heads of a selection and the SRA of their head-averaged score."""

    k: int
    heads: tuple[Head, ...]
    sra: float


def _ranked(table: HeadTable, eligible: Tensor) -> list[Head]:
    """Eligible heads by single-head SRA, best first; ties go to the lower (layer, head)."""
    heads = [(int(layer), int(head)) for layer, head in eligible.nonzero().tolist()]
    return sorted(heads, key=lambda lh: (-float(table.sra[lh]), lh))


def top_k_curve(
    responses: Sequence[LabelledResponse], table: HeadTable, eligible: Tensor, k_max: int = 10
) -> list[Ensemble]:
    """Ensembles of the k best eligible heads, k = 1..min(k_max, eligible)."""
    ranked = _ranked(table, eligible)[:k_max]
    return [
        Ensemble(k, tuple(ranked[:k]), ensemble_sra(responses, ranked[:k])) for k in range(1, len(ranked) + 1)
    ]


def greedy_curve(
    responses: Sequence[LabelledResponse], table: HeadTable, eligible: Tensor, k_max: int = 10
) -> list[Ensemble]:
    """Greedy ensembles: the best eligible head, then each time the eligible head whose addition gives the
    highest ensemble SRA (ties to the lower (layer, head)); k = 1..min(k_max, eligible)."""
    ranked = _ranked(table, eligible)
    if not ranked:
        return []
    layers, heads = table.sra.shape
    flat = [r.scores.reshape(layers * heads, -1).to(torch.float64) for r in responses]
    allowed = eligible.reshape(-1).clone()
    chosen = [ranked[0][0] * heads + ranked[0][1]]
    allowed[chosen[0]] = False
    curve = [Ensemble(1, (ranked[0],), ensemble_sra(responses, [ranked[0]]))]
    while len(chosen) < k_max and bool(allowed.any()):
        k = len(chosen) + 1
        per = torch.stack(
            [
                step_ranking_accuracy((s[chosen].sum(0) + s) / k, r.essential, r.redundant)
                for s, r in zip(flat, responses, strict=True)
            ]
        )  # (R, candidates): SRA_r of the ensemble with each candidate added
        gain = mean_sra(per).masked_fill(~allowed, float("-inf"))
        best = int(gain.argmax())  # first maximum: the lowest flat index, i.e. the lower (layer, head)
        chosen.append(best)
        allowed[best] = False
        picked = tuple((c // heads, c % heads) for c in chosen)
        curve.append(Ensemble(k, picked, float(gain[best])))
    return curve
