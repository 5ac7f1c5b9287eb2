"""Selective attention capture: softmax probabilities for chosen heads and rows, without eager attention.

Eager attention with `output_attentions=True` keeps a (B, H, T, T) map for every layer. AttnPO needs a
few (layer, query-head) pairs and the rows of the final-answer tokens; MoLSAKI needs head-averaged
probabilities restricted to step rows and critical-token columns. `AttentionCapture` switches a loaded
model to a custom function registered with transformers' `AttentionInterface` (and `sdpa_mask` with
`AttentionMaskInterface`, so padded batches still receive their mask). The layer output is always
computed by SDPA; alongside, and without gradient, the function recomputes `softmax(q kᵀ · scale + mask)`
in fp32 for the selected heads and query rows only, in row chunks of bounded size. It uses the mask the
model built (padding, sliding windows) and falls back to SDPA's own causal rule only when that mask is
None. Softcapping is applied when the model passes `softcap` (Gemma2), as eager attention does; note that
transformers' SDPA path ignores it, so such a model's layer outputs are SDPA's, not eager's.

Selections (what to capture in the next forward):
- `HeadRows(heads, rows)`: AttnPO. For each (layer, query head), the probabilities of each batch row's
  query positions over all keys. Result: `{(layer, head): (B, R, Tk)}`.
- `HeadMeanBlocks(rows, keys)`: MoLSAKI. For each layer, probabilities averaged over all query heads,
  restricted to per-example query positions × key positions. Result: `{layer: (B, R, K)}`.
- `HeadMeanGroups(row_groups, key_groups)`: MoLSAKI reduced in place, `A_l = S · Ī_l · Cᵀ` with (B, G, T)
  membership weights in token coordinates. Result: `{layer: (B, G_rows, G_keys)}`.
- `HeadGroups(row_groups, key_groups, heads)`: AttnPO reduced in place, per (layer, query head)
  `row_groups · P_{l,h} · key_groupsᵀ` (e.g. answer rows F × steps), every head of the model by default.
  Nothing of size (heads, rows, keys) outlives a chunk, so head discovery reads all heads in one forward.
  Result: `{(layer, head): (B, G_rows, G_keys)}`.

Positions are columns of `input_ids` (padded coordinates); keys also count cached positions. Index sets
differ in size per batch row; R and K are the largest sizes, and padding slots come back as zeros.
Query rows that see no key at all (left padding) also come back as zeros rather than NaN.

Use it standalone:

    with AttentionCapture(model) as capture:
        probs = capture.run(HeadRows([(16, 2), (20, 8)], rows=[[50, 51], [47, 48, 49]]), ids, mask)

or inside a forward that other code runs (the selection applies once, to the next forward):

    capture.arm(selection)
    logits = model(ids, attention_mask=mask).logits
    probs = capture.collect()

Each capture registers its own name, so several can coexist in one process; leaving the context
restores the model's previous attention implementation. The registered function holds no reference to
the model or to captured tensors once the context has ended. The model is assumed to sit on one device.
`SwitchedAttention` (registering and switching) is shared with the differentiable capture in
`attncore.attention_grad`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import torch
from torch import Tensor

from attncore.errors import UserError

IndexSets = Sequence[Sequence[int] | Tensor]
"""One set of positions per batch row; sizes may differ."""

DEFAULT_CHUNK_BYTES = 32 * 2**20
_names = itertools.count()


@dataclass(frozen=True)
class HeadRows:
    """AttnPO selection: query rows (per batch row) of the given (layer, query-head) pairs, over all keys."""

    heads: Sequence[tuple[int, int]]
    rows: IndexSets


@dataclass(frozen=True)
class HeadMeanBlocks:
    """MoLSAKI selection: head-averaged probabilities, query positions × key positions, per example."""

    rows: IndexSets
    keys: IndexSets
    layers: Sequence[int] | None = None


@dataclass(frozen=True)
class HeadMeanGroups:
    """MoLSAKI selection reduced by membership weights: per layer `row_groups · Ī · key_groupsᵀ`.

    `row_groups` is (B, G_rows, T) over query positions, `key_groups` is (B, G_keys, Tk) over key positions
    (for example step and critical-unit 0/1 memberships); only positions with a nonzero weight are computed.
    """

    row_groups: Tensor
    key_groups: Tensor
    layers: Sequence[int] | None = None


@dataclass(frozen=True)
class HeadGroups:
    """Per-head selection reduced by membership weights: `row_groups · P_{l,h} · key_groupsᵀ` for each
    (layer, query head) in `heads` (None: all of them), shapes as in `HeadMeanGroups`.

    Within a layer the probabilities are computed for as many heads and query rows at once as fit in
    the capture's `chunk_bytes` (one head and one row at the least), then reduced at once.
    """

    row_groups: Tensor
    key_groups: Tensor
    heads: Sequence[tuple[int, int]] | None = None


Selection = HeadRows | HeadMeanBlocks | HeadMeanGroups | HeadGroups


def _pad_index_sets(sets: IndexSets, what: str) -> tuple[Tensor, Tensor]:
    """Per-row index sets -> (index, valid), both (B, M); padding slots hold index 0 and valid False."""
    rows = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in sets]
    if not rows:
        raise UserError(f"{what}: expected one index set per batch row, got none")
    if any(bool((r < 0).any()) for r in rows):
        raise UserError(f"{what}: positions must be non-negative")
    width = max(1, max(len(r) for r in rows))
    index = torch.zeros(len(rows), width, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, r in enumerate(rows):
        index[b, : len(r)] = r
        valid[b, : len(r)] = True
    return index, valid


def _support(groups: Tensor, what: str) -> tuple[Tensor, Tensor, Tensor]:
    """(B, G, T) membership -> positions with any weight as (index, valid) and the weights there (B, G, M)."""
    if groups.dim() != 3:
        raise UserError(
            f"{what}: expected a (batch, groups, positions) tensor, got shape {tuple(groups.shape)}"
        )
    used = groups.ne(0).any(1)
    index, valid = _pad_index_sets([u.nonzero().flatten() for u in used], what)
    index, valid = index.to(groups.device), valid.to(groups.device)
    weights = groups.float().gather(2, index[:, None, :].expand(-1, groups.shape[1], -1)) * valid[:, None, :]
    return index, valid, weights


def sdpa_causal(module: torch.nn.Module, kw: dict, tq: int) -> bool:
    """Whether SDPA attends causally when the model passes no mask, as transformers decides: the call's
    `is_causal`, else the layer's (default True), and only for more than one query."""
    causal = kw.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal
    return bool(causal) and tq > 1


def unmasked_visible(rows: Tensor, keys: Tensor, causal: bool) -> Tensor:
    """(..., K) which of the key positions `keys` (K,) each query position in `rows` (...) sees when the
    model passes no mask: with `causal` (`sdpa_causal`), SDPA's upper-left aligned rule (query i sees keys
    <= i); without, every key."""
    if causal:
        return keys <= rows[..., None]
    return torch.ones((), dtype=torch.bool, device=keys.device).expand(*rows.shape, len(keys))


def _mask_scores(
    mask: Tensor | None, rows: Tensor, tk: int, causal: bool, scores: Tensor
) -> tuple[Tensor, Tensor]:
    """Apply the model's attention mask to (B, h, c, Tk) scores of query `rows` (B, c).

    Returns the masked scores and which (B, 1, c, Tk) entries are visible; with no mask, SDPA's own rule
    (`unmasked_visible`).
    """
    if mask is None:
        visible = unmasked_visible(rows, torch.arange(tk, device=rows.device), causal)[:, None]
        return scores.masked_fill_(~visible, float("-inf")), visible
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise UserError(f"attention capture expects a (B, 1, Tq, Tk) mask, got shape {tuple(mask.shape)}")
    per_row = mask[:, 0].expand(rows.shape[0], -1, -1)
    picked = per_row.gather(1, rows[:, :, None].expand(-1, -1, per_row.shape[-1]))[:, None]
    if picked.dtype == torch.bool:
        return scores.masked_fill_(~picked, float("-inf")), picked
    visible = picked > torch.finfo(picked.dtype).min
    return scores.add_(picked.float()), visible


def _row_softmax(scores: Tensor, visible: Tensor) -> Tensor:
    """Softmax over keys; rows with no visible key (fully padded) become zeros instead of NaN."""
    return scores.softmax(-1).masked_fill_(~visible.any(-1, keepdim=True), 0.0)


class _LayerScores:
    """Row-chunk softmax of one layer for fixed query heads, from post-RoPE query (B, H, Tq, D) and key
    (B, H_kv, Tk, D). With every head selected, each KV head is shared by its query group without copies."""

    def __init__(
        self, module, query: Tensor, key: Tensor, mask: Tensor | None, heads: list[int] | None, kw: dict
    ):
        self.tk = key.shape[2]
        groups = module.num_key_value_groups
        if heads is None:
            self.query, self.key, self.groups = query, key.float(), groups
        else:
            self.query, self.key, self.groups = (
                query[:, heads],
                key[:, [h // groups for h in heads]].float(),
                1,
            )
        scaling = kw.get("scaling")
        self.scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
        self.softcap = kw.get("softcap")
        self.causal = sdpa_causal(module, kw, query.shape[2])
        self.mask = mask

    def probs(self, rows: Tensor) -> Tensor:
        """fp32 probabilities (B, heads, c, Tk) of the query positions `rows` (B, c)."""
        batch, heads, _, head_dim = self.query.shape
        q = self.query.gather(2, rows[:, None, :, None].expand(-1, heads, -1, head_dim)).float()
        q = q.reshape(batch, heads // self.groups, self.groups * rows.shape[1], head_dim)
        scores = (q @ self.key.transpose(-1, -2)).reshape(batch, heads, rows.shape[1], self.tk)
        scores.mul_(self.scaling)
        if self.softcap is not None:
            scores.div_(self.softcap).tanh_().mul_(self.softcap)
        scores, visible = _mask_scores(self.mask, rows, self.tk, self.causal, scores)
        return _row_softmax(scores, visible)


class _Plan:
    """A selection compiled for one forward: index tensors on the model's device, and per-layer results."""

    def __init__(self, selection: Selection, num_layers: int, num_heads: int, chunk_bytes: int, device):
        self.chunk_bytes = chunk_bytes
        self.results: dict[Any, Tensor] = {}
        self.done: set[int] = set()
        self.heads: dict[int, list[int]] | None = None
        self.keys = self.key_valid = self.row_weights = self.key_weights = None
        if isinstance(selection, HeadRows | HeadGroups):
            pairs = selection.heads
            if pairs is None:
                pairs = [(layer, head) for layer in range(num_layers) for head in range(num_heads)]
            self.heads = {}
            for layer, head in pairs:
                if not (0 <= layer < num_layers and 0 <= head < num_heads):
                    raise UserError(
                        f"head ({layer}, {head}) is outside the model's {num_layers} layers × {num_heads} query heads"
                    )
                if head not in self.heads.setdefault(layer, []):
                    self.heads[layer].append(head)
            if not self.heads:
                raise UserError(f"{type(selection).__name__} needs at least one (layer, head) pair")
            self.layers = set(self.heads)
            self.all_heads = list(range(num_heads))
            if isinstance(selection, HeadRows):
                self.rows, self.row_valid = _pad_index_sets(selection.rows, "rows")
            else:
                self.rows, self.row_valid, self.row_weights = _support(selection.row_groups, "row_groups")
                self.keys, self.key_valid, self.key_weights = _support(selection.key_groups, "key_groups")
        else:
            layers = range(num_layers) if selection.layers is None else selection.layers
            if any(not 0 <= layer < num_layers for layer in layers):
                raise UserError(f"layers {list(layers)} are outside the model's {num_layers} layers")
            self.layers = set(layers)
            if isinstance(selection, HeadMeanBlocks):
                self.rows, self.row_valid = _pad_index_sets(selection.rows, "rows")
                self.keys, self.key_valid = _pad_index_sets(selection.keys, "keys")
            else:
                self.rows, self.row_valid, self.row_weights = _support(selection.row_groups, "row_groups")
                self.keys, self.key_valid, self.key_weights = _support(selection.key_groups, "key_groups")
        if self.keys is not None and len(self.keys) != len(self.rows):
            raise UserError(
                f"the query selection covers {len(self.rows)} batch rows, the key selection {len(self.keys)}"
            )
        for name in ("rows", "row_valid", "keys", "key_valid", "row_weights", "key_weights"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))

    def capture(
        self, module: torch.nn.Module, query: Tensor, key: Tensor, mask: Tensor | None, kw: dict
    ) -> None:
        layer = module.layer_idx
        if layer not in self.layers or layer in self.done:  # `done` also skips gradient-checkpoint recomputes
            return
        batch, tq, tk = query.shape[0], query.shape[2], key.shape[2]
        if batch != len(self.rows):
            raise UserError(f"the selection covers {len(self.rows)} batch rows but the forward has {batch}")
        if int(self.rows.max()) >= tq or (self.keys is not None and int(self.keys.max()) >= tk):
            raise UserError(f"selected positions exceed the forward's {tq} query / {tk} key positions")
        if self.heads is not None and self.keys is not None:
            self._head_groups(layer, module, query, key, mask, kw)
        elif self.heads is not None:
            self._head_rows(layer, _LayerScores(module, query, key, mask, self.heads[layer], kw))
        else:
            self._head_mean(layer, _LayerScores(module, query, key, mask, None, kw))
        self.done.add(layer)

    def _row_chunks(self, scores: _LayerScores):
        """Slices of the selected rows whose (B, heads, rows, Tk) fp32 scores fit in `chunk_bytes`."""
        batch, heads = scores.query.shape[:2]
        step = max(1, self.chunk_bytes // (4 * batch * heads * scores.tk))
        return (slice(start, start + step) for start in range(0, self.rows.shape[1], step))

    def _head_rows(self, layer: int, scores: _LayerScores) -> None:
        batch, heads = scores.query.shape[:2]
        out = torch.zeros(batch, heads, self.rows.shape[1], scores.tk, device=self.rows.device)
        for part in self._row_chunks(scores):
            out[:, :, part] = scores.probs(self.rows[:, part])
        out *= self.row_valid[:, None, :, None]
        for i, head in enumerate(self.heads[layer]):
            self.results[(layer, head)] = out[:, i]

    def _head_groups(
        self, layer: int, module: torch.nn.Module, query: Tensor, key: Tensor, mask: Tensor | None, kw: dict
    ) -> None:
        """Reduce each head's probabilities to (B, G_rows, G_keys), heads split to fit one row in budget."""
        heads = self.heads[layer]
        batch, tk = query.shape[0], key.shape[2]
        per_chunk = max(1, self.chunk_bytes // (4 * batch * tk))
        row_weights, key_weights = self.row_weights[:, None], self.key_weights.transpose(1, 2)[:, None]
        for first in range(0, len(heads), per_chunk):
            chunk = heads[first : first + per_chunk]
            scores = _LayerScores(module, query, key, mask, None if chunk == self.all_heads else chunk, kw)
            out = torch.zeros(
                batch, len(chunk), row_weights.shape[2], key_weights.shape[3], device=query.device
            )
            for part in self._row_chunks(scores):
                rows = self.rows[:, part]
                probs = scores.probs(rows)  # (B, h, c, Tk)
                picked = probs.gather(
                    3, self.keys[:, None, None, :].expand(-1, len(chunk), rows.shape[1], -1)
                )
                out += (row_weights[..., part] @ picked) @ key_weights  # (B, h, G_rows, G_keys)
            for i, head in enumerate(chunk):
                self.results[(layer, head)] = out[:, i]

    def _head_mean(self, layer: int, scores: _LayerScores) -> None:
        reduce = self.row_weights is not None
        shape = (
            (self.row_weights.shape[1], self.key_weights.shape[1])
            if reduce
            else (self.rows.shape[1], self.keys.shape[1])
        )
        out = torch.zeros(len(self.rows), *shape, device=self.rows.device)
        for part in self._row_chunks(scores):
            rows = self.rows[:, part]
            mean = scores.probs(rows).mean(1)  # (B, c, Tk)
            picked = mean.gather(2, self.keys[:, None, :].expand(-1, rows.shape[1], -1))
            picked = picked * self.key_valid[:, None, :] * self.row_valid[:, part, None]
            if reduce:
                out += self.row_weights[:, :, part] @ (picked @ self.key_weights.transpose(1, 2))
            else:
                out[:, part] = picked
        self.results[layer] = out


class _CaptureFunction:
    """The function registered with `AttentionInterface`: capture if armed, then plain SDPA."""

    def __init__(self):
        self.plan: _Plan | None = None

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        if self.plan is not None:
            with torch.no_grad():
                self.plan.capture(module, query.detach(), key.detach(), attention_mask, kwargs)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


class SwitchedAttention:
    """Base of the capture context managers: registers `function` (an object with a `plan` attribute)
    under a fresh name with `AttentionInterface`, plus `sdpa_mask` with `AttentionMaskInterface` so padded
    batches still get their mask, and switches the model to it inside `with`."""

    def __init__(self, model: torch.nn.Module, function: Any):
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        self.model = model
        text = model.config.get_text_config()
        self.num_layers = text.num_hidden_layers
        self.num_heads = text.num_attention_heads
        self.name = f"attncore_capture_{next(_names)}"
        self._function = function
        self._previous: str | None = None
        AttentionInterface.register(self.name, self._function)
        AttentionMaskInterface.register(self.name, sdpa_mask)

    def __enter__(self) -> Self:
        if self._previous is not None:
            raise UserError(f"this {type(self).__name__} is already active")
        self._previous = self.model.config._attn_implementation
        self.model.set_attn_implementation(self.name)
        if self.model.config._attn_implementation != self.name:
            self.model.set_attn_implementation(self._previous)
            self._previous = None
            raise UserError(
                f"{type(self.model).__name__} does not route attention through AttentionInterface"
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._function.plan = None
        self.model.set_attn_implementation(self._previous)
        self._previous = None

    def _check_armable(self) -> None:
        """Raise unless this capture is active and still the model's attention implementation."""
        if self._previous is None:
            raise UserError(
                f"arm() needs an active capture: use `with {type(self).__name__}(model) as capture:`"
            )
        if self.model.config._attn_implementation != self.name:
            raise UserError(
                f"the model now runs {self.model.config._attn_implementation!r}, not this capture"
            )


class AttentionCapture(SwitchedAttention):
    """Context manager that runs a model through SDPA plus selective probability capture (see module doc)."""

    def __init__(self, model: torch.nn.Module, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        if chunk_bytes <= 0:
            raise UserError(f"chunk_bytes must be positive, got {chunk_bytes}")
        super().__init__(model, _CaptureFunction())
        self.chunk_bytes = chunk_bytes

    def arm(self, selection: Selection) -> None:
        """Capture `selection` during the next forward of the model (replacing any pending selection)."""
        self._check_armable()
        device = next(self.model.parameters()).device
        self._function.plan = _Plan(selection, self.num_layers, self.num_heads, self.chunk_bytes, device)

    def collect(self) -> dict[Any, Tensor]:
        """The tensors captured since `arm` (keyed by (layer, head) or by layer); disarms the capture."""
        plan = self._function.plan
        if plan is None:
            raise UserError("collect() without a pending selection: call arm() before the forward")
        self._function.plan = None
        missing = sorted(plan.layers - plan.done)
        if missing:
            raise UserError(
                f"no forward reached layers {missing} since arm(); run the model before collect()"
            )
        return plan.results

    def run(
        self,
        selection: Selection,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> dict[Any, Tensor]:
        """Arm, run one no-grad forward without cache, and collect."""
        self.arm(selection)
        try:
            with torch.no_grad():
                self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    use_cache=False,
                )
        except BaseException:
            self._function.plan = None
            raise
        return self.collect()
