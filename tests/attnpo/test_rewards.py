"""Rewards of the zoo on hand-computed groups, and the properties each one promises."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attncore.errors import UserError
from attnpo.config import (
    CorrectnessReward,
    KimiReward,
    L1ExactReward,
    L1MaxReward,
    LaserDReward,
    LaserReward,
    ShorterBetterReward,
    ThinkPruneReward,
    TraineffReward,
    TruncationReward,
)
from attnpo.rewards import (
    difficulty_levels,
    group_rewards,
    kimi_reward,
    l1_exact_reward,
    l1_max_reward,
    laser_reward,
    laser_targets,
    length_limit_reward,
    repetitive,
    shorter_better_reward,
    traineff_reward,
)


def t(values, dtype=None):
    return torch.tensor(values, dtype=dtype)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_traineff_hand_group():
    # correct lengths 100, 200, 300: mean 200, population sd sqrt(20000/3); the wrong 400 gets 0
    correct, lengths = t([[True, True, True, False]]), t([[100, 200, 300, 400]])
    got = traineff_reward(correct, lengths, alpha=0.2, eps=1e-8, double_sigmoid=False)
    assert got[0].tolist() == pytest.approx([0.9545794961075973, 0.9, 0.8454205038924026, 0.0], abs=1e-12)
    twice = traineff_reward(correct, lengths, alpha=0.2, eps=1e-8, double_sigmoid=True)
    sd = math.sqrt(20000 / 3)
    expected = [1 - 0.2 * sigmoid(sigmoid((x - 200) / (sd + 1e-8))) for x in (100, 200, 300)]
    assert twice[0, :3].tolist() == pytest.approx(expected, abs=1e-12)


def test_traineff_single_correct_and_all_wrong():
    got = traineff_reward(
        t([[False, True, False], [False, False, False]]),
        t([[5, 9, 1], [1, 2, 3]]),
        alpha=0.2,
        eps=1e-8,
        double_sigmoid=False,
    )
    # one correct response: sd 0 so z = 0 and r = 1 - 0.2 * 0.5; wrong responses 0
    assert got.tolist() == [[0.0, 0.9, 0.0], [0.0, 0.0, 0.0]]


def test_baselines_hand_group():
    correct = t([[True, False, True, True]])
    lengths = t([[1000, 3000, 5000, 2000]])
    targets = t([2000])
    # L1-Exact: c - 3e-4 * |2000 - L|
    assert l1_exact_reward(correct, lengths, targets, alpha=3e-4)[0].tolist() == pytest.approx(
        [0.7, -0.3, 0.1, 1.0]
    )
    # L1-Max: c * clip(3e-4 * (2000 - L) + 0.5, 0, 1)
    assert l1_max_reward(correct, lengths, targets, alpha=3e-4, delta=0.5)[0].tolist() == pytest.approx(
        [0.8, 0.0, 0.0, 0.5]
    )
    assert length_limit_reward(correct, lengths, limit=2000)[0].tolist() == [1.0, 0.0, 0.0, 1.0]
    # ShorterBetter: SOL = 1000 (shortest correct); 2c - 0.001 |L - 1000|
    assert shorter_better_reward(correct, lengths, alpha=2.0, beta=0.001)[0].tolist() == pytest.approx(
        [2.0, -2.0, -2.0, 1.0]
    )
    # no correct response: SOL is the mean length 2750
    none = shorter_better_reward(~torch.ones_like(correct), lengths, alpha=2.0, beta=0.001)
    assert none[0].tolist() == pytest.approx([-1.75, -0.25, -2.25, -0.75])
    # Kimi: L_min 1000, L_max 5000 -> lambda = 0.5, 0, -0.5, 0.25; wrong keeps min(0, lambda) = 0
    assert kimi_reward(correct, lengths, weight=0.4)[0].tolist() == pytest.approx([1.2, 0.0, 0.8, 1.1])
    assert kimi_reward(correct, t([[7, 7, 7, 7]]), weight=0.4)[0].tolist() == [1.0, 0.0, 1.0, 1.0]
    # Laser: +0.5 for a correct response within 2000 tokens
    assert laser_reward(correct, lengths, 2000, bonus=0.5)[0].tolist() == [1.5, 0.0, 1.0, 1.5]
    # Laser-DE: the wrong 3000 > 2000 earns the exploration bonus unless it loops
    assert laser_reward(correct, lengths, 2000, bonus=0.5, explore=True)[0].tolist() == [1.5, 0.5, 1.0, 1.5]
    loops = t([[False, True, False, False]])
    assert laser_reward(correct, lengths, 2000, bonus=0.5, explore=True, repeated=loops)[0, 1] == 0.0


def test_laser_levels_and_targets():
    # G = 6: easy needs >= 4 right (2/3), medium >= 2, else hard
    correct = t([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], torch.bool)
    assert difficulty_levels(correct).tolist() == [2, 1, 0]
    lengths = t([[100, 200, 300, 900, 50, 50], [400, 800, 10, 10, 10, 10], [700, 1, 1, 1, 1, 1]])
    got = laser_targets(correct, lengths, thresholds=[250, 500, 1000], expected_correct=1)
    # easy: n = 4; coverage(250) = 2/6 -> floor(4/3) = 1 -> 250.
    # medium: n = 2; coverage(250) = 0, coverage(500) = 1/6 -> floor(2/6) = 0, coverage(1000) = 2/6 -> 0:
    #   no threshold reaches 1, so the batch's longest length 900.
    # hard: n = 1; coverage(1000) = 1/6 -> floor(1/6) = 0 -> 900 as well.
    assert got.tolist() == [250, 900, 900]
    # two expected correct: easy coverage(500) = 3/6 -> floor(4 * 3/6) = 2 -> 500
    assert laser_targets(correct, lengths, thresholds=[250, 500, 1000], expected_correct=2).tolist() == [
        500,
        900,
        900,
    ]


def test_group_rewards_dispatch_matches_functions():
    correct = t([[True, False, True, True], [False, True, True, False]])
    lengths = t([[1000, 3000, 5000, 2000], [10, 20, 30, 40]])
    targets = t([2000, 25])
    cases = [
        (CorrectnessReward(), correct.double()),
        (TraineffReward(), traineff_reward(correct, lengths, alpha=0.2, eps=1e-8, double_sigmoid=False)),
        (L1ExactReward(), l1_exact_reward(correct, lengths, targets, alpha=3e-4)),
        (L1MaxReward(), l1_max_reward(correct, lengths, targets, alpha=3e-4, delta=0.5)),
        (TruncationReward(), length_limit_reward(correct, lengths, limit=4000)),
        (ShorterBetterReward(), shorter_better_reward(correct, lengths, alpha=2.0, beta=0.001)),
        (KimiReward(), kimi_reward(correct, lengths, weight=0.4)),
        (LaserReward(target=1500), laser_reward(correct, lengths, 1500, bonus=0.5)),
    ]
    for config, expected in cases:
        got = group_rewards(config, correct, lengths, global_step=1, targets=targets)
        assert torch.equal(got, expected), config.kind
    with pytest.raises(UserError, match="target length"):
        group_rewards(L1MaxReward(), correct, lengths, global_step=1)


def test_thinkprune_rounds():
    config = ThinkPruneReward(limits=[4000, 3000, 2000], steps_per_round=10)
    assert [config.limit_at(s) for s in (1, 10, 11, 20, 21, 500)] == [4000, 4000, 3000, 3000, 2000, 2000]
    correct, lengths = t([[True, True]]), t([[2500, 3500]])
    assert group_rewards(config, correct, lengths, global_step=5)[0].tolist() == [1.0, 1.0]
    assert group_rewards(config, correct, lengths, global_step=15)[0].tolist() == [1.0, 0.0]
    assert group_rewards(config, correct, lengths, global_step=25)[0].tolist() == [0.0, 0.0]


def test_laser_d_dispatch_uses_level_targets():
    correct = t([[1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]], torch.bool)
    lengths = t([[100, 200, 300, 900, 50, 50], [700, 1, 1, 1, 1, 1]])
    config = LaserDReward(thresholds=[250, 500, 1000])
    got = group_rewards(config, correct, lengths, global_step=1)
    # easy target 250 (floor(4 * 2/6) = 1); hard: coverage(1000) = 1/6 -> 0 -> batch max 900
    assert got.tolist() == [[1.5, 1.5, 1.0, 1.0, 0.0, 0.0], [1.5, 0.0, 0.0, 0.0, 0.0, 0.0]]
    de = group_rewards(config.model_copy(update={"kind": "laser_de"}), correct, lengths, global_step=1)
    # wrong responses are all shorter than their targets: no exploration bonus here
    assert torch.equal(de, got)


def _batch(data):
    correct, lengths = data
    rows = min(len(correct), len(lengths))
    return t(correct[:rows]), t(lengths[:rows])


batches = (
    st.integers(2, 8)
    .flatmap(
        lambda g: st.tuples(
            st.lists(st.lists(st.booleans(), min_size=g, max_size=g), min_size=1, max_size=4),
            st.lists(st.lists(st.integers(1, 5000), min_size=g, max_size=g), min_size=1, max_size=4),
        )
    )
    .map(_batch)
)
"""(B, G) correctness and lengths of 1-4 groups of 2-8 responses."""


@settings(max_examples=60, deadline=None)
@given(batches, st.floats(0.0, 1.0))
def test_traineff_properties(batch, alpha):
    correct, lengths = batch
    r = traineff_reward(correct, lengths, alpha=alpha, eps=1e-8, double_sigmoid=False)
    assert (r[~correct] == 0).all()
    assert ((r[correct] >= 1 - alpha - 1e-12) & (r[correct] <= 1)).all()
    for b in range(correct.shape[0]):  # a shorter correct response never earns less than a longer one
        idx = correct[b].nonzero().flatten().tolist()
        for i in idx:
            for j in idx:
                if lengths[b, i] < lengths[b, j]:
                    assert r[b, i] >= r[b, j]
    shifted = traineff_reward(correct, lengths + 777, alpha=alpha, eps=1e-8, double_sigmoid=False)
    assert torch.allclose(shifted, r, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(batches, st.integers(1, 1000))
def test_every_group_reward_depends_on_its_group_only(batch, step):
    correct, lengths = batch
    targets = lengths[:, 0].clone()
    perm = torch.randperm(correct.shape[1], generator=torch.Generator().manual_seed(step))
    for config in (
        CorrectnessReward(),
        TraineffReward(),
        L1ExactReward(),
        L1MaxReward(),
        ThinkPruneReward(),
        ShorterBetterReward(),
        KimiReward(),
        LaserReward(),
        TruncationReward(),
    ):
        whole = group_rewards(config, correct, lengths, global_step=step, targets=targets)
        for b in range(correct.shape[0]):
            alone = group_rewards(
                config, correct[b : b + 1], lengths[b : b + 1], global_step=step, targets=targets[b : b + 1]
            )
            # equal up to float64 rounding: a (B, G) reduction may sum in another order than a (1, G) one
            # (hypothesis found traineff off in the last bit on a 3 x 8 batch)
            assert torch.allclose(alone[0], whole[b], rtol=0, atol=1e-12), config.kind
            shuffled = group_rewards(
                config,
                correct[b : b + 1, perm],
                lengths[b : b + 1, perm],
                global_step=step,
                targets=targets[b : b + 1],
            )
            assert torch.allclose(shuffled[0], whole[b, perm], atol=1e-12), config.kind


def test_repetitive_flags_a_run_of_tokens_occurring_count_times():
    loop = [7, 1, 2, 1, 2, 1, 2, 9]
    assert repetitive([loop, [1, 2, 3, 1, 2], []], ngram=2, count=3).tolist() == [True, False, False]
    assert repetitive([loop], ngram=2, count=4).tolist() == [False]
    assert repetitive([loop], ngram=3, count=2).tolist() == [True]  # 1 2 1 and 2 1 2 overlap
    assert repetitive([[5, 5, 5]], ngram=1, count=3).tolist() == [True]
