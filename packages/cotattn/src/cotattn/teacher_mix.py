"""The teacher's parameter-free Mixture-of-Layers (molsaki-spec §5, paper Eq. 4).

`G_l` is the mean absolute difference between neighbouring critical-unit columns of layer l's
stepwise matrix (a finite difference along the unit axis, the paper's "column gradient"): layers whose
attention tells the units apart get large G, and `p^t = softmax(G / τ1)` puts the target's weight there.
The teacher is frozen and reads a fixed text, so all of this is computed once per example and cached.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from cotattn.layer_mix import mix_layers

TAU1 = 0.1
"""Teacher mixing temperature (paper §4.1)."""


def column_difference(matrices: Tensor) -> Tensor:
    """`G_l = 1/(|S|(|C|-1)) Σ_s Σ_c |A_l[s, c+1] - A_l[s, c]|`: (..., L, S, C) -> (..., L).

    Needs at least one step and two critical units (with fewer, G is undefined and the example has no
    attention loss)."""
    steps, units = matrices.shape[-2:]
    if steps < 1 or units < 2:
        raise ValueError(f"G needs >= 1 step and >= 2 critical units, got {steps} x {units}")
    return (matrices[..., 1:] - matrices[..., :-1]).abs().mean(dim=(-2, -1))


def teacher_layer_weights(column_differences: Tensor, tau1: float = TAU1) -> Tensor:
    """`p^t = softmax(G / τ1)` over layers: (..., L) -> (..., L)."""
    if tau1 <= 0:
        raise ValueError(f"tau1 must be positive, got {tau1}")
    return (column_differences / tau1).softmax(-1)


@dataclass(frozen=True)
class TeacherTarget:
    """One example's teacher side: `G` (L,), `p^t` (L,) and the mixed target `A^t` (S, C)."""

    column_difference: Tensor
    layer_weights: Tensor
    target: Tensor


def teacher_target(matrices: Tensor, tau1: float = TAU1) -> TeacherTarget:
    """G, p^t and `A^t = Σ_l p^t_l A^t_l` of one example's (L, S, C) teacher matrices."""
    g = column_difference(matrices)
    weights = teacher_layer_weights(g, tau1)
    return TeacherTarget(g, weights, mix_layers(weights, matrices))
