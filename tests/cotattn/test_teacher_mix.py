"""Teacher MoL: column difference G, p^t = softmax(G / τ1), A^t; layer mixing and SL one-hot weights."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cotattn.layer_mix import mix_layers, single_layer_weights
from cotattn.teacher_mix import TAU1, column_difference, teacher_layer_weights, teacher_target

# Two layers x 2 steps x 3 units, worked by hand:
# layer 0 differences: row 0 |3-1| + |0-3| = 5, row 1 0 -> 5 / (2 * 2) = 1.25
# layer 1 differences: row 0 0, row 1 |4-0| + |0-4| = 8 -> 8 / 4 = 2
A = torch.tensor([[[1.0, 3.0, 0.0], [2.0, 2.0, 2.0]], [[0.0, 0.0, 0.0], [0.0, 4.0, 0.0]]])


def test_column_difference_by_hand():
    assert column_difference(A).tolist() == [1.25, 2.0]


def test_teacher_target_by_hand():
    got = teacher_target(A)
    assert TAU1 == 0.1
    p0 = 1 / (1 + math.exp(7.5))  # softmax([12.5, 20])
    assert got.layer_weights.tolist() == pytest.approx([p0, 1 - p0], rel=1e-6)
    expected = p0 * A[0] + (1 - p0) * A[1]
    torch.testing.assert_close(got.target, expected)
    assert got.column_difference.tolist() == [1.25, 2.0]


def test_column_difference_needs_two_units():
    with pytest.raises(ValueError, match="2 critical units"):
        column_difference(torch.ones(3, 4, 1))
    with pytest.raises(ValueError, match="tau1"):
        teacher_layer_weights(torch.ones(3), 0.0)


def test_single_layer_weights_pick_one_layer():
    assert single_layer_weights(4, 2).tolist() == [0, 0, 1, 0]
    assert single_layer_weights(4, -1).tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(mix_layers(single_layer_weights(2, 1), A), A[1])
    with pytest.raises(ValueError, match="outside"):
        single_layer_weights(4, 4)
    with pytest.raises(ValueError, match="3 layer weights for 2"):
        mix_layers(torch.ones(3), A)


shapes = st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(2, 6), st.integers(0, 2**31))


@settings(max_examples=60, deadline=None)
@given(shapes, st.floats(-3, 3), st.floats(0.1, 10))
def test_g_ignores_row_offsets_and_scales_linearly(shape, shift, scale):
    layers, steps, units, seed = shape
    a = torch.rand(layers, steps, units, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g = column_difference(a)
    assert (g >= 0).all()
    offsets = torch.randn(layers, steps, 1, dtype=torch.float64) * shift
    torch.testing.assert_close(column_difference(a + offsets), g)
    torch.testing.assert_close(column_difference(a * scale), g * scale)
    assert column_difference(torch.ones_like(a) * shift).abs().max() == 0


@settings(max_examples=60, deadline=None)
@given(shapes, st.floats(0.01, 100))
def test_weights_are_a_distribution_led_by_the_largest_g(shape, tau):
    layers, steps, units, seed = shape
    a = torch.rand(layers, steps, units, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got = teacher_target(a, tau)
    assert got.layer_weights.sum().item() == pytest.approx(1.0)
    assert (got.layer_weights >= 0).all()
    assert got.layer_weights.argmax() == got.column_difference.argmax()
    assert got.target.shape == (steps, units)
    # A^t is a convex combination: it lies between the layers' entries.
    assert (got.target <= a.max(0).values + 1e-12).all() and (got.target >= a.min(0).values - 1e-12).all()
    batched = teacher_target(torch.stack([a, 2 * a]), tau)
    torch.testing.assert_close(batched.target[0], got.target)
