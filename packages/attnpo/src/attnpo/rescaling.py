"""Stepwise advantage rescaling (attnpo-spec §6): a factor γ_k per reasoning step, from its key-focus-head
score against a difficulty-aware baseline, applied to the tokens of that step.

Only a correct response with at least 2 steps and a nonzero advantage is touched (a response without a
single `</think>` has no steps: segmentation leaves it with none). With `p` the group accuracy,
`S_base = p^β·|F|/|o|` (|F| answer tokens after `</think>` incl. EOS, |o| prompt + response tokens):

- Pos-Adv (`A > 0`, `S_k < S_base`, gate open): `γ = (1−δ)·(w·S_k/S_base + 1 − w) + δ`, `w = p^λ`
  (`code`, the release); `γ = (1−δ)·w·S_k/S_base + δ` (`paper_notes`). The gate opens after step
  `T·(1−p)` (`code`) or `T·p` (`paper_notes`), `global_step` counting from 1.
- Neg-Adv (`A < 0`, `S_k > S_base`): `γ = neg_factor` (0), no gate.
- Without difficulty awareness (ablation A5) `p^β = p^λ = 1` and the gate is always open.

Token advantages are `γ_k·A` on the tokens of step k and `A` everywhere else (`</think>`, answer, EOS,
padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnpo.config import RescalingConfig


@dataclass(frozen=True)
class StepFactors:
    """γ of every step of a batch and why.

    gamma: (B, K) float64, 1 on padding steps and on untouched rows.
    baseline: (B,) float64 `S_base`, NaN on untouched rows.
    touched: (B,) bool, rows that went through step treatment.
    pos, neg: (B, K) bool, steps attenuated by Pos-Adv / Neg-Adv.
    """

    gamma: Tensor
    baseline: Tensor
    touched: Tensor
    pos: Tensor
    neg: Tensor


@dataclass(frozen=True)
class RescaledAdvantages:
    """tokens: (B, T) float64 per-token advantages; factors: the step factors behind them."""

    tokens: Tensor
    factors: StepFactors


def step_mask(n_steps: Tensor, max_steps: int) -> Tensor:
    """(B,) step counts -> (B, K) bool, True on the real steps of each row."""
    return torch.arange(max_steps, device=n_steps.device) < n_steps[:, None]


def step_factors(
    advantages: Tensor,
    scores: Tensor,
    n_steps: Tensor,
    correct: Tensor,
    accuracy: Tensor,
    answer_tokens: Tensor,
    total_tokens: Tensor,
    *,
    global_step: int,
    config: RescalingConfig,
) -> StepFactors:
    """γ per step. advantages (B,) outcome advantages; scores (B, K) step scores `S_k` (any value past a
    row's `n_steps`); n_steps (B,) long; correct (B,) bool; accuracy (B,) group accuracy p; answer_tokens
    (B,) |F|; total_tokens (B,) |o|; global_step the optimizer step, from 1."""
    batch, width = scores.shape
    real = step_mask(n_steps, width)
    adv = advantages.to(torch.float64)[:, None]
    p = accuracy.to(torch.float64)
    touched = correct.bool() & (n_steps >= 2) & (advantages != 0) & config.enabled
    if config.difficulty_aware:
        scale, weight = p**config.beta, p**config.lam
        threshold = config.curriculum_steps * ((1 - p) if config.gamma_variant == "code" else p)
        gate = global_step > threshold
    else:
        scale, weight = torch.ones_like(p), torch.ones_like(p)
        gate = torch.ones_like(p, dtype=torch.bool)
    baseline = scale * answer_tokens.to(torch.float64) / total_tokens.to(torch.float64)
    s = scores.to(torch.float64)
    base, w = baseline[:, None], weight[:, None]
    rows = touched[:, None] & real
    below = s < base
    pos = rows & (adv > 0) & gate[:, None] & below & config.pos_adv
    neg = rows & (adv < 0) & (s > base) & config.neg_adv
    ratio = s / torch.where(below, base, 1.0)
    if config.gamma_variant == "code":
        attenuated = (1 - config.delta) * (w * ratio + 1 - w) + config.delta
    else:
        attenuated = (1 - config.delta) * w * ratio + config.delta
    gamma = torch.ones(batch, width, dtype=torch.float64, device=scores.device)
    gamma = torch.where(pos, attenuated, gamma)
    gamma = torch.where(neg, torch.full_like(gamma, config.neg_factor), gamma)
    return StepFactors(gamma, torch.where(touched, baseline, torch.nan), touched, pos, neg)


def token_advantages(advantages: Tensor, gamma: Tensor, spans: Tensor, n_steps: Tensor, width: int) -> Tensor:
    """(B, T) advantages: `gamma[b, k]·A_b` on the tokens `[spans[b, k, 0], spans[b, k, 1])` of step k
    (response-relative, ascending, disjoint), `A_b` elsewhere. spans (B, K, 2) long; T = `width`."""
    adv = advantages.to(torch.float64)[:, None]
    batch, steps = gamma.shape
    if steps == 0:
        return adv.expand(batch, width).clone()
    real = step_mask(n_steps, steps)
    starts = torch.where(real, spans[..., 0], width + 1).contiguous()
    positions = torch.arange(width, device=gamma.device).expand(batch, width).contiguous()
    owner = torch.searchsorted(starts, positions, right=True) - 1  # last step starting at or before t
    at = owner.clamp_min(0)
    inside = (owner >= 0) & (positions < spans[..., 1].gather(1, at)) & real.gather(1, at)
    factor = torch.where(inside, gamma.gather(1, at), 1.0)
    return adv * factor


def rescale_advantages(
    advantages: Tensor,
    scores: Tensor,
    spans: Tensor,
    n_steps: Tensor,
    correct: Tensor,
    accuracy: Tensor,
    answer_tokens: Tensor,
    total_tokens: Tensor,
    *,
    width: int,
    global_step: int,
    config: RescalingConfig,
) -> RescaledAdvantages:
    """(outcome advantages, step scores, step spans, group accuracy, global step) -> (B, T) token
    advantages; shapes as in `step_factors` and `token_advantages`."""
    factors = step_factors(
        advantages,
        scores,
        n_steps,
        correct,
        accuracy,
        answer_tokens,
        total_tokens,
        global_step=global_step,
        config=config,
    )
    return RescaledAdvantages(token_advantages(advantages, factors.gamma, spans, n_steps, width), factors)
