"""Outcome advantages of prompt groups: one scalar per response, before any stepwise rescaling.

`rewards` are (P, G): P prompt groups of G responses, gathered over every process first (spec §13.10),
so a group's baseline always sees all of its responses.
"""

from __future__ import annotations

from torch import Tensor

from attnpo.config import AdvantageConfig

GRPO_STD_EPS = 1e-4
"""TRL's guard on the std in `scale_rewards` (kept so `grpo` equals TRL's advantages)."""


def rloo_advantages(rewards: Tensor) -> Tensor:
    """(P, G) -> (P, G): `A_i = r_i − mean_{j≠i} r_j`, which equals `G/(G−1)·(r_i − mean_j r_j)`."""
    size = rewards.shape[-1]
    if size < 2:
        raise ValueError("RLOO needs at least 2 responses per prompt")
    return (rewards - rewards.mean(-1, keepdim=True)) * (size / (size - 1))


def grpo_advantages(rewards: Tensor, scale: str) -> Tensor:
    """(P, G) -> (P, G): `r_i − mean_group r`, divided by the group's (`group`) or the whole batch's
    (`batch`) unbiased std + 1e-4, or left as is (`none`): TRL's `scale_rewards`."""
    centred = rewards - rewards.mean(-1, keepdim=True)
    if scale == "none":
        return centred
    if scale == "group":
        std = rewards.std(-1, keepdim=True)
    elif scale == "batch":
        std = rewards.std()
    else:
        raise ValueError(f"unknown scale {scale!r} (group, batch or none)")
    return centred / (std + GRPO_STD_EPS)


def outcome_advantages(config: AdvantageConfig, rewards: Tensor) -> Tensor:
    """The (P, G) advantages `config` names."""
    if config.kind == "rloo":
        return rloo_advantages(rewards)
    return grpo_advantages(rewards, config.scale)
