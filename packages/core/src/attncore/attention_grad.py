"""Differentiable stepwise attention for the MoLSAKI student, computed inside its training forward.

The student's attention loss needs, per layer l, the head-averaged step × critical-unit matrix
`A_l = S · Ī_l · Cᵀ` (molsaki-spec §4) with gradient to the model's parameters, and the value-projection
outputs `V_l` that the MoL router reads (§6). Eager attention with `output_attentions=True` gives both,
but keeps a (B, H, T, T) probability map per layer for the backward pass.

The scheme. `Cᵀ` (keys × units) is zero outside the K "unit keys" (positions where some unit has
weight: 44 of 256 tokens in the benchmark's GSM8K text), so `P_h · Cᵀ` needs each head's
probabilities on those K columns only. For a unit key j,

    P_h[i, j] = m_h[i] · softmax_K(s_h[i, K])[j],    m_h[i] = Σ_{j' ∈ K} P_h[i, j'],

an identity (both sides are exp(s_ij) over a sum of exponentials), so the split is exact:
- the mass m_h that row i gives the unit keys comes from the layer's own SDPA call, given one extra
  value column x_j = [j ∈ K]: its output column is Σ_j P_ij x_j = m_i. The gradient of m through the
  softmax normaliser (which involves every key) is then SDPA's own fused backward; nothing else has to
  see all T keys. The fused CPU kernel needs the query and value widths to match, so q and k get one
  zero column (q·k is unchanged; the scale is passed explicitly): the layer attends at width D + 1
  (off the CPU, padded further to a multiple of 8 for the fused kernels' alignment).
- the softmax over the K unit keys alone is `_UnitKeySoftmax`, a custom autograd function that
  computes (B, H, rows, K) scores in row chunks in forward and recomputes them in backward, saving only
  the query (the very tensor SDPA saves), the gathered unit keys and m. Under a causal mask a chunk of
  rows is scored only against the unit keys some of its rows can see.
Memory per captured layer: one column more in the q, k, v and output that SDPA saves, plus the
(B, 1, Tq, K) mask over the unit keys, the (B, H_kv, K, D) unit keys and the (B, Tq, K) result; no
(H, T, T) map, and no (H, T, K) map outlives a chunk. Time: SDPA at width D + 1 plus
O(B · H · T · K · D) for the unit-key scores, growing with the unit tokens K, not the unit count. The
mask (padding, sliding windows), GQA and causal handling of the layer output are transformers' own SDPA
path; the unit-key scores use the same mask restricted to the K columns (SDPA's causal rule when the
model passes none). Untested on CUDA (no GPU here): a widened head beyond a fused kernel's limit
(flash's 256, i.e. D = 256) would fall back to the math kernel, which holds (H, T, T) maps.

With attention dropout active (GPT-2 in training), `A_l` is defined by the softmax before dropout, so
the mass column goes through a second, dropout-free SDPA call; the layer output keeps its dropout.

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

from attncore.attention import SwitchedAttention, sdpa_causal, unmasked_visible
from attncore.errors import UserError

CUDA_WIDTH_MULTIPLE = 8
"""Off the CPU, the widened head is zero-padded to a multiple of this, for the fused kernels' alignment."""
ROW_CHUNK = 128
"""Query rows per chunk of unit-key scores: small enough that a causal chunk skips most unseen keys."""


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

    def widen(t: Tensor) -> Tensor:
        return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))

    out, _ = sdpa_attention_forward(module, widen(query), widen(key), widen(value), mask, **kw)
    return out[..., : value.shape[-1]]


def _unit_key_bias(
    mask: Tensor | None, keys: Tensor, batch: int, tq: int, causal: bool, dtype: torch.dtype
) -> Tensor:
    """Additive (B, 1, Tq, K) mask of the query rows over the unit keys `keys` (K,): the model's mask
    restricted to those columns, or SDPA's rule when it passes none (`attention.unmasked_visible`).
    Hidden entries get the dtype's lowest finite value rather than -inf, so a row that sees no unit key
    has a finite softmax (its mass m is 0, which zeroes it)."""
    lowest = torch.finfo(dtype).min
    if mask is None:
        visible = unmasked_visible(torch.arange(tq, device=keys.device), keys, causal)[None, None]
    else:
        if mask.dim() != 4 or mask.shape[1] != 1:
            raise UserError(f"the capture expects a (B, 1, Tq, Tk) mask, got shape {tuple(mask.shape)}")
        picked = mask[..., keys]
        if picked.dtype != torch.bool:
            return picked.to(dtype).clamp_min(lowest).expand(batch, -1, -1, -1)
        visible = picked
    zero = torch.zeros((), dtype=dtype, device=keys.device)
    return torch.where(visible, zero, lowest).expand(batch, 1, tq, -1)


def _row_chunks(bias: Tensor) -> list[tuple[int, int, int]]:
    """(first row, end row, key count) per chunk: the keys up to the last one any row of it can see."""
    seen = (bias > torch.finfo(bias.dtype).min).any(0).any(0)  # (Tq, K)
    chunks = []
    for start in range(0, seen.shape[0], ROW_CHUNK):
        end = min(start + ROW_CHUNK, seen.shape[0])
        columns = seen[start:end].any(0).nonzero()
        chunks.append((start, end, int(columns[-1]) + 1 if len(columns) else 0))
    return chunks


class _UnitKeySoftmax(torch.autograd.Function):
    """`mean_h(m_h[i] · softmax_K(s_h[i, K]))`: (B, Tq, K) head-averaged probabilities on the unit keys.

    Inputs: query (B, H, Tq, ≥D) (only its first D columns are read, so SDPA's padded copy can be passed
    and saved once), unit keys (B, H_kv, K, D), mass m (B, H, Tq), bias (B, 1, Tq, K) additive mask,
    scale. Scores exist only per row chunk, in forward and again in backward (module doc)."""

    @staticmethod
    def forward(ctx, query: Tensor, keys: Tensor, mass: Tensor, bias: Tensor, scale: float) -> Tensor:
        chunks = _row_chunks(bias)
        out = mass.new_zeros(query.shape[0], query.shape[2], keys.shape[2])
        for start, end, width in chunks:
            if width:
                rows = _grouped_rows(query, keys, start, end)
                probs = _chunk_probs(rows, keys, bias[:, :, start:end, :width], scale)
                out[:, start:end, :width] = (probs * mass[:, :, start:end, None]).mean(1)
        ctx.save_for_backward(query, keys, mass, bias)
        ctx.scale, ctx.chunks = scale, chunks
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        query, keys, mass, bias = ctx.saved_tensors
        heads, kv_heads, head_dim = query.shape[1], keys.shape[1], keys.shape[-1]
        d_query, d_keys, d_mass = torch.zeros_like(query), torch.zeros_like(keys), torch.zeros_like(mass)
        for start, end, width in ctx.chunks:
            if not width:
                continue
            rows = _grouped_rows(query, keys, start, end)
            probs = _chunk_probs(rows, keys, bias[:, :, start:end, :width], ctx.scale)  # (B, H, c, w)
            g = grad[:, None, start:end, :width] / heads
            d_mass[:, :, start:end] = (probs * g).sum(-1)
            d_probs = g * mass[:, :, start:end, None]
            d_scores = probs * (d_probs - (probs * d_probs).sum(-1, keepdim=True)) * ctx.scale
            d_grouped = d_scores.unflatten(1, (kv_heads, -1)).flatten(2, 3)  # (B, H_kv, g·c, w)
            d_rows = (d_grouped @ keys[:, :, :width]).unflatten(2, (-1, end - start)).flatten(1, 2)
            d_query[:, :, start:end, :head_dim] = d_rows
            d_keys[:, :, :width] += (rows.transpose(-1, -2) @ d_grouped).transpose(-1, -2)
        return d_query, d_keys, d_mass, None, None


def _grouped_rows(query: Tensor, keys: Tensor, start: int, end: int) -> Tensor:
    """Query rows start:end as (B, H_kv, g·c, D): each KV head's query heads stacked (transformers'
    `repeat_kv` order), so one matmul per KV head scores them all."""
    kv_heads, head_dim = keys.shape[1], keys.shape[-1]
    return query[:, :, start:end, :head_dim].unflatten(1, (kv_heads, -1)).flatten(2, 3)


def _chunk_probs(rows: Tensor, keys: Tensor, bias: Tensor, scale: float) -> Tensor:
    """Softmax of grouped query rows (B, H_kv, g·c, D) over the first w unit keys: (B, H, c, w), with
    `bias` (B, 1, c, w)."""
    scores = (rows @ keys[:, :, : bias.shape[-1]].transpose(-1, -2)).unflatten(2, (-1, bias.shape[2]))
    return (scores.flatten(1, 2) * scale + bias).softmax(-1)


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
        units = units.to(device, torch.float32)
        self.key_count = units.shape[2]
        self.keys = units.ne(0).any(1).any(0).nonzero()[:, 0]  # (K,) unit keys of any batch row, ascending
        self.unit_columns = units[:, :, self.keys].transpose(1, 2)  # (B, K, C)
        self.indicator = torch.zeros(self.key_count, device=device)
        self.indicator[self.keys] = 1.0  # x_j = [j ∈ K]
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
        if batch != len(self.steps) or tq != self.steps.shape[2] or tk != self.key_count:
            raise UserError(
                f"the memberships cover {len(self.steps)} batch rows, {self.steps.shape[2]} query and "
                f"{self.key_count} key positions; the forward has {batch}, {tq} and {tk}"
            )
        scaling = kw.get("scaling")
        kw = {**kw, "scaling": query.shape[-1] ** -0.5 if scaling is None else scaling}
        layer = module.layer_idx
        self.values[layer] = value.transpose(1, 2).reshape(batch, tk, kv_heads * head_dim)
        if len(self.keys) == 0:  # no unit token anywhere in the batch: nothing to attend to
            self.matrices[layer] = self.steps.new_zeros(batch, len(self.steps[0]), self.unit_columns.shape[2])
            return _sdpa(module, query, key, value, mask, kw), None
        x = self.indicator.to(value.dtype)[None, None, :, None].expand(batch, kv_heads, -1, -1)
        if kw.get("dropout", 0.0) > 0:
            output = _sdpa(module, query, key, value, mask, kw)
            mass = _sdpa(module, query, key, x, mask, {**kw, "dropout": 0.0})[..., 0]
        else:  # q and k widened here, so that SDPA and `_UnitKeySoftmax` save the same query tensor
            extra = 1 if query.device.type == "cpu" else 1 + -(head_dim + 1) % CUDA_WIDTH_MULTIPLE
            query, wide_key = F.pad(query, (0, extra)), F.pad(key, (0, extra))
            both = _sdpa(module, query, wide_key, torch.cat([value, F.pad(x, (0, extra - 1))], -1), mask, kw)
            output, mass = both[..., :head_dim], both[..., head_dim]
        bias = _unit_key_bias(mask, self.keys, batch, tq, sdpa_causal(module, kw, tq), query.dtype)
        probs = _UnitKeySoftmax.apply(query, key[:, :, self.keys], mass.transpose(1, 2), bias, kw["scaling"])
        self.matrices[layer] = self.steps @ (probs.float() @ self.unit_columns)  # S · Ī · Cᵀ
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
