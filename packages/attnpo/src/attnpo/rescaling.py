"""Stepwise advantage rescaling (attnpo-spec §6): a factor γ_k per reasoning step, from its key-focus-head
score against a difficulty-aware baseline, applied to the tokens of that step.

Only a correct response with at least 2 steps and a nonzero advantage is touched (a response without a
single `</think>` has no steps: segmentation leaves it with none). With `p` the group accuracy, the
baseline is `S_base = p^β·|F|/|o|` (`baseline: uniform`, the release: |F| answer tokens after `</think>`
incl. EOS, |o| prompt + response tokens) or `S_base = p^β·Σ_k |s_k|·S_k / Σ_k |s_k|` (`baseline:
thinking`, ours; see `score_baselines`):

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

from attnpo.config import RescalingConfig, ScoreBaseline


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


def score_baselines(
    scores: Tensor,
    step_lengths: Tensor,
    n_steps: Tensor,
    answer_tokens: Tensor,
    total_tokens: Tensor,
    kind: ScoreBaseline,
) -> Tensor:
    """(B,) the score a step of each row would get under uniform attention, before the factor p^β.

    `uniform` (the release): `|F|/|o|`, the share of each answer row's unit of attention that a key gets when
    spread over all |o| tokens, summed over the |F| rows. `thinking` (ours, not the release's): the answer
    rows' attention mass that actually falls on the thinking, spread evenly over its tokens, i.e. the
    step-length-weighted mean `Σ_k |s_k|·S_k / Σ_k |s_k|` over the row's real steps. It is on the model's own
    attention scale, so multiplying every score by c > 0 leaves γ unchanged, and at p = 1 it always has
    some step of a response with unequal scores below it. Why: on the testbed model's short sequences most
    of the answer rows' mass goes to the sink, prompt and answer tokens. In the partial A2 run
    (experiments/attnpo/testbed/RESULTS.md, 111 responses) the heads still ranked the steps well (SRA
    0.955), but |F|/|o| sat 6.45x above the median step score, every step lay below the release's baseline
    in 71 responses, and 35.7% of the 112 steps Pos-Adv attenuated were oracle-redundant; replayed under
    this baseline, 22 of 24 (91.7%).

    scores (B, K) step scores (any value past a row's `n_steps`); step_lengths (B, K) tokens per step;
    n_steps (B,) long; answer_tokens (B,) |F|; total_tokens (B,) |o|. A row without steps gets NaN under
    `thinking`. The mean is taken as an offset from the row's lowest step score, so a row whose steps all
    score the same gets exactly that score (no step below it).
    """
    if kind == "uniform":
        return answer_tokens.to(torch.float64) / total_tokens.to(torch.float64)
    if scores.shape[1] == 0:
        return torch.full(n_steps.shape, torch.nan, dtype=torch.float64, device=scores.device)
    real = step_mask(n_steps, scores.shape[1])
    s = scores.to(torch.float64)
    lowest = torch.where(real, s, torch.inf).amin(1, keepdim=True)
    lengths = torch.where(real, step_lengths.to(torch.float64), 0.0)
    above = torch.where(real, s - lowest, 0.0)
    return lowest[:, 0] + (lengths * above).sum(1) / lengths.sum(1)


def step_factors(
    advantages: Tensor,
    scores: Tensor,
    step_lengths: Tensor,
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
    row's `n_steps`); step_lengths (B, K) tokens per step; n_steps (B,) long; correct (B,) bool; accuracy
    (B,) group accuracy p; answer_tokens (B,) |F|; total_tokens (B,) |o|; global_step the optimizer step,
    from 1."""
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
    baseline = scale * score_baselines(
        scores, step_lengths, n_steps, answer_tokens, total_tokens, config.baseline
    )
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
        spans[..., 1] - spans[..., 0],
        n_steps,
        correct,
        accuracy,
        answer_tokens,
        total_tokens,
        global_step=global_step,
        config=config,
    )
    return RescaledAdvantages(token_advantages(advantages, factors.gamma, spans, n_steps, width), factors)
