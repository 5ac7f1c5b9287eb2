"""The attention loss (molsaki-spec §7, paper Eq. 6-7): per step, a forward KL between the row
softmaxes of the teacher's and the student's mixed stepwise matrices, averaged over steps; and the
entropy of those rows, which the spec asks to log (pitfall 3): near-uniform rows on both sides make the
KL small whatever the student learns.

The softmax runs over critical units with no temperature, on raw sums. Entries of units after the
step are causal zeros on both sides and keep their `exp(0)` mass (pitfall 2). In a padded batch,
padding units are left out of the softmax and padding steps out of the mean.
"""

from __future__ import annotations

from torch import Tensor


def _row_log_softmax(matrix: Tensor, unit_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Log row softmax over the real units of (B, S, C) matrices, with the blocked entries (B, 1, C) and
    whether an example has any unit (B, 1). An example without units gets finite rows (zeroed by the
    callers), so neither value nor gradient turns NaN."""
    units = unit_mask.bool()
    has_units = units.any(-1, keepdim=True)
    blocked = ~(units | ~has_units)[:, None, :]
    return matrix.float().masked_fill(blocked, float("-inf")).log_softmax(-1), blocked, has_units


def _step_mean(per_step: Tensor, step_mask: Tensor, has_units: Tensor) -> Tensor:
    """(B, S) -> (B,): the mean over each example's real steps (0 without a real step or unit)."""
    steps = (step_mask.bool() & has_units).to(per_step.dtype)
    return (per_step * steps).sum(-1) / steps.sum(-1).clamp_min(1.0)


def stepwise_kl(teacher: Tensor, student: Tensor, step_mask: Tensor, unit_mask: Tensor) -> Tensor:
    """`mean_s KL(softmax(A^t[s]) ‖ softmax(A^s[s]))` per example.

    teacher, student: (B, S, C) mixed matrices; step_mask (B, S) and unit_mask (B, C): True on real
    steps and units. Returns (B,); an example without a real step or unit gives 0.
    """
    log_t, blocked, has_units = _row_log_softmax(teacher, unit_mask)
    log_s, _, _ = _row_log_softmax(student, unit_mask)
    # Blocked entries are -inf - -inf; filling them keeps NaN out of the value and the gradient.
    per_step = (log_t.exp() * (log_t - log_s).masked_fill(blocked, 0.0)).sum(-1)  # (B, S)
    return _step_mean(per_step, step_mask, has_units)


def row_entropy(matrix: Tensor, step_mask: Tensor, unit_mask: Tensor) -> Tensor:
    """Mean over real steps of the row softmax's entropy over the C real units, divided by log C (1 =
    uniform rows, 0 = one-hot), per example. Shapes as in `stepwise_kl`; returns (B,), 0 for an example
    with fewer than 2 units (no spread to measure)."""
    log_p, blocked, has_units = _row_log_softmax(matrix, unit_mask)
    per_step = -(log_p.exp() * log_p.masked_fill(blocked, 0.0)).sum(-1)  # (B, S) nats
    counts = unit_mask.bool().sum(-1).to(per_step.dtype)  # (B,)
    scale = counts.clamp_min(2.0).log()
    return _step_mean(per_step, step_mask, has_units) / scale * (counts >= 2).to(per_step.dtype)
