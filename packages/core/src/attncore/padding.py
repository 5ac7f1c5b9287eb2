"""Padded batches: token sequences of different lengths as one (B, W) tensor, and where each row's
real tokens sit in it.

Decoding and extraction pad on the left so every row ends at the last column; trainers may pad on the
right. Position ids count real tokens only, so a padded sequence sees the positions it has alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from attncore.errors import UserError


class PaddedBatch(NamedTuple):
    """`input_ids`, `attention_mask` (1 on real tokens) and `position_ids`, each (B, W) long."""

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor


def position_ids(attention_mask: Tensor) -> Tensor:
    """(B, W) positions counting real tokens only (0 on leading padding) of a left- or right-padded mask."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def pad_batch(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    side: Literal["left", "right"] = "left",
    device: torch.device | str | None = None,
) -> PaddedBatch:
    """Pad token sequences to the longest one, on the left (decoding, extraction) or on the right."""
    if not sequences:
        raise UserError("cannot pad an empty batch")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, seq in enumerate(sequences):
        start = width - len(seq) if side == "left" else 0
        ids[row, start : start + len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, start : start + len(seq)] = 1
    return PaddedBatch(ids.to(device), mask.to(device), position_ids(mask).to(device))


def real_spans(attention_mask: Tensor) -> list[tuple[int, int]]:
    """Per row, the columns `[start, end)` of its real tokens; they must be one contiguous run."""
    if attention_mask.dim() != 2:
        raise UserError(f"expected a (batch, width) attention mask, got shape {tuple(attention_mask.shape)}")
    spans = []
    for row, real in enumerate(attention_mask.ne(0).cpu()):
        columns = real.nonzero().flatten()
        if len(columns) == 0:
            raise UserError(f"row {row} of the attention mask has no real token")
        start, end = int(columns[0]), int(columns[-1]) + 1
        if len(columns) != end - start:
            raise UserError(f"row {row} of the attention mask has padding between its real tokens")
        spans.append((start, end))
    return spans
