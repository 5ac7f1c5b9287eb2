"""Grade a rollout folder in place: each shard gains correctness and token-count columns.

Shards are rewritten one at a time (atomically, see `attncore.shards`) and their manifest entry
records the grading mode, so an interrupted grading run resumes with the shards not yet graded.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from attncore.config import Config
from attncore.grading import Grader, GradingMode
from attncore.rollout.store import RolloutStore
from tqdm.auto import tqdm

GRADE_COLUMNS = ("correct", "pred", "grade_reason", "grade_mode", "n_completion_tokens")


class GradingConfig(Config):
    """How rollouts are graded; `auto` picks `gsm8k` for the plain template and `math` otherwise."""

    mode: Literal["auto", "math", "attnpo", "gsm8k"] = "auto"
    workers: int = 2
    timeout_s: float = 5.0


def resolve_grading_mode(mode: str, template: str) -> GradingMode:
    if mode == "auto":
        return GradingMode.GSM8K if template == "plain" else GradingMode.MATH
    return GradingMode(mode)


def with_grades(table: pa.Table, grader: Grader, mode: GradingMode) -> pa.Table:
    """`table` plus the grade columns (replacing any from an earlier grading)."""
    results = grader.grade(table.column("text").to_pylist(), table.column("gold").to_pylist(), mode)
    keep = [name for name in table.column_names if name not in GRADE_COLUMNS]
    out = table.select(keep)
    lengths = pc.list_value_length(table.column("completion_ids")).cast(pa.int32())
    columns = {
        "correct": pa.array([r.correct for r in results], pa.bool_()),
        "pred": pa.array([r.pred for r in results], pa.string()),
        "grade_reason": pa.array([str(r.reason) for r in results], pa.string()),
        "grade_mode": pa.array([str(mode)] * len(results), pa.string()),
        "n_completion_tokens": lengths,
    }
    for name, column in columns.items():
        out = out.append_column(name, column)
    return out


def grade_store(store: RolloutStore, cfg: GradingConfig, template: str, progress: bool = True) -> int:
    """Grade every shard of `store` not yet graded in this mode; returns the number of rows graded."""
    mode = resolve_grading_mode(cfg.mode, template)
    pending = [entry for entry in store.table.shards if entry.get("graded") != str(mode)]
    if not pending:
        return 0
    graded = 0
    with Grader(mode, workers=cfg.workers, timeout_s=cfg.timeout_s) as grader:
        for entry in tqdm(pending, desc="grading", unit="shard", disable=not progress):
            table = with_grades(store.table.read_shard(entry), grader, mode)
            store.table.replace(entry, table, graded=str(mode))
            graded += table.num_rows
    return graded
