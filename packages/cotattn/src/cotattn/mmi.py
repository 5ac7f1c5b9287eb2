"""The MMI baseline's extra term (Chen et al., Findings ACL 2024; molsaki-spec §10).

Its reference code (`xinchen9/cot_distillation_ACL2024`, `TaskPrefixTrainer.compute_loss`) takes, per
task, the maximum over output positions of the token probabilities, a (V,) vector per example, and
calls `nn.CrossEntropyLoss()(rationale_vector, answer_vector.detach())`: the rationale task's vector is
read as logits (log-softmaxed again) and the answer task's vector, without gradient, is the soft
target. We keep that argument order; positions are the target tokens of each task.
"""

from __future__ import annotations

import torch
from torch import Tensor


def max_token_probs(logits: Tensor, mask: Tensor) -> Tensor:
    """Max over the masked positions of softmax(logits): logits (B, T, V), mask (B, T) -> (B, V).

    A row without a masked position gives zeros."""
    probs = logits.float().softmax(-1).masked_fill(~mask.bool()[..., None], 0.0)
    return probs.max(-2).values


def mmi_loss(
    answer_logits: Tensor, answer_mask: Tensor, rationale_logits: Tensor, rationale_mask: Tensor
) -> Tensor:
    """`mean_b CE(input=r_b, soft target=stopgrad(a_b)) = -mean_b Σ_v a_b[v] · log_softmax(r_b)[v]` with
    a, r the per-task max-over-positions probability vectors (module doc). Scalar."""
    target = max_token_probs(answer_logits, answer_mask).detach()
    scores = max_token_probs(rationale_logits, rationale_mask)
    return -(target * torch.log_softmax(scores, -1)).sum(-1).mean()
