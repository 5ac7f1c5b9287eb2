"""Do key-focus heads stay key-focus heads? Per-head SRA compared between two checkpoints.

The paper selects heads once on the base model and keeps them during RL because head scores correlate
across checkpoints (Pearson > 0.85). Two `find-heads` runs on the same probe set (the second with
`probe.rollouts` pointing at the first run's rollouts and the same labels) give two SRA tables; their
Pearson r over heads measures that stability.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from attncore.errors import UserError


def sra_stability(a: Tensor, b: Tensor) -> tuple[float, int]:
    """Pearson r of per-head SRA between two checkpoints, over heads defined in both; and that count."""
    if a.shape != b.shape:
        raise UserError(
            f"the SRA tables have shapes {tuple(a.shape)} and {tuple(b.shape)}: not the same model"
        )
    x, y = a.reshape(-1).double(), b.reshape(-1).double()
    keep = ~(x.isnan() | y.isnan())
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return math.nan, len(x)
    x, y = x - x.mean(), y - y.mean()
    denominator = float(x.norm() * y.norm())
    return (float((x * y).sum()) / denominator if denominator > 0 else math.nan), len(x)


def read_sra_table(run: Path) -> tuple[Tensor, dict]:
    """The per-head SRA of a find-heads output folder (its `sra.json`) and the probe it came from."""
    path = Path(run) / "sra.json"
    if not path.is_file():
        raise UserError(f"no sra.json in {run}: is it a find-heads output folder?")
    data = json.loads(path.read_text())
    sra = torch.tensor(
        [[math.nan if v is None else v for v in row] for row in data["sra"]], dtype=torch.float64
    )
    return sra, data["probe"]
