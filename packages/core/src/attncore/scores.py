"""Attention reduced onto steps for any padded batch: AttnPO step scores and MoLSAKI stepwise matrices.

The library face of `attention.AttentionCapture` for trainers, the extraction job and scripts. Rows may
be padded on the left or on the right; each row's real tokens must be contiguous. Token indices of a
response (`SegmentedResponse`) are response-relative and start `prompt_lengths[b]` real tokens into row b;
those of a `TextLayout` start `offset` real tokens in.

Each reduction runs in one of two ways with the same result:

    with AttentionCapture(model) as capture:
        scores = batch_step_scores(capture, ids, mask, responses, prompt_lengths, heads)   # own forward

        pending = arm_step_scores(capture, mask, responses, prompt_lengths, heads)       # or armed inside
        loss = model(input_ids=ids, attention_mask=mask).loss                           # a forward others run
        scores = pending.collect()

The standalone forward is no-grad, without cache, with position ids that count real tokens only. An
armed forward that gives left-padded rows shifted positions (no `position_ids`) agrees up to rounding,
since rotary attention depends on relative positions only.

Memory: both reductions happen inside the capture, layer by layer (`HeadGroups`, `HeadMeanGroups`):
per layer the probabilities of as many heads and query rows as fit in the capture's `chunk_bytes`
are computed and at once reduced to (steps) or (steps, units), so only a few transient buffers of
about `chunk_bytes` exist at any time, whatever the number of heads. Head discovery (`heads=None`:
every (layer, query head), e.g. 28 × 12 on a 1.5B model) therefore takes one forward per batch, like
three key-focus heads do.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

from attncore.aggregate import membership
from attncore.attention import AttentionCapture, HeadGroups, HeadMeanGroups
from attncore.errors import UserError
from attncore.padding import position_ids, real_spans
from attncore.steps import SegmentedResponse, unscored_reason

T = TypeVar("T")
Head = tuple[int, int]


@dataclass(frozen=True)
class StepScores:
    """AttnPO step scores of one response (attnpo-spec §4): `per_head[i, k] = S^{l,h}_k` for
    `heads[i] = (l, h)`; `mean` is the head-averaged `S_k`."""

    heads: tuple[Head, ...]
    per_head: Tensor  # (heads, steps), fp32

    @property
    def mean(self) -> Tensor:
        """(steps,) `S_k = (1/N) Σ_h S^h_k`."""
        return self.per_head.mean(0)


@dataclass(frozen=True)
class TextLayout:
    """MoLSAKI steps (token ranges `[start, end)`) and critical units (token sets) of one row, counted
    from `offset` real tokens into the row (e.g. after a BOS that belongs to no step)."""

    steps: Sequence[tuple[int, int]]
    units: Sequence[Collection[int]]
    offset: int = 0


class Pending(Generic[T]):
    """A reduction armed on a capture: run the model's next forward, then `collect()` the result."""

    def __init__(self, capture: AttentionCapture, finish: Callable[[dict[Any, Tensor]], T]):
        self._capture, self._finish = capture, finish

    def collect(self) -> T:
        return self._finish(self._capture.collect())


def _stack(matrices: list[Tensor]) -> Tensor:
    """(G_b, W) matrices -> (B, max G_b, W), zero rows as padding."""
    out = torch.zeros(len(matrices), max(1, *(m.shape[0] for m in matrices)), matrices[0].shape[1])
    for b, m in enumerate(matrices):
        out[b, : m.shape[0]] = m
    return out


def _real_spans(what: str, count: int, attention_mask: Tensor) -> list[tuple[int, int]]:
    if count != attention_mask.shape[0]:
        raise UserError(f"{what}: {count} given for a batch of {attention_mask.shape[0]} rows")
    return real_spans(attention_mask)


def _check_reach(row: int, reach: int, span: tuple[int, int], what: str) -> None:
    if reach > span[1] - span[0]:
        raise UserError(f"row {row}: the {what} needs {reach} real tokens, the row has {span[1] - span[0]}")


# --- AttnPO -----------------------------------------------------------------------------------------


def _step_score_request(
    capture: AttentionCapture,
    attention_mask: Tensor,
    responses: Sequence[SegmentedResponse | None],
    prompt_lengths: Sequence[int],
    heads: Sequence[Head] | None,
) -> tuple[HeadGroups, Callable[[dict[Any, Tensor]], list[StepScores | None]]]:
    """The capture selection (answer rows F × step memberships) and the reduction of its result."""
    spans = _real_spans("responses", len(responses), attention_mask)
    if len(prompt_lengths) != len(responses):
        raise UserError(f"prompt_lengths: {len(prompt_lengths)} given for {len(responses)} responses")
    if heads is None:
        heads = [(layer, head) for layer in range(capture.num_layers) for head in range(capture.num_heads)]
    heads = [(int(layer), int(head)) for layer, head in heads]
    if len(set(heads)) != len(heads):
        raise UserError(f"heads {heads} name a (layer, head) pair twice")
    width = attention_mask.shape[1]
    scored = [r is not None and unscored_reason(r) is None for r in responses]
    answers, steps = [], []
    for b, (response, prompt, span) in enumerate(zip(responses, prompt_lengths, spans, strict=True)):
        if not scored[b]:
            answers.append(torch.zeros(1, width))
            steps.append(torch.zeros(0, width))
            continue
        _check_reach(b, prompt + response.n_tokens, span, "prompt and response")
        start = span[0] + prompt  # the response's first column
        answers.append(membership([range(*response.answer_span(start))], width))
        steps.append(membership([range(*s) for s in response.step_spans(start)], width))
    device = next(capture.model.parameters()).device
    step_members = _stack(steps).to(device)
    sizes = step_members.sum(-1).clamp_min(1)[:, None]  # (B, 1, K)

    def finish(captured: dict[Any, Tensor]) -> list[StepScores | None]:
        per_head = torch.cat([captured[head] for head in heads], 1) / sizes  # (B, heads, K)
        return [
            StepScores(tuple(heads), per_head[b, :, : len(r.steps)]) if scored[b] else None
            for b, r in enumerate(responses)
        ]

    return HeadGroups(torch.stack(answers).to(device), step_members, heads), finish


def arm_step_scores(
    capture: AttentionCapture,
    attention_mask: Tensor,
    responses: Sequence[SegmentedResponse | None],
    prompt_lengths: Sequence[int],
    heads: Sequence[Head] | None = None,
) -> Pending[list[StepScores | None]]:
    """Arm AttnPO step scores for the next forward of the padded batch `attention_mask` (B, W).

    Per row, the response's answer rows F are reduced onto its steps for every head in `heads`
    (None: every (layer, query head), layer-major, so `per_head.view(layers, heads, steps)`). A row
    whose response is None or has an `unscored_reason` comes back as None.
    """
    selection, finish = _step_score_request(capture, attention_mask, responses, prompt_lengths, heads)
    capture.arm(selection)
    return Pending(capture, finish)


def batch_step_scores(
    capture: AttentionCapture,
    input_ids: Tensor,
    attention_mask: Tensor,
    responses: Sequence[SegmentedResponse | None],
    prompt_lengths: Sequence[int],
    heads: Sequence[Head] | None = None,
) -> list[StepScores | None]:
    """AttnPO step scores of a padded batch from one no-grad forward (see `arm_step_scores`); a batch
    without a scored row runs no forward."""
    selection, finish = _step_score_request(capture, attention_mask, responses, prompt_lengths, heads)
    if not selection.row_groups.any():
        return [None] * len(responses)
    return finish(capture.run(selection, input_ids, attention_mask, position_ids(attention_mask)))


# --- MoLSAKI ----------------------------------------------------------------------------------------


def _matrix_request(
    capture: AttentionCapture,
    attention_mask: Tensor,
    layouts: Sequence[TextLayout],
    layers: Sequence[int] | None,
) -> tuple[HeadMeanGroups, Callable[[dict[Any, Tensor]], list[Tensor]]]:
    """The capture selection (step × unit memberships) and the cut of its result per row."""
    spans = _real_spans("layouts", len(layouts), attention_mask)
    width = attention_mask.shape[1]
    steps, units = [], []
    for b, (layout, span) in enumerate(zip(layouts, spans, strict=True)):
        ends = [end for _, end in layout.steps] + [max(u) + 1 for u in layout.units if u]
        _check_reach(b, layout.offset + max(ends, default=0), span, "text")
        start = span[0] + layout.offset  # the text's first column
        steps.append(membership([range(*s) for s in layout.steps], width, offset=start))
        units.append(membership(layout.units, width, offset=start))
    layers = list(range(capture.num_layers)) if layers is None else [int(layer) for layer in layers]
    device = next(capture.model.parameters()).device

    def finish(captured: dict[Any, Tensor]) -> list[Tensor]:
        stacked = torch.stack([captured[layer] for layer in layers], 1)  # (B, L, S, C)
        return [stacked[b, :, : len(x.steps), : len(x.units)] for b, x in enumerate(layouts)]

    return HeadMeanGroups(_stack(steps).to(device), _stack(units).to(device), layers), finish


def arm_stepwise_matrices(
    capture: AttentionCapture,
    attention_mask: Tensor,
    layouts: Sequence[TextLayout],
    layers: Sequence[int] | None = None,
) -> Pending[list[Tensor]]:
    """Arm MoLSAKI stepwise matrices `A_l = S · Ī_l · Cᵀ` (molsaki-spec §4) for the next forward.

    Per row, a (layers, steps, units) tensor of raw sums over the head-averaged attention, for
    `layers` in the given order (None: every layer).
    """
    selection, finish = _matrix_request(capture, attention_mask, layouts, layers)
    capture.arm(selection)
    return Pending(capture, finish)


def batch_stepwise_matrices(
    capture: AttentionCapture,
    input_ids: Tensor,
    attention_mask: Tensor,
    layouts: Sequence[TextLayout],
    layers: Sequence[int] | None = None,
) -> list[Tensor]:
    """MoLSAKI stepwise matrices of a padded batch from one no-grad forward (see `arm_stepwise_matrices`)."""
    selection, finish = _matrix_request(capture, attention_mask, layouts, layers)
    return finish(capture.run(selection, input_ids, attention_mask, position_ids(attention_mask)))
