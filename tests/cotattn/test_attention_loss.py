"""Per-step forward KL between the row softmaxes of teacher and student, and the rows' entropy, with
padded steps and units."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cotattn.attention_loss import row_entropy, stepwise_kl


def test_by_hand_with_padding():
    # Step 0: softmax(0, ln 3) = (1/4, 3/4) against (1/2, 1/2); step 1 equal rows -> KL 0.
    teacher = torch.tensor([[[0.0, math.log(3), 7.0], [1.0, 2.0, -4.0], [9.0, 9.0, 9.0]]])
    student = torch.tensor([[[5.0, 5.0, -2.0], [3.0, 4.0, 8.0], [0.0, 1.0, 2.0]]])
    step_mask = torch.tensor([[True, True, False]])
    unit_mask = torch.tensor([[True, True, False]])
    kl0 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert stepwise_kl(teacher, student, step_mask, unit_mask).tolist() == pytest.approx([kl0 / 2])


def test_no_units_or_steps_gives_zero_and_finite_gradients():
    student = torch.randn(2, 3, 4, requires_grad=True)
    teacher = torch.randn(2, 3, 4)
    step_mask = torch.tensor([[True, True, True], [False, False, False]])
    unit_mask = torch.tensor([[False, False, False, False], [True, True, True, True]])
    loss = stepwise_kl(teacher, student, step_mask, unit_mask)
    assert loss.tolist() == [pytest.approx(0.0, abs=1e-7), 0.0]
    loss.sum().backward()
    assert torch.isfinite(student.grad).all()


def test_gradient_matches_torch_kl_on_real_entries():
    teacher, student = torch.randn(1, 3, 5), torch.randn(1, 3, 5, requires_grad=True)
    unit_mask = torch.tensor([[True, True, True, False, False]])
    loss = stepwise_kl(teacher, student, torch.ones(1, 3, dtype=torch.bool), unit_mask)
    loss.sum().backward()
    ref_student = student.detach()[..., :3].clone().requires_grad_(True)
    ref = (
        torch.nn.functional.kl_div(
            ref_student.log_softmax(-1), teacher[..., :3].log_softmax(-1), log_target=True, reduction="none"
        )
        .sum(-1)
        .mean()
    )
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(student.grad[..., :3], ref_student.grad)
    assert student.grad[..., 3:].abs().max() == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**31))
def test_properties(batch, steps, units, seed):
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(batch, steps, units, generator=gen, dtype=torch.float64) * 3
    student = torch.randn(batch, steps, units, generator=gen, dtype=torch.float64) * 3
    step_mask = torch.ones(batch, steps, dtype=torch.bool)
    unit_mask = torch.ones(batch, units, dtype=torch.bool)
    kl = stepwise_kl(teacher, student, step_mask, unit_mask)
    assert (kl >= -1e-6).all()
    # The row softmax ignores a per-row constant: a student equal to the teacher up to one is exact.
    shifted = teacher + torch.randn(batch, steps, 1, generator=gen, dtype=torch.float64)
    assert stepwise_kl(teacher, shifted, step_mask, unit_mask).abs().max() < 1e-5
    # Padding a step and a unit with arbitrary values changes nothing.
    pad_t = torch.nn.functional.pad(teacher, (0, 1, 0, 1), value=5.0)
    pad_s = torch.nn.functional.pad(student, (0, 1, 0, 1), value=-3.0)
    pad_steps = torch.nn.functional.pad(step_mask, (0, 1), value=False)
    pad_units = torch.nn.functional.pad(unit_mask, (0, 1), value=False)
    torch.testing.assert_close(stepwise_kl(pad_t, pad_s, pad_steps, pad_units).float(), kl.float())


def test_row_entropy_by_hand_with_padding():
    # The rows of test_by_hand_with_padding over the 2 real units: (1/4, 3/4) and
    # softmax(1, 2); divided by ln 2. The padded step and unit are left out.
    matrix = torch.tensor([[[0.0, math.log(3), 7.0], [1.0, 2.0, -4.0], [9.0, 9.0, 9.0]]])
    step_mask = torch.tensor([[True, True, False]])
    unit_mask = torch.tensor([[True, True, False]])
    h0 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    q = 1 / (1 + math.e)
    h1 = -(q * math.log(q) + (1 - q) * math.log(1 - q))
    got = row_entropy(matrix, step_mask, unit_mask)
    assert got.tolist() == pytest.approx([(h0 + h1) / 2 / math.log(2)])


def test_row_entropy_is_one_on_equal_rows_and_zero_below_two_units():
    step_mask = torch.ones(3, 2, dtype=torch.bool)
    unit_mask = torch.tensor([[True] * 4, [True, False, False, False], [False] * 4])
    got = row_entropy(torch.full((3, 2, 4), 0.3), step_mask, unit_mask)
    assert got.tolist() == pytest.approx([1.0, 0.0, 0.0])
    peaked = torch.tensor([[[40.0, 0.0, 0.0, 0.0], [0.0, 0.0, 40.0, 0.0]]])
    assert row_entropy(peaked, step_mask[:1], unit_mask[:1]).item() == pytest.approx(0.0, abs=1e-12)
