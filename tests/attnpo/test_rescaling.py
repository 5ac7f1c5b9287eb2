"""Stepwise rescaling on a hand batch (every branch of spec §6) and its properties on random batches."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnpo.config import RescalingConfig
from attnpo.rescaling import rescale_advantages, score_baselines, step_factors, token_advantages

WIDTH = 12
SPANS = [[0, 3], [3, 6], [6, 9]]  # steps; token 9 is `</think>`, 10-11 the answer and EOS: |F| = 2


def hand_batch(**overrides):
    """Rows: 0 correct A>0; 1 correct A<0; 2 wrong; 3 correct single step; 4 correct A=0."""
    batch = dict(
        advantages=torch.tensor([0.5, -0.3, -0.6, 0.2, 0.0], dtype=torch.float64),
        scores=torch.tensor([[0.01, 0.05, 0.02]] * 5, dtype=torch.float64),
        spans=torch.tensor([SPANS] * 5),
        n_steps=torch.tensor([3, 3, 3, 1, 3]),
        correct=torch.tensor([True, True, False, True, True]),
        accuracy=torch.full((5,), 0.5, dtype=torch.float64),
        answer_tokens=torch.full((5,), 2),
        total_tokens=torch.full((5,), 20),  # prompt 8 + response 12
    )
    batch.update(overrides)
    return batch


def run(global_step=600, config=None, **overrides):
    return rescale_advantages(
        **hand_batch(**overrides), width=WIDTH, global_step=global_step, config=config or RescalingConfig()
    )


def row(values_per_step, rest):
    return [v for v in values_per_step for _ in range(3)] + [rest] * 3


def test_release_formula_on_a_hand_batch():
    out = run()
    # S_base = 0.5^2 * 2/20 = 0.025; w = 0.25; gate open since 600 > 1000 * (1 - 0.5)
    assert out.factors.baseline[:2].tolist() == pytest.approx([0.025, 0.025])
    assert out.factors.baseline[2:].isnan().all()
    # row 0: steps 0 and 2 below the baseline: 0.25 * 0.4 + 0.75 = 0.85, 0.25 * 0.8 + 0.75 = 0.95
    assert out.factors.gamma[0].tolist() == pytest.approx([0.85, 1.0, 0.95])
    assert out.tokens[0].tolist() == pytest.approx(row([0.425, 0.5, 0.475], 0.5))
    # row 1: A < 0, step 1 above the baseline: gamma 0
    assert out.factors.gamma[1].tolist() == [1.0, 0.0, 1.0]
    assert out.tokens[1].tolist() == pytest.approx(row([-0.3, 0.0, -0.3], -0.3))
    # rows 2-4 untouched: wrong, one step, zero advantage
    assert out.factors.touched.tolist() == [True, True, False, False, False]
    for b, a in ((2, -0.6), (3, 0.2), (4, 0.0)):
        assert out.tokens[b].tolist() == [a] * WIDTH
        assert out.factors.gamma[b].tolist() == [1.0] * 3
    assert out.factors.pos.tolist()[0] == [True, False, True]
    assert out.factors.neg.tolist()[1] == [False, True, False]
    assert int(out.factors.pos.sum()) == 2 and int(out.factors.neg.sum()) == 1


def test_curriculum_gate_and_variants():
    closed = run(global_step=500)  # 500 is not > 1000 * (1 - 0.5)
    assert closed.tokens[0].tolist() == [0.5] * WIDTH
    assert closed.factors.gamma[1].tolist() == [1.0, 0.0, 1.0]  # Neg-Adv has no gate
    # p = 7/8 opens after step 125
    easy = dict(accuracy=torch.full((5,), 7 / 8, dtype=torch.float64))
    assert not run(global_step=125, **easy).factors.pos.any()
    assert run(global_step=126, **easy).factors.pos.any()
    notes = RescalingConfig(gamma_variant="paper_notes")
    # gate T * p = 500: open at 501; gamma = 0.25 * S / S_base
    assert not run(global_step=500, config=notes).factors.pos.any()
    assert run(global_step=501, config=notes).factors.gamma[0].tolist() == pytest.approx([0.1, 1.0, 0.2])
    floored = run(config=RescalingConfig(delta=0.2)).factors.gamma[0]
    assert floored.tolist() == pytest.approx([0.8 * 0.85 + 0.2, 1.0, 0.8 * 0.95 + 0.2])


def test_ablation_switches():
    flat = run(global_step=1, config=RescalingConfig(difficulty_aware=False))
    # S_base = 2/20 = 0.1, w = 1, no gate: gamma = S / S_base on every step of row 0; row 1 has no step above
    assert flat.factors.gamma[0].tolist() == pytest.approx([0.1, 0.5, 0.2])
    assert flat.factors.gamma[1].tolist() == [1.0, 1.0, 1.0]
    pos_only = run(config=RescalingConfig(neg_adv=False))
    assert pos_only.factors.gamma[1].tolist() == [1.0] * 3 and pos_only.factors.pos.any()
    neg_only = run(config=RescalingConfig(pos_adv=False))
    assert neg_only.factors.gamma[0].tolist() == [1.0] * 3 and neg_only.factors.neg.any()
    off = run(config=RescalingConfig(enabled=False))
    expected = torch.tensor([0.5, -0.3, -0.6, 0.2, 0.0], dtype=torch.float64)[:, None].expand(5, WIDTH)
    assert torch.equal(off.tokens, expected) and not off.factors.touched.any()
    half = run(config=RescalingConfig(neg_factor=0.5))
    assert half.factors.gamma[1].tolist() == [1.0, 0.5, 1.0]


UNEQUAL = [[[0, 2], [2, 6], [6, 9]]] * 5  # steps of 2, 4 and 3 tokens


def test_thinking_baseline_on_a_hand_batch():
    thinking = RescalingConfig(baseline="thinking")
    # p = 1: S_base = (2 * 0.01 + 4 * 0.05 + 3 * 0.02) / 9 = 0.28 / 9, w = 1, gate open: gamma = S / S_base
    sure = dict(spans=torch.tensor(UNEQUAL), accuracy=torch.ones(5, dtype=torch.float64))
    out = run(global_step=1, config=thinking, **sure)
    assert out.factors.baseline[:2].tolist() == pytest.approx([0.28 / 9] * 2)
    assert out.factors.gamma[0].tolist() == pytest.approx([9 / 28, 1.0, 9 / 14])
    assert out.factors.gamma[1].tolist() == [1.0, 0.0, 1.0]  # Neg-Adv against the same S_base
    # the release's baseline on the same rows: S_base = 2 / 20
    release = run(global_step=1, **sure)
    assert release.factors.gamma[0].tolist() == pytest.approx([0.1, 0.5, 0.2])
    assert release.factors.gamma[1].tolist() == [1.0] * 3
    # p = 0.5: S_base = 0.25 * (2 * 0.002 + 4 * 0.05 + 3 * 0.02) / 9 = 0.066 / 9; w = 0.25
    scores = torch.tensor([[0.002, 0.05, 0.02]] * 5, dtype=torch.float64)
    half = run(config=thinking, spans=torch.tensor(UNEQUAL), scores=scores)
    assert half.factors.baseline[0].item() == pytest.approx(0.066 / 9)
    assert half.factors.gamma[0].tolist() == pytest.approx([0.75 + 0.25 * 0.018 / 0.066, 1.0, 1.0])
    assert half.factors.gamma[1].tolist() == [1.0, 0.0, 0.0]
    assert half.tokens[0].tolist() == pytest.approx([0.5 * (0.75 + 0.25 * 0.018 / 0.066)] * 2 + [0.5] * 10)
    # the uniform one (0.025) also attenuates step 2 of row 0 and zeroes only step 1 of row 1
    release = run(spans=torch.tensor(UNEQUAL), scores=scores).factors
    assert release.gamma[0].tolist() == pytest.approx([0.75 + 0.25 * 0.08, 1.0, 0.75 + 0.25 * 0.8])
    assert release.gamma[1].tolist() == [1.0, 0.0, 1.0]


def naive_tokens(advantages, gamma, spans, n_steps, width):
    out = advantages.to(torch.float64)[:, None].repeat(1, width)
    for b in range(len(advantages)):
        for k in range(int(n_steps[b])):
            s, e = spans[b, k].tolist()
            out[b, s:e] = gamma[b, k] * advantages[b]
    return out


@st.composite
def batches(draw):
    size = draw(st.integers(1, 6))
    width = draw(st.integers(4, 30))
    rows = []
    for _ in range(size):
        n = draw(st.integers(0, min(6, width - 2)))
        cuts = sorted(draw(st.lists(st.integers(1, width - 2), min_size=n, max_size=n, unique=True)))
        starts = [0, *cuts][:n] if n else []
        ends = [*starts[1:], draw(st.integers(starts[-1] + 1, width - 1))] if n else []
        rows.append((n, list(zip(starts, ends, strict=True))))
    k = max(1, max(n for n, _ in rows))
    spans = torch.zeros(size, k, 2, dtype=torch.long)
    for b, (_, sp) in enumerate(rows):
        if sp:
            spans[b, : len(sp)] = torch.tensor(sp)
    floats = st.floats(-2, 2, allow_nan=False)
    group = draw(st.integers(2, 8))
    return dict(
        advantages=torch.tensor(draw(st.lists(floats, min_size=size, max_size=size)), dtype=torch.float64),
        scores=torch.tensor(
            draw(st.lists(st.lists(st.floats(0, 0.5), min_size=k, max_size=k), min_size=size, max_size=size)),
            dtype=torch.float64,
        ),
        spans=spans,
        n_steps=torch.tensor([n for n, _ in rows]),
        correct=torch.tensor(draw(st.lists(st.booleans(), min_size=size, max_size=size))),
        accuracy=torch.tensor(
            [draw(st.integers(1, group)) / group for _ in range(size)], dtype=torch.float64
        ),
        answer_tokens=torch.tensor([draw(st.integers(1, 50)) for _ in range(size)]),
        total_tokens=torch.tensor([draw(st.integers(60, 500)) for _ in range(size)]),
    ), width


@settings(max_examples=100, deadline=None)
@given(
    batches(),
    st.integers(1, 1500),
    st.sampled_from(["code", "paper_notes"]),
    st.booleans(),
    st.sampled_from(["uniform", "thinking"]),
)
def test_rescaling_properties(case, global_step, variant, aware, baseline):
    batch, width = case
    config = RescalingConfig(gamma_variant=variant, difficulty_aware=aware, baseline=baseline)
    out = rescale_advantages(**batch, width=width, global_step=global_step, config=config)
    a, gamma = batch["advantages"], out.factors.gamma
    assert torch.equal(out.tokens, naive_tokens(a, gamma, batch["spans"], batch["n_steps"], width))
    touched = out.factors.touched
    assert torch.equal(touched, batch["correct"] & (batch["n_steps"] >= 2) & (a != 0))
    assert (gamma[~touched] == 1).all()
    assert torch.equal(out.tokens[~touched], a[~touched, None].expand(-1, width))
    assert ((gamma > 0) | (gamma == 0)).all() and (gamma <= 1).all()
    w = batch["accuracy"] ** 2 if aware else torch.ones_like(batch["accuracy"])
    for b in range(len(a)):
        if a[b] > 0 and variant == "code":  # Pos-Adv keeps gamma in [1 - p^lam, 1]
            assert (gamma[b] >= 1 - w[b] - 1e-12).all()
        if a[b] < 0:
            assert set(gamma[b].tolist()) <= {0.0, 1.0}
    # a step above its baseline is never attenuated when A > 0
    base = out.factors.baseline[:, None]
    above = touched[:, None] & (batch["scores"] >= base) & (a[:, None] > 0)
    assert (gamma[above] == 1).all()
    # the same factors come out of step_factors alone
    lengths = batch["spans"][..., 1] - batch["spans"][..., 0]
    alone = step_factors(
        **{k: v for k, v in batch.items() if k != "spans"},
        step_lengths=lengths,
        global_step=global_step,
        config=config,
    )
    assert torch.equal(alone.gamma, gamma)
    assert torch.equal(token_advantages(a, gamma, batch["spans"], batch["n_steps"], width), out.tokens)


def naive_thinking_baseline(scores, lengths, n):
    return sum(float(lengths[k]) * float(scores[k]) for k in range(n)) / sum(
        int(lengths[k]) for k in range(n)
    )


def grid_scores(data, shape):
    """(B, K) scores on a grid of 1/1000 in [0, 0.5]: distinct ones differ by far more than rounding, and
    none is subnormal (so scaling by a power of two is exact)."""
    size, k = shape
    grid = st.lists(st.lists(st.integers(0, 500), min_size=k, max_size=k), min_size=size, max_size=size)
    return torch.tensor(data.draw(grid), dtype=torch.float64) / 1000


@settings(max_examples=100, deadline=None)
@given(batches(), st.integers(-20, 20), st.sampled_from(["code", "paper_notes"]), st.booleans(), st.data())
def test_thinking_baseline_properties(case, exponent, variant, aware, data):
    batch, width = case
    batch = {**batch, "scores": grid_scores(data, batch["scores"].shape)}
    lengths = batch["spans"][..., 1] - batch["spans"][..., 0]
    n = batch["n_steps"]
    config = RescalingConfig(baseline="thinking", gamma_variant=variant, difficulty_aware=aware)
    out = rescale_advantages(**batch, width=width, global_step=1500, config=config)
    # S_base / p^beta is the step-length-weighted mean step score of the row
    scale = batch["accuracy"] ** 2 if aware else torch.ones_like(batch["accuracy"])
    per_step = score_baselines(
        batch["scores"], lengths, n, batch["answer_tokens"], batch["total_tokens"], "thinking"
    )
    for b in range(len(n)):
        if n[b] > 0:
            assert float(per_step[b]) == pytest.approx(
                naive_thinking_baseline(batch["scores"][b], lengths[b], n[b])
            )
        if out.factors.touched[b]:
            assert float(out.factors.baseline[b]) == pytest.approx(float(scale[b] * per_step[b]))
    # scale-free: every score times c > 0 gives the same factors (c a power of two, so the floating-point
    # arithmetic scales exactly too)
    scaled = rescale_advantages(
        **{**batch, "scores": batch["scores"] * 2.0**exponent}, width=width, global_step=1500, config=config
    )
    assert torch.equal(scaled.factors.gamma, out.factors.gamma)
    assert torch.equal(scaled.factors.pos, out.factors.pos) and torch.equal(
        scaled.factors.neg, out.factors.neg
    )


@settings(max_examples=100, deadline=None)
@given(batches(), st.data())
def test_thinking_baseline_at_p_one_attenuates_exactly_the_rows_with_unequal_scores(case, data):
    batch, width = case
    size = len(batch["scores"])
    scores = grid_scores(data, batch["scores"].shape)
    equal_rows = data.draw(st.lists(st.booleans(), min_size=size, max_size=size))
    for b, equal in enumerate(equal_rows):
        if equal:
            scores[b] = scores[b, 0]
    batch = {
        **batch,
        "scores": scores,
        "advantages": batch["advantages"].abs() + 0.1,
        "correct": torch.ones(size, dtype=torch.bool),
        "accuracy": torch.ones(size, dtype=torch.float64),
    }
    out = rescale_advantages(**batch, width=width, global_step=1, config=RescalingConfig(baseline="thinking"))
    for b in range(size):
        n = int(batch["n_steps"][b])
        real = scores[b, :n]
        attenuated = out.factors.pos[b, :n]
        if n < 2 or bool((real == real[0]).all()):
            assert not attenuated.any()
            assert (out.factors.gamma[b] == 1).all()
        else:  # the lowest-scored step lies below the mean and is attenuated; the highest is not
            assert attenuated[int(real.argmin())] and not attenuated[int(real.argmax())]
