"""Attention reduced onto steps: the AttnPO step score and the MoLSAKI stepwise matrix.

Both are linear maps of attention probabilities written with 0/1 membership matrices (rows: steps or
critical units; columns: sequence positions), so they batch with matmul, stay differentiable (the
MoLSAKI student backpropagates through them) and give the same result whether heads are averaged
before or after the reduction. Computation is in fp32 at least; half-precision inputs are upcast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def membership(
    groups: Sequence[Iterable[int]],
    length: int,
    *,
    offset: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """(len(groups), length) 0/1 matrix: row r marks positions `offset + i` for i in `groups[r]`.

    A group is any iterable of token indices: `range(start, end)` for a step, a set for a critical unit.
    `offset` turns response- or text-relative indices into sequence positions (prompt length, BOS).
    """
    rows, cols = [], []
    for r, group in enumerate(groups):
        for i in group:
            rows.append(r)
            cols.append(offset + int(i))
    if cols and not 0 <= min(cols) <= max(cols) < length:
        raise ValueError(f"positions {min(cols)}..{max(cols)} fall outside a sequence of length {length}")
    matrix = torch.zeros(len(groups), length, dtype=dtype, device=device)
    matrix[rows, cols] = 1
    return matrix


def step_scores_per_head(answer_probs: Tensor, steps: Tensor) -> Tensor:
    """AttnPO `S^h_k = (1/|s_k|) Σ_{m∈F} Σ_{n∈s_k} a^h(m→n)` (attnpo-spec §4).

    answer_probs: (..., heads, |F|, T) causal softmax rows of the answer queries over the whole
    sequence (prompt and BOS included, never renormalised). steps: (..., K, T) step membership in
    sequence positions. Returns (..., heads, K). An all-zero membership row (padding) scores 0.
    """
    dtype = _compute_dtype(answer_probs)
    mass = answer_probs.to(dtype).sum(-2)  # (..., heads, T): attention each key receives from F
    steps = steps.to(dtype)
    sizes = steps.sum(-1).clamp_min(1).unsqueeze(-2)  # (..., 1, K)
    return torch.einsum("...ht,...kt->...hk", mass, steps) / sizes


def step_scores(answer_probs: Tensor, steps: Tensor) -> Tensor:
    """Head-averaged step score `S_k = (1/N) Σ_h S^h_k`: (..., heads, |F|, T), (..., K, T) -> (..., K)."""
    mean = answer_probs.to(_compute_dtype(answer_probs)).mean(-3, keepdim=True)
    return step_scores_per_head(mean, steps).squeeze(-2)


def uniform_step_score(n_answer: int | Tensor, n_total: int | Tensor) -> float | Tensor:
    """`|F| / |o|`: roughly a step's score if every answer query spread its attention evenly over the
    `|o|` = prompt + response positions; AttnPO's `S_base = p^β · |F| / |o|`."""
    return n_answer / n_total


def stepwise_attention(probs: Tensor, steps: Tensor, units: Tensor) -> Tensor:
    """MoLSAKI `A[s, c] = Σ_{i∈step s} Σ_{j∈unit c} Ī(i→j)` with Ī the head average (molsaki-spec §4).

    probs: (..., heads, N, N) softmax attention (one layer, or layers stacked in front); steps:
    (S, N) and units: (C, N) membership matrices, or batched with leading dimensions that broadcast
    as in `torch.matmul`. Returns (..., S, C) raw sums, no normalisation.
    """
    dtype = _compute_dtype(probs)
    mean = probs.to(dtype).mean(-3)  # (..., N, N)
    return steps.to(dtype) @ mean @ units.to(dtype).transpose(-1, -2)
