"""Step Ranking Accuracy (attnpo-spec §5): how often per-step scores put a response's essential steps
above its redundant ones, overall and split by where the redundant step sits.

For response r with pairs P_r = {(e, d): e essential, d redundant},
`SRA_r = (1/|P_r|) Σ (1[S_e > S_d] + ½·1[S_e = S_d])`, and SRA is the mean of SRA_r over the responses
with at least one pair. A pair points *after* when the redundant step comes after the essential one
(re-verification once the answer is known) and *before* otherwise (a restatement ahead of the work); the
split shows rankers that only read position, such as attention heads that favour recent steps. Steps
labelled anything but essential or redundant (the oracle's `unparseable`) take part in no pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import mean
from typing import Literal

ESSENTIAL = "essential"
REDUNDANT = "redundant"
Direction = Literal["after", "before"]


@dataclass(frozen=True)
class RankingAccuracy:
    """SRA over a set of responses, and the same mean restricted to each pair direction.

    `sra_after` averages, over responses with at least one pair whose redundant step comes after its
    essential step, the SRA of those pairs only (`sra_before` likewise); None where no response has
    such a pair. Pair counts are pooled over all responses.
    """

    sra: float | None
    sra_after: float | None
    sra_before: float | None
    responses: int  # responses with at least one pair
    pairs: int
    pairs_after: int

    @property
    def share_after(self) -> float | None:
        """Share of all pairs whose redundant step comes after the essential one."""
        return self.pairs_after / self.pairs if self.pairs else None


def ranking_pairs(labels: Sequence[str]) -> list[tuple[int, int]]:
    """(essential index, redundant index) for every pair of one response."""
    essential = [i for i, label in enumerate(labels) if label == ESSENTIAL]
    redundant = [i for i, label in enumerate(labels) if label == REDUNDANT]
    return [(e, d) for e in essential for d in redundant]


def response_sra(
    scores: Sequence[float], labels: Sequence[str], direction: Direction | None = None
) -> float | None:
    """SRA_r of one response (over the pairs of one direction when given); None without pairs."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labelled steps")
    pairs = ranking_pairs(labels)
    if direction is not None:
        pairs = [(e, d) for e, d in pairs if (d > e) == (direction == "after")]
    if not pairs:
        return None
    return mean(1.0 if scores[e] > scores[d] else 0.5 if scores[e] == scores[d] else 0.0 for e, d in pairs)


def ranking_accuracy(scores: Sequence[Sequence[float]], labels: Sequence[Sequence[str]]) -> RankingAccuracy:
    """SRA and its split by direction over responses (`scores[r][i]` scores step i of response r)."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} score lists for {len(labels)} label lists")

    def averaged(direction: Direction | None) -> float | None:
        values = [response_sra(s, lab, direction) for s, lab in zip(scores, labels, strict=True)]
        present = [v for v in values if v is not None]
        return mean(present) if present else None

    pairs = [ranking_pairs(lab) for lab in labels]
    return RankingAccuracy(
        sra=averaged(None),
        sra_after=averaged("after"),
        sra_before=averaged("before"),
        responses=sum(bool(p) for p in pairs),
        pairs=sum(len(p) for p in pairs),
        pairs_after=sum(d > e for p in pairs for e, d in p),
    )
