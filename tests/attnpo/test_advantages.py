"""RLOO and GRPO outcome advantages on hand groups, against a brute-force leave-one-out and TRL's rule."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnpo.advantages import grpo_advantages, outcome_advantages, rloo_advantages
from attnpo.config import AdvantageConfig


def test_rloo_hand_group():
    # mean of the others: 1/3, 2/3, 1/2, 1/2
    got = rloo_advantages(torch.tensor([[1.0, 0.0, 0.5, 0.5]], dtype=torch.float64))
    assert got[0].tolist() == pytest.approx([2 / 3, -2 / 3, 0.0, 0.0], abs=1e-15)
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.ones(3, 1))


def test_grpo_scales_hand_group():
    rewards = torch.tensor([[1.0, 0.0, 0.5, 0.5], [2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    centred = [[0.5, -0.5, 0.0, 0.0], [0.0] * 4]
    assert grpo_advantages(rewards, "none").tolist() == centred
    # group 0: unbiased std sqrt(0.5/3); group 1: std 0
    s0 = (0.5 / 3) ** 0.5 + 1e-4
    assert grpo_advantages(rewards, "group")[0].tolist() == pytest.approx([0.5 / s0, -0.5 / s0, 0.0, 0.0])
    assert grpo_advantages(rewards, "group")[1].tolist() == [0.0] * 4
    batch_std = rewards.flatten().std().item() + 1e-4
    assert grpo_advantages(rewards, "batch")[0, 0].item() == pytest.approx(0.5 / batch_std)
    with pytest.raises(ValueError, match="unknown scale"):
        grpo_advantages(rewards, "token")


def test_outcome_advantages_follow_the_config():
    rewards = torch.tensor([[1.0, 0.0, 0.25]], dtype=torch.float64)
    assert torch.equal(outcome_advantages(AdvantageConfig(), rewards), rloo_advantages(rewards))
    grpo = AdvantageConfig(kind="grpo", scale="batch")
    assert torch.equal(outcome_advantages(grpo, rewards), grpo_advantages(rewards, "batch"))


@settings(max_examples=80, deadline=None)
@given(
    st.integers(2, 9).flatmap(
        lambda g: st.lists(
            st.lists(st.floats(-3, 3, allow_nan=False), min_size=g, max_size=g), min_size=1, max_size=5
        )
    )
)
def test_rloo_is_leave_one_out(rows):
    rewards = torch.tensor(rows, dtype=torch.float64)
    got = rloo_advantages(rewards)
    size = rewards.shape[1]
    for i in range(size):
        others = torch.cat([rewards[:, :i], rewards[:, i + 1 :]], 1)
        assert torch.allclose(got[:, i], rewards[:, i] - others.mean(1), atol=1e-12)
    assert torch.allclose(got.sum(1), torch.zeros(rewards.shape[0], dtype=torch.float64), atol=1e-12)
    # RLOO = G/(G-1) times the unscaled GRPO advantage
    assert torch.allclose(got, grpo_advantages(rewards, "none") * size / (size - 1), atol=1e-12)
