"""MoL router: zero-initialised (uniform p^s), RMSNorm then a masked sum over tokens, flatten, linear,
softmax / τ2; gradients reach the values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cotattn.router import TAU2, MoLRouter


def test_starts_uniform_with_spec_temperature():
    router = MoLRouter(3, 4)
    assert router.tau2 == TAU2 == 0.5
    p = router(torch.randn(2, 3, 5, 4) * 100, torch.ones(2, 5))
    torch.testing.assert_close(p, torch.full((2, 3), 1 / 3))
    assert sum(p.numel() for p in router.parameters()) == 4 + 3 * 4 * 3 + 3  # norm scale, W, b


def test_by_hand():
    router = MoLRouter(2, 2, tau2=0.5, eps=0.0)
    with torch.no_grad():
        router.proj.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]))
    # layer 0: tokens [3, 4] and [1, 1] (the third is padding); layer 1: [0, 2], [2, 0]
    values = torch.tensor([[[[3.0, 4.0], [1.0, 1.0], [50.0, 7.0]], [[0.0, 2.0], [2.0, 0.0], [1.0, 9.0]]]])
    mask = torch.tensor([[1, 1, 0]])
    h0 = [3 / math.sqrt(12.5) + 1.0, 4 / math.sqrt(12.5) + 1.0]  # RMSNorm(x) = x / rms(x)
    h1 = [0.0 + math.sqrt(2), math.sqrt(2) + 0.0]
    logits = torch.tensor([h0[0], h1[1]]) / 0.5
    torch.testing.assert_close(router(values, mask)[0], logits.softmax(-1))


def test_gradient_reaches_router_and_values():
    router = MoLRouter(2, 3)
    values = torch.randn(1, 2, 4, 3, requires_grad=True)
    p = router(values, torch.ones(1, 4))
    (p * torch.tensor([1.0, -1.0])).sum().backward()
    assert router.proj.weight.grad.abs().sum() > 0
    # With W = 0 only the bias and W receive gradient; once W moves, the values do too.
    with torch.no_grad():
        router.proj.weight.normal_()
    values.grad = None
    (router(values, torch.ones(1, 4)) * torch.tensor([1.0, -1.0])).sum().backward()
    assert values.grad.abs().sum() > 0


def test_shape_errors():
    with pytest.raises(ValueError, match="2 layers x 3 values"):
        MoLRouter(2, 3)(torch.randn(1, 3, 4, 3), torch.ones(1, 4))
    with pytest.raises(ValueError, match="tau2"):
        MoLRouter(2, 3, tau2=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(2, 6), st.integers(1, 5), st.integers(0, 2**31))
def test_distribution_ignores_padding_and_token_order(batch, layers, tokens, dim, seed):
    torch.manual_seed(seed)
    router = MoLRouter(layers, dim)
    with torch.no_grad():
        router.proj.weight.normal_(std=0.1)
        router.proj.bias.normal_()
    values = torch.randn(batch, layers, tokens, dim)
    mask = torch.ones(batch, tokens)
    mask[:, -1] = 0
    p = router(values, mask)
    torch.testing.assert_close(p.sum(-1), torch.ones(batch))
    changed = values.clone()
    changed[:, :, -1] = torch.randn(batch, layers, dim) * 1000
    torch.testing.assert_close(router(changed, mask), p)
    order = torch.randperm(tokens - 1)
    permuted = torch.cat([values[:, :, order], values[:, :, -1:]], 2)
    torch.testing.assert_close(router(permuted, mask), p)
