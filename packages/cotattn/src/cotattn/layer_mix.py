"""Mixing a model's per-layer stepwise matrices into one (molsaki-spec §5-6): `A = Σ_l p_l A_l`.

Both sides collapse their own layers with a distribution over them (never a layer-to-layer map,
pitfall 9): the teacher with the fixed column-difference weights, the student with the router, and the
single-layer ablation (SL) with a one-hot distribution.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mix_layers(weights: Tensor, matrices: Tensor) -> Tensor:
    """`Σ_l p_l A_l`: weights (..., L) and matrices (..., L, S, C) -> (..., S, C)."""
    if weights.shape[-1] != matrices.shape[-3]:
        raise ValueError(f"{weights.shape[-1]} layer weights for {matrices.shape[-3]} layers of matrices")
    return (weights[..., :, None, None] * matrices).sum(-3)


def single_layer_weights(num_layers: int, layer: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """(L,) one-hot weights on `layer` (0-based; negative counts from the last): the SL ablation."""
    if not -num_layers <= layer < num_layers:
        raise ValueError(f"layer {layer} is outside a model of {num_layers} layers")
    weights = torch.zeros(num_layers, dtype=dtype)
    weights[layer] = 1.0
    return weights
