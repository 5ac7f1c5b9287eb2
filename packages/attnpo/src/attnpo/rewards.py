"""Rewards of graded rollouts: correctness times a length term, one rule per method (attnpo-spec §2, §12).

Every function takes a batch of prompt groups: `correct` (P, G) bool, whether each response is correct
under the AttnPO grading mode, and `lengths` (P, G), its valid token count (thinking + answer + EOS).
Group statistics run over the last dimension, so a group's reward never depends on another group.
Rewards are float64 (P, G). `group_rewards` picks the function a `RewardConfig` names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from attncore.errors import UserError
from attnpo.config import TARGET_KINDS, RewardConfig


def _per_prompt(values: Tensor | int | float, like: Tensor) -> Tensor:
    """A scalar or a (P,) tensor as a float64 (P, 1) column that broadcasts over a group."""
    t = torch.as_tensor(values, dtype=torch.float64, device=like.device)
    return t.reshape(-1, 1) if t.dim() else t


def correctness_reward(correct: Tensor) -> Tensor:
    """`r = c`."""
    return correct.to(torch.float64)


def traineff_reward(
    correct: Tensor, lengths: Tensor, *, alpha: float, eps: float, double_sigmoid: bool
) -> Tensor:
    """TLMRE traineff: `r = c·(1 − α·σ(z))`, `z = (L − μ)/(sd + eps)`, with μ and the population sd of L
    over the group's correct responses (a single correct response has z = 0). Wrong responses get 0.
    `double_sigmoid` applies σ twice (the paper-notes variant)."""
    c, length = correct.to(torch.float64), lengths.to(torch.float64)
    count = c.sum(-1, keepdim=True).clamp_min(1)
    mean = (c * length).sum(-1, keepdim=True) / count
    sd = ((c * (length - mean) ** 2).sum(-1, keepdim=True) / count).sqrt()
    squash = torch.sigmoid((length - mean) / (sd + eps))
    if double_sigmoid:
        squash = torch.sigmoid(squash)
    return c * (1 - alpha * squash)


def l1_exact_reward(correct: Tensor, lengths: Tensor, targets: Tensor, *, alpha: float) -> Tensor:
    """L1-Exact: `r = c − α·|L_target − L|`; `targets` (P,) per prompt."""
    return (
        correct.to(torch.float64) - alpha * (_per_prompt(targets, lengths) - lengths.to(torch.float64)).abs()
    )


def l1_max_reward(correct: Tensor, lengths: Tensor, targets: Tensor, *, alpha: float, delta: float) -> Tensor:
    """L1-Max: `r = c·clip(α·(L_target − L) + δ, 0, 1)`; `targets` (P,) per prompt."""
    budget = alpha * (_per_prompt(targets, lengths) - lengths.to(torch.float64)) + delta
    return correct.to(torch.float64) * budget.clamp(0, 1)


def length_limit_reward(correct: Tensor, lengths: Tensor, *, limit: int) -> Tensor:
    """`r = c` when `L ≤ limit`, else 0 (ThinkPrune's rounds and DLER's truncation)."""
    return (correct & (lengths <= limit)).to(torch.float64)


def shorter_better_reward(correct: Tensor, lengths: Tensor, *, alpha: float, beta: float) -> Tensor:
    """ShorterBetter: `r = α·c − β·|L − SOL|`, SOL the shortest correct length of the group, or the
    group's mean length when no response is correct."""
    length = lengths.to(torch.float64)
    shortest = torch.where(correct, length, torch.inf).amin(-1, keepdim=True)
    sol = torch.where(correct.any(-1, keepdim=True), shortest, length.mean(-1, keepdim=True))
    return alpha * correct.to(torch.float64) - beta * (length - sol).abs()


def kimi_reward(correct: Tensor, lengths: Tensor, *, weight: float) -> Tensor:
    """Kimi k1.5: `λ = 0.5 − (L − L_min)/(L_max − L_min)` over the whole group (0 when all lengths are
    equal); `r = c + w·λ` for a correct response and `w·min(0, λ)` for a wrong one."""
    length = lengths.to(torch.float64)
    low, high = length.amin(-1, keepdim=True), length.amax(-1, keepdim=True)
    span = high - low
    lam = torch.where(span > 0, 0.5 - (length - low) / span.clamp_min(1e-300), 0.0)
    return correct.to(torch.float64) + weight * torch.where(correct, lam, lam.clamp(max=0))


def laser_reward(
    correct: Tensor,
    lengths: Tensor,
    targets: Tensor | int,
    *,
    bonus: float,
    explore: bool = False,
    repeated: Tensor | None = None,
) -> Tensor:
    """Laser: `r = c + λ·1[c ∧ L ≤ L_T]`; `targets` a scalar or (P,) per prompt.

    `explore` (Laser-DE) also gives `λ` to a wrong response longer than its target unless `repeated`
    (P, G) flags it as a repetition loop (None: none flagged)."""
    target = _per_prompt(targets, lengths)
    length = lengths.to(torch.float64)
    rewarded = correct & (length <= target)
    if explore:
        loops = torch.zeros_like(correct) if repeated is None else repeated
        rewarded = rewarded | (~correct & (length > target) & ~loops)
    return correct.to(torch.float64) + bonus * rewarded.to(torch.float64)


def repetitive(completions: Sequence[Sequence[int]], *, ngram: int, count: int) -> Tensor:
    """(B,) bool: whether some run of `ngram` consecutive tokens occurs at least `count` times in each
    completion (occurrences may overlap), the repetition loops Laser-DE's exploration bonus skips."""
    flags = []
    for ids in completions:
        seen: Counter[tuple[int, ...]] = Counter(
            tuple(ids[i : i + ngram]) for i in range(len(ids) - ngram + 1)
        )
        flags.append(bool(seen) and max(seen.values()) >= count)
    return torch.tensor(flags, dtype=torch.bool)


def difficulty_levels(correct: Tensor) -> Tensor:
    """Laser's level of each group (P,): 2 easy (accuracy ≥ 2/3), 1 medium (≥ 1/3), 0 hard."""
    right, size = correct.sum(-1), correct.shape[-1]
    return (3 * right >= size).long() + (3 * right >= 2 * size).long()


def laser_targets(
    correct: Tensor, lengths: Tensor, *, thresholds: list[int], expected_correct: int
) -> Tensor:
    """Laser-D's target length per group (P,), long.

    For each difficulty level, the smallest threshold T at which `floor(coverage(T)·n)` reaches
    `expected_correct`, where coverage(T) is the share of the level's responses that are correct with
    `L ≤ T` and n is the number of correct responses the level implies per group (⌊2G/3⌋ easy, ⌊G/3⌋
    medium, 1 hard). A level no threshold satisfies gets the batch's longest length."""
    size = correct.shape[-1]
    levels = difficulty_levels(correct)
    implied = {2: (2 * size) // 3, 1: size // 3, 0: 1}
    targets = torch.full_like(levels, int(lengths.max()))
    for level, n in implied.items():
        members = levels == level
        if not members.any():
            continue
        total = int(members.sum()) * size
        for threshold in sorted(thresholds):
            covered = int((correct[members] & (lengths[members] <= threshold)).sum())
            if covered * n // total >= expected_correct:
                targets[members] = threshold
                break
    return targets


def group_rewards(
    config: RewardConfig,
    correct: Tensor,
    lengths: Tensor,
    *,
    global_step: int,
    targets: Tensor | None = None,
    repeated: Tensor | None = None,
) -> Tensor:
    """The (P, G) rewards of `config`'s method. `targets` (P,) are the prompts' target lengths (L1
    rewards); `repeated` (P, G) flags repetition loops (Laser-DE); `global_step` is 1-based."""
    if config.kind in TARGET_KINDS and targets is None:
        raise UserError(f"reward {config.kind} needs a target length per prompt (the data's target column)")
    match config.kind:
        case "correctness":
            return correctness_reward(correct)
        case "traineff":
            return traineff_reward(
                correct, lengths, alpha=config.alpha, eps=config.eps, double_sigmoid=config.double_sigmoid
            )
        case "l1_exact":
            return l1_exact_reward(correct, lengths, targets, alpha=config.alpha)
        case "l1_max":
            return l1_max_reward(correct, lengths, targets, alpha=config.alpha, delta=config.delta)
        case "thinkprune":
            return length_limit_reward(correct, lengths, limit=config.limit_at(global_step))
        case "truncation":
            return length_limit_reward(correct, lengths, limit=config.limit)
        case "shorter_better":
            return shorter_better_reward(correct, lengths, alpha=config.alpha, beta=config.beta)
        case "kimi":
            return kimi_reward(correct, lengths, weight=config.weight)
        case "laser":
            return laser_reward(correct, lengths, config.target, bonus=config.bonus)
        case "laser_d" | "laser_de":
            level_targets = laser_targets(
                correct, lengths, thresholds=config.thresholds, expected_correct=config.expected_correct
            )
            return laser_reward(
                correct,
                lengths,
                level_targets,
                bonus=config.bonus,
                explore=config.kind == "laser_de",
                repeated=repeated,
            )
    raise AssertionError(f"unhandled reward kind {config.kind}")
