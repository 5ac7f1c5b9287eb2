"""The training objective (molsaki-spec §7-8, §10): `L = α L_pre + (1-α) L_exp + β L_att (+ γ L_MMI)`.

L_pre and L_exp are the student's cross-entropies on the answer and the rationale targets; L_att is the
attention loss averaged over the examples that have one: an example with fewer than two critical
units has no column difference, so no teacher target, and is left out (spec §12). The baselines are
settings of the same objective: vanilla FT (α = 1 on gold answers), DSS (β = 0), MMI (β = 0, γ = 0.1),
SL (β > 0 with one fixed layer on each side).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA = 0.5
"""Answer-task share of the two cross-entropies (paper §4.1; also for DSS and MMI)."""
BETA = 1.0
"""Weight of the attention loss (paper §4.1)."""
MMI_WEIGHT = 0.1
"""Weight of the MMI baseline's own term (its paper)."""
MIN_UNITS = 2
"""Fewest critical units for which G, hence the attention loss, is defined."""


def has_attention_loss(unit_counts: Tensor) -> Tensor:
    """(B,) bool: which examples have enough critical units for the attention loss."""
    return unit_counts >= MIN_UNITS


@dataclass(frozen=True)
class Losses:
    """The objective and its parts (scalars); `attention_share` is the fraction of the batch with L_att."""

    total: Tensor
    answer: Tensor
    rationale: Tensor
    attention: Tensor
    mmi: Tensor
    attention_share: Tensor


def combined_loss(
    answer: Tensor,
    rationale: Tensor | None = None,
    attention: Tensor | None = None,
    eligible: Tensor | None = None,
    mmi: Tensor | None = None,
    *,
    alpha: float = ALPHA,
    beta: float = BETA,
    mmi_weight: float = 0.0,
) -> Losses:
    """`α L_pre + (1-α) L_exp + β L_att + γ L_MMI` from the scalar cross-entropies `answer` and
    `rationale`, per-example attention losses (B,) with their `eligible` mask (B,) (None: all), and the
    scalar MMI term.

    L_att is the mean over eligible examples (0 when none is). A part with weight 0 is not added and
    may be None (vanilla FT has no rationale task); an absent part is reported as 0.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    zero = answer.new_zeros(())
    for name, weight, part in (
        ("1 - alpha", 1 - alpha, rationale),
        ("beta", beta, attention),
        ("mmi_weight", mmi_weight, mmi),
    ):
        if weight and part is None:
            raise ValueError(f"{name} > 0 needs its loss term")
    att, share = zero, zero
    if attention is not None:
        mask = torch.ones_like(attention, dtype=torch.bool) if eligible is None else eligible.bool()
        att = (attention * mask).sum() / mask.sum().clamp_min(1)
        share = mask.float().mean() if mask.numel() else zero
    total = alpha * answer
    for weight, part in ((1 - alpha, rationale), (beta, att), (mmi_weight, mmi)):
        if weight:
            total = total + weight * part
    return Losses(
        total,
        answer,
        zero if rationale is None else rationale,
        att,
        zero if mmi is None else mmi,
        share,
    )
