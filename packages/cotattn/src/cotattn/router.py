"""The student's Mixture-of-Layers router (molsaki-spec §6, paper Eq. 5).

`h_l = Σ_i RMSNorm(V_l)[i]` over the real tokens (a sum, not a mean), and
`p^s = softmax((W · flatten([h_1; …; h_L]) + b) / τ2)`, with one RMSNorm (learnable scale) shared by all layers and one linear map of the flattened H. The
linear layer starts at zero so p^s starts uniform: the sum grows with the sequence length, and a random
init saturates p^s to one layer and starves the others of gradient (pitfall 5). The router only feeds
the attention loss; it is not part of the deployed student.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

TAU2 = 0.5
"""Student mixing temperature (paper §4.1)."""


class MoLRouter(nn.Module):
    """Layer weights of the student from its value projections."""

    def __init__(self, num_layers: int, value_dim: int, tau2: float = TAU2, eps: float | None = None):
        super().__init__()
        if tau2 <= 0:
            raise ValueError(f"tau2 must be positive, got {tau2}")
        self.num_layers, self.value_dim, self.tau2 = num_layers, value_dim, tau2
        self.norm = nn.RMSNorm(value_dim, eps=eps)
        self.proj = nn.Linear(num_layers * value_dim, num_layers)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, values: Tensor, mask: Tensor) -> Tensor:
        """values (B, L, T, d_v) value-projection outputs, mask (B, T) 1 on real tokens -> p^s (B, L).

        Padding positions are left out of the sum; values are computed in the router's dtype."""
        batch, layers, _, dim = values.shape
        if (layers, dim) != (self.num_layers, self.value_dim):
            raise ValueError(
                f"router built for {self.num_layers} layers x {self.value_dim} values, got {layers} x {dim}"
            )
        normed = self.norm(values.to(self.proj.weight.dtype))
        summed = (normed * mask[:, None, :, None].to(normed.dtype)).sum(2)  # (B, L, d_v)
        return torch.softmax(self.proj(summed.reshape(batch, layers * dim)) / self.tau2, -1)
