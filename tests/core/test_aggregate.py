"""Step scores and stepwise attention matrices against brute-force loops."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attncore.aggregate import (
    membership,
    step_scores,
    step_scores_per_head,
    stepwise_attention,
    uniform_step_score,
)


def random_probs(shape: tuple[int, ...], seed: int, dtype=torch.float64) -> torch.Tensor:
    """Softmax rows of random logits (the functions accept any non-negative weights)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=dtype).mul(3).softmax(-1)


@st.composite
def step_layouts(draw):
    """A sequence of length T: prompt P, then steps (lengths >= 1, some of length 1), then |F| answer tokens."""
    prompt = draw(st.integers(0, 4))
    lengths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))
    n_answer = draw(st.integers(1, 4))
    spans, start = [], 0
    for length in lengths:
        spans.append((start, start + length))
        start += length
    total = prompt + start + 1 + n_answer  # + the `</think>` token
    return prompt, spans, n_answer, total


def test_membership_hand_example():
    matrix = membership([range(0, 2), {4, 2}, []], 6, offset=1)
    assert matrix.tolist() == [
        [0, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 0, 1],
        [0, 0, 0, 0, 0, 0],
    ]
    assert matrix.dtype == torch.float32
    with pytest.raises(ValueError, match="outside a sequence of length 6"):
        membership([range(3, 6)], 6, offset=1)
    with pytest.raises(ValueError, match="outside"):
        membership([[-1]], 6)


def test_step_scores_hand_example():
    # 1 head, |F| = 2 answer rows over T = 5 keys; steps {1} and {2, 3}.
    probs = torch.tensor([[[0.5, 0.1, 0.2, 0.2, 0.0], [0.4, 0.3, 0.1, 0.1, 0.1]]])
    steps = membership([range(1, 2), range(2, 4)], 5)
    assert torch.allclose(step_scores(probs, steps), torch.tensor([0.4, (0.2 + 0.2 + 0.1 + 0.1) / 2]))


@settings(max_examples=100, deadline=None)
@given(step_layouts(), st.integers(1, 3), st.integers(0, 2**16))
def test_step_scores_against_loops(layout, heads, seed):
    prompt, spans, n_answer, total = layout
    probs = random_probs((heads, n_answer, total), seed)
    steps = membership([range(a, b) for a, b in spans], total, offset=prompt, dtype=torch.float64)
    per_head = step_scores_per_head(probs, steps)
    expected = torch.zeros(heads, len(spans), dtype=torch.float64)
    for h in range(heads):
        for k, (a, b) in enumerate(spans):
            total_mass = 0.0
            for m in range(n_answer):
                for n in range(prompt + a, prompt + b):
                    total_mass += probs[h, m, n].item()
            expected[h, k] = total_mass / (b - a)
    assert torch.allclose(per_head, expected, atol=1e-12)
    # Averaging heads before or after the step reduction gives the same scores.
    averaged = step_scores(probs, steps)
    assert torch.allclose(averaged, expected.mean(0), atol=1e-12)
    assert torch.allclose(step_scores_per_head(probs.mean(0, keepdim=True), steps)[0], averaged, atol=1e-12)


def test_step_scores_batched_equals_per_example():
    # Two responses with different step counts, padded with an all-zero membership row.
    probs = random_probs((2, 3, 4, 10), seed=1)
    first = membership([range(1, 3), range(3, 6), range(6, 7)], 10)
    second = torch.cat([membership([range(2, 5), range(5, 8)], 10), torch.zeros(1, 10)])
    scores = step_scores(probs, torch.stack([first, second]))
    assert scores.shape == (2, 3)
    assert torch.allclose(scores[0], step_scores(probs[0], first))
    assert torch.allclose(scores[1, :2], step_scores(probs[1], second[:2]))
    assert scores[1, 2] == 0
    assert step_scores_per_head(probs, torch.stack([first, second])).shape == (2, 3, 3)


def test_uniform_attention_scores_the_uniform_reference():
    n_answer, total = 3, 12
    probs = torch.full((2, n_answer, total), 1 / total)
    steps = membership([range(2, 3), range(3, 7), range(7, 8)], total)
    expected = uniform_step_score(n_answer, total)
    assert expected == pytest.approx(0.25)
    assert torch.allclose(step_scores(probs, steps), torch.full((3,), expected))


def test_step_mass_is_conserved():
    # Rows sum to one: size-weighted step scores plus the mass outside the steps give |F|.
    probs = random_probs((3, 5, 20), seed=2)
    spans = [(4, 6), (6, 11), (11, 12)]
    steps = membership([range(a, b) for a, b in spans], 20)
    sizes = torch.tensor([b - a for a, b in spans], dtype=torch.float64)
    inside = (step_scores(probs, steps) * sizes).sum()
    outside = probs.mean(0)[:, list(range(4)) + list(range(12, 20))].sum()
    assert torch.allclose(inside + outside, torch.tensor(5.0, dtype=torch.float64))


def test_half_precision_inputs_are_reduced_in_fp32():
    probs = random_probs((2, 4, 9), seed=3, dtype=torch.float32)
    steps = membership([range(0, 3), range(3, 5)], 9)
    scores = step_scores(probs.to(torch.bfloat16), steps)
    assert scores.dtype == torch.float32
    assert torch.allclose(scores, step_scores(probs.to(torch.bfloat16).float(), steps))
    matrix = stepwise_attention(random_probs((2, 9, 9), 4, torch.float32).half(), steps, steps)
    assert matrix.dtype == torch.float32


@st.composite
def molsaki_layouts(draw):
    """N positions (BOS first), contiguous steps after it, units as arbitrary token sets."""
    n = draw(st.integers(3, 10))
    cuts = sorted(draw(st.sets(st.integers(2, n - 1), max_size=3)))
    bounds = [1, *cuts, n]
    steps = [range(a, b) for a, b in pairwise(bounds)]
    units = draw(st.lists(st.sets(st.integers(1, n - 1), min_size=1, max_size=3), min_size=1, max_size=4))
    return n, steps, [sorted(u) for u in units]


def causal_probs(layers: int, heads: int, n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(layers, heads, n, n, generator=generator, dtype=torch.float64)
    return logits.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf")).softmax(-1)


@settings(max_examples=100, deadline=None)
@given(molsaki_layouts(), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**16))
def test_stepwise_attention_against_loops(layout, layers, heads, seed):
    n, step_sets, unit_sets = layout
    probs = causal_probs(layers, heads, n, seed)
    S = membership(step_sets, n, dtype=torch.float64)
    C = membership(unit_sets, n, dtype=torch.float64)
    result = stepwise_attention(probs, S, C)
    assert result.shape == (layers, len(step_sets), len(unit_sets))
    for layer in range(layers):
        for s, step in enumerate(step_sets):
            for c, unit in enumerate(unit_sets):
                total = 0.0
                for i in step:
                    for j in unit:
                        total += sum(probs[layer, h, i, j].item() for h in range(heads)) / heads
                assert result[layer, s, c].item() == pytest.approx(total, abs=1e-12)
    # Averaging heads after the reduction gives the same matrix.
    per_head = torch.stack([stepwise_attention(probs[:, h : h + 1], S, C) for h in range(heads)])
    assert torch.allclose(per_head.mean(0), result, atol=1e-12)
    # Causal zeros: a unit entirely after a step gets exactly nothing from it.
    for s, step in enumerate(step_sets):
        for c, unit in enumerate(unit_sets):
            if min(unit) > max(step):
                assert (result[:, s, c] == 0).all()


def test_stepwise_attention_batched_membership():
    probs = causal_probs(2, 2, 6, seed=5).unsqueeze(0).expand(3, -1, -1, -1, -1)  # (B, L, H, N, N)
    S = membership([range(1, 3), range(3, 6)], 6).double()
    C = membership([[2], [4, 5]], 6).double()
    batched = stepwise_attention(probs, S.expand(3, 1, -1, -1), C.expand(3, 1, -1, -1))
    assert batched.shape == (3, 2, 2, 2)
    assert torch.allclose(batched[1], stepwise_attention(probs[1], S, C))


def test_gradients_flow_through_both_reductions():
    probs = causal_probs(1, 3, 5, seed=6).requires_grad_()
    S = membership([range(1, 3), range(3, 5)], 5, dtype=torch.float64)
    C = membership([[1], [2, 4]], 5, dtype=torch.float64)
    stepwise_attention(probs, S, C).sum().backward()
    # d(sum A)/d p[h, i, j] = (1/H) * (#steps holding i) * (#units holding j)
    expected = (S.sum(0)[:, None] * C.sum(0)[None, :] / 3).expand(1, 3, 5, 5)
    assert torch.allclose(probs.grad, expected)
    assert torch.autograd.gradcheck(lambda p: stepwise_attention(p, S, C), (probs.detach().requires_grad_(),))
    answer = random_probs((2, 3, 7), seed=7).requires_grad_()
    steps = membership([range(1, 2), range(2, 5)], 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: step_scores(p, steps), (answer,))
