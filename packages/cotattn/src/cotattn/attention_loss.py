"""The attention loss (molsaki-spec §7, paper Eq. 6-7): per step, a forward KL between the row
softmaxes of the teacher's and the student's mixed stepwise matrices, averaged over steps.

The softmax runs over critical units with no temperature, on raw sums. Entries of units after the
step are causal zeros on both sides and keep their `exp(0)` mass (pitfall 2). In a padded batch,
padding units are left out of the softmax and padding steps out of the mean.
"""

from __future__ import annotations

from torch import Tensor


def stepwise_kl(teacher: Tensor, student: Tensor, step_mask: Tensor, unit_mask: Tensor) -> Tensor:
    """`mean_s KL(softmax(A^t[s]) ‖ softmax(A^s[s]))` per example.

    teacher, student: (B, S, C) mixed matrices; step_mask (B, S) and unit_mask (B, C): True on real
    steps and units. Returns (B,); an example without a real step or unit gives 0.
    """
    units = unit_mask.bool()
    has_units = units.any(-1, keepdim=True)
    units = units | ~has_units  # an example without units: finite rows, zeroed below
    blocked = ~units[:, None, :]
    log_t = teacher.float().masked_fill(blocked, float("-inf")).log_softmax(-1)
    log_s = student.float().masked_fill(blocked, float("-inf")).log_softmax(-1)
    # Blocked entries are -inf - -inf; filling them keeps NaN out of the value and the gradient.
    per_step = (log_t.exp() * (log_t - log_s).masked_fill(blocked, 0.0)).sum(-1)  # (B, S)
    steps = (step_mask.bool() & has_units).to(per_step.dtype)
    return (per_step * steps).sum(-1) / steps.sum(-1).clamp_min(1.0)
