"""Differentiable stepwise attention for the MoLSAKI student, computed inside its training forward.

The student's attention loss needs, per layer l, the head-averaged step × critical-unit matrix
`A_l = S · Ī_l · Cᵀ` (molsaki-spec §4) with gradient to the model's parameters, and the value-projection
outputs `V_l` that the MoL router reads (§6). Eager attention with `output_attentions=True` gives both,
but keeps a (B, H, T, T) probability map per layer for the backward pass.

How it avoids (H, T, T) maps. `A_l = S · mean_h(P_h · Cᵀ)`, and `P_h · Cᵀ` is exactly what attention
returns when the value of key j is column j of C (its unit memberships). So the unit columns are
appended to the layer's own values and one SDPA call returns both the layer output and `P_h · Cᵀ`
(B, T, H, G). SDPA's fused kernels (flash on CPU; flash / memory-efficient on CUDA) walk the keys in
blocks with an online softmax and, in backward, recompute each block's probabilities from the saved
log-sum-exp, so neither pass holds a (T, T) map per head; the gradient of `P_h · Cᵀ` with respect to
q and k is SDPA's own backward, exact up to fp32 rounding. The fused kernels need the query and
value widths to match, so q and k get zero columns (q·k is unchanged; the scale is passed explicitly)
and the unit columns are padded to a multiple of 8. Cost: a captured layer attends with head width
`D + G'` instead of `D` (G' = unit count rounded up to 8); memory adds (B, T, H, D + G') saved inputs
and outputs in place of (B, T, H, D). Nothing else of the forward changes: the mask (padding, sliding
windows), GQA and causal handling are transformers' own SDPA path, called with the widened tensors.
Checked on CPU (flash kernel, any width); on CUDA, a width beyond the fused kernels' limits (e.g. flash's
256) would fall back to the math kernel, which does hold (H, T, T) maps — untested here.

With attention dropout active (GPT-2 in training), `A_l` is defined by the softmax before dropout, so
the unit columns go through a second, dropout-free SDPA call; the layer output keeps its dropout.

Values: the attention function receives the value projection split into heads, (B, H_kv, T, D), which
is the `v_proj` output for Llama-family models and the last third of `c_attn` for GPT-2; `V_l` is that
tensor merged back to (B, T, H_kv·D), a view in the autograd graph, so no hooks are needed.

Use it inside the student's forward (the L_exp pass), memberships in padded token coordinates:

    with StepwiseGradCapture(model) as capture:
        capture.arm(steps, units)          # (B, S, T) and (B, C, T), e.g. 0/1 from `aggregate.membership`
        logits = model(ids, attention_mask=mask, use_cache=False).logits
        got = capture.collect()            # got.matrices (B, L, S, C), got.values (B, L, T, d_v)
        loss = ce(logits) + beta * l_att(teacher, got.matrices, router(got.values))
        loss.backward()

Not supported: gradient checkpointing (its recomputed layers would run without the capture) and
attention logit softcapping (SDPA ignores it, so the matrices would not be eager's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from attncore.attention import SwitchedAttention
from attncore.errors import UserError

UNIT_WIDTH_MULTIPLE = 8
"""Unit columns are zero-padded to a multiple of this, which CUDA's fused kernels need for alignment."""


@dataclass(frozen=True)
class StepwiseGrad:
    """One forward's stepwise matrices and value projections, both carrying gradient.

    matrices: (B, L, S, C) raw sums `A_l[s, c]`; values: (B, L, Tk, d_v) with d_v = H_kv · head_dim;
    `layers` are the model layers stacked along L, in order.
    """

    matrices: Tensor
    values: Tensor
    layers: tuple[int, ...]


def _sdpa(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, kw: dict):
    """transformers' SDPA attention with q/k and v zero-padded to one width: (B, Tq, H, value width)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    width = max(query.shape[-1], value.shape[-1])
    scaling = kw.get("scaling")
    kw = {**kw, "scaling": query.shape[-1] ** -0.5 if scaling is None else scaling}

    def widen(t: Tensor) -> Tensor:
        return F.pad(t, (0, width - t.shape[-1]))

    out, _ = sdpa_attention_forward(module, widen(query), widen(key), widen(value), mask, **kw)
    return out[..., : value.shape[-1]]


class _StepwisePlan:
    """Memberships for one forward, on the model's device, and the per-layer results."""

    def __init__(self, steps: Tensor, units: Tensor, layers: Sequence[int] | None, num_layers: int, device):
        if steps.dim() != 3 or units.dim() != 3:
            raise UserError(
                f"steps and units must be (batch, groups, positions) tensors, got shapes "
                f"{tuple(steps.shape)} and {tuple(units.shape)}"
            )
        if len(steps) != len(units):
            raise UserError(f"steps cover {len(steps)} batch rows, units {len(units)}")
        layers = range(num_layers) if layers is None else layers
        if not layers or any(not 0 <= layer < num_layers for layer in layers):
            raise UserError(
                f"layers {list(layers)} must be a non-empty subset of the model's {num_layers} layers"
            )
        self.layers = sorted(set(layers))
        self.steps = steps.to(device, torch.float32)
        units = units.to(device, torch.float32).transpose(1, 2)  # (B, Tk, C): key j's value = its units
        padded = -units.shape[-1] % UNIT_WIDTH_MULTIPLE
        self.unit_columns = F.pad(units, (0, padded))
        self.num_units = units.shape[-1]
        self.matrices: dict[int, Tensor] = {}
        self.values: dict[int, Tensor] = {}

    def attend(
        self,
        module: torch.nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None,
        kw: dict,
    ) -> tuple[Tensor, None]:
        batch, kv_heads, tk, head_dim = value.shape
        tq = query.shape[2]
        if kw.get("softcap") is not None:
            raise UserError("attention logit softcapping is not supported by the differentiable capture")
        if batch != len(self.steps) or tq != self.steps.shape[2] or tk != self.unit_columns.shape[1]:
            raise UserError(
                f"the memberships cover {len(self.steps)} batch rows, {self.steps.shape[2]} query and "
                f"{self.unit_columns.shape[1]} key positions; the forward has {batch}, {tq} and {tk}"
            )
        columns = self.unit_columns.to(value.dtype)[:, None].expand(-1, kv_heads, -1, -1)
        if kw.get("dropout", 0.0) > 0:
            output = _sdpa(module, query, key, value, mask, kw)
            received = _sdpa(module, query, key, columns, mask, {**kw, "dropout": 0.0})
        else:
            both = _sdpa(module, query, key, torch.cat([value, columns], -1), mask, kw)
            output, received = both[..., :head_dim], both[..., head_dim:]
        mean = received[..., : self.num_units].float().mean(2)  # (B, Tq, C): Ī · Cᵀ
        layer = module.layer_idx
        self.matrices[layer] = self.steps @ mean
        self.values[layer] = value.transpose(1, 2).reshape(batch, tk, kv_heads * head_dim)
        return output, None


class _StepwiseFunction:
    """The function registered with `AttentionInterface`: the capture on armed layers, else plain SDPA."""

    def __init__(self):
        self.plan: _StepwisePlan | None = None

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        if self.plan is None or module.layer_idx not in self.plan.layers:
            return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        return self.plan.attend(module, query, key, value, attention_mask, kwargs)


class StepwiseGradCapture(SwitchedAttention):
    """Context manager: SDPA attention that also returns differentiable stepwise matrices (module doc)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__(model, _StepwiseFunction())

    def arm(self, steps: Tensor, units: Tensor, layers: Sequence[int] | None = None) -> None:
        """Capture during the next forward: `steps` (B, S, Tq) over query positions and `units` (B, C, Tk)
        over key positions, in padded token coordinates (weights need not be 0/1); all layers by default.
        Padding positions and padding groups should carry weight 0; their rows and columns come back 0."""
        self._check_armable()
        if getattr(self.model, "is_gradient_checkpointing", False):
            raise UserError(
                "the differentiable capture does not work with gradient checkpointing "
                "(recomputed layers would run without it); disable it for this model"
            )
        device = next(self.model.parameters()).device
        self._function.plan = _StepwisePlan(steps, units, layers, self.num_layers, device)

    def collect(self) -> StepwiseGrad:
        """The matrices and values of the forward since `arm`, stacked by layer; disarms the capture."""
        plan = self._function.plan
        if plan is None:
            raise UserError("collect() without a pending capture: call arm() before the forward")
        self._function.plan = None
        missing = [layer for layer in plan.layers if layer not in plan.matrices]
        if missing:
            raise UserError(
                f"no forward reached layers {missing} since arm(); run the model before collect()"
            )
        return StepwiseGrad(
            torch.stack([plan.matrices[layer] for layer in plan.layers], 1),
            torch.stack([plan.values[layer] for layer in plan.layers], 1),
            tuple(plan.layers),
        )
