"""Training batches: both tasks right-padded, and the step / unit memberships and teacher targets of
the rationale task, padded to the batch's largest step and unit counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attncore.aggregate import membership
from attncore.padding import pad_batch
from cotattn.objective import has_attention_loss
from cotattn.text import IGNORE_INDEX, StudentExample, TaskSequence


@dataclass(frozen=True)
class TrainItem:
    """One example as training reads it; `teacher` is its (S, C) teacher target, or None when it has no
    attention loss (fewer than two units, or an arm without one)."""

    example: StudentExample
    teacher: Tensor | None = None


def _task_tensors(tasks: Sequence[TaskSequence], pad_id: int, name: str) -> dict[str, Tensor]:
    ids, mask, _ = pad_batch([t.ids for t in tasks], pad_id, side="right")
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row, task in enumerate(tasks):
        labels[row, : len(task.labels)] = torch.tensor(task.labels)
    return {f"{name}_ids": ids, f"{name}_mask": mask, f"{name}_labels": labels}


def collate(items: Sequence[TrainItem], pad_id: int) -> dict[str, Tensor]:
    """A batch dict (B = len(items); T_a, T_r the padded task widths; S, C the largest counts, >= 1):

    answer_ids / answer_mask / answer_labels (B, T_a), rationale_ids / rationale_mask / rationale_labels
    (B, T_r); steps (B, S, T_r) and units (B, C, T_r) 0/1 memberships in padded token coordinates;
    step_mask (B, S), unit_mask (B, C); teacher (B, S, C); eligible (B,) which rows have L_att.
    Rows without a teacher target carry zero memberships and masks.
    """
    batch = _task_tensors([i.example.answer for i in items], pad_id, "answer")
    batch |= _task_tensors([i.example.rationale for i in items], pad_id, "rationale")
    width = batch["rationale_ids"].shape[1]
    layouts = [i.example.layout if i.teacher is not None else None for i in items]
    n_steps = max([1] + [len(x.steps) for x in layouts if x is not None])
    n_units = max([1] + [len(x.units) for x in layouts if x is not None])
    steps = torch.zeros(len(items), n_steps, width)
    units = torch.zeros(len(items), n_units, width)
    teacher = torch.zeros(len(items), n_steps, n_units)
    step_mask = torch.zeros(len(items), n_steps, dtype=torch.bool)
    unit_mask = torch.zeros(len(items), n_units, dtype=torch.bool)
    for row, (item, layout) in enumerate(zip(items, layouts, strict=True)):
        if layout is None:
            continue
        s, c = len(layout.steps), len(layout.units)
        if tuple(item.teacher.shape) != (s, c):
            raise ValueError(
                f"example {item.example.id!r}: teacher target {tuple(item.teacher.shape)} for {s} steps x {c} units"
            )
        steps[row, :s] = membership([range(*span) for span in layout.steps], width, offset=layout.offset)
        units[row, :c] = membership(layout.units, width, offset=layout.offset)
        teacher[row, :s, :c] = item.teacher
        step_mask[row, :s] = True
        unit_mask[row, :c] = True
    eligible = has_attention_loss(unit_mask.sum(-1))
    return batch | {
        "steps": steps,
        "units": units,
        "step_mask": step_mask,
        "unit_mask": unit_mask,
        "teacher": teacher,
        "eligible": eligible,
    }
