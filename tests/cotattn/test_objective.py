"""Combined objective (α, β, MMI weight), the eligibility rule, and the MMI term against its reference
formulation (`nn.CrossEntropyLoss(rationale_vector, answer_vector)`)."""

from __future__ import annotations

import math

import pytest
import torch

from cotattn.mmi import max_token_probs, mmi_loss
from cotattn.objective import ALPHA, BETA, MMI_WEIGHT, combined_loss, has_attention_loss


def test_spec_defaults():
    assert (ALPHA, BETA, MMI_WEIGHT) == (0.5, 1.0, 0.1)


def test_combined_by_hand():
    answer, rationale = torch.tensor(2.0), torch.tensor(4.0)
    attention = torch.tensor([0.3, 0.9, 5.0])
    eligible = has_attention_loss(torch.tensor([2, 5, 1]))
    assert eligible.tolist() == [True, True, False]
    got = combined_loss(answer, rationale, attention, eligible)
    assert got.attention.item() == pytest.approx(0.6)
    assert got.attention_share.item() == pytest.approx(2 / 3)
    assert got.total.item() == pytest.approx(0.5 * 2 + 0.5 * 4 + 0.6)
    dss = combined_loss(answer, rationale, attention, eligible, beta=0.0)
    assert dss.total.item() == pytest.approx(3.0) and dss.attention.item() == pytest.approx(0.6)
    mmi = combined_loss(answer, rationale, mmi=torch.tensor(7.0), beta=0.0, mmi_weight=0.1)
    assert mmi.total.item() == pytest.approx(3.7)
    vanilla = combined_loss(answer, alpha=1.0, beta=0.0)
    assert (vanilla.total.item(), vanilla.rationale.item()) == (2.0, 0.0)


def test_no_eligible_example_gives_zero_attention():
    got = combined_loss(torch.tensor(1.0), torch.tensor(1.0), torch.tensor([4.0]), torch.tensor([False]))
    assert (got.attention.item(), got.attention_share.item(), got.total.item()) == (0.0, 0.0, 1.0)


def test_missing_parts_are_errors():
    with pytest.raises(ValueError, match="beta"):
        combined_loss(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="1 - alpha"):
        combined_loss(torch.tensor(1.0), beta=0.0)
    with pytest.raises(ValueError, match="mmi_weight"):
        combined_loss(torch.tensor(1.0), torch.tensor(1.0), beta=0.0, mmi_weight=0.1)
    with pytest.raises(ValueError, match="alpha"):
        combined_loss(torch.tensor(1.0), torch.tensor(1.0), beta=0.0, alpha=1.5)


def test_mmi_by_hand():
    # Answer task: softmax rows (1/2, 1/2), (3/4, 1/4) and a masked row -> max (3/4, 1/2).
    answer = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [9.0, -9.0]]])
    answer_mask = torch.tensor([[True, True, False]])
    # Rationale task: one row softmax (1/4, 3/4).
    rationale = torch.tensor([[[0.0, math.log(3)]]], requires_grad=True)
    rationale_mask = torch.tensor([[True]])
    assert max_token_probs(answer, answer_mask).tolist() == [pytest.approx([0.75, 0.5])]
    lse = math.log(math.exp(0.25) + math.exp(0.75))
    expected = -(0.75 * (0.25 - lse) + 0.5 * (0.75 - lse))
    loss = mmi_loss(answer, answer_mask, rationale, rationale_mask)
    assert loss.item() == pytest.approx(expected)
    reference = torch.nn.CrossEntropyLoss()(torch.tensor([[0.25, 0.75]]), torch.tensor([[0.75, 0.5]]))
    assert loss.item() == pytest.approx(reference.item())
    loss.backward()
    assert rationale.grad.abs().sum() > 0
