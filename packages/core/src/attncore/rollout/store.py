"""Rollout files: Parquet shards plus a manifest (see `attncore.shards`), one row per rollout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from attncore.config import RESOLVED_NAME
from attncore.errors import UserError
from attncore.rollout.types import Rollout
from attncore.shards import ShardedTable

ROLLOUT_SCHEMA = pa.schema(
    [
        ("rollout_id", pa.string()),
        ("problem_id", pa.string()),
        ("sample_index", pa.int32()),
        ("source", pa.string()),
        ("problem", pa.string()),
        ("gold", pa.string()),
        ("prompt", pa.string()),
        ("prompt_ids", pa.list_(pa.int32())),
        ("completion_ids", pa.list_(pa.int32())),
        ("text", pa.string()),
        ("finish_reason", pa.string()),
        ("model", pa.string()),
        ("seed", pa.int64()),
        ("temperature", pa.float64()),
        ("top_p", pa.float64()),
        ("top_k", pa.int32()),
        ("max_tokens", pa.int32()),
    ]
)


def rerun_command(root: str | Path) -> str:
    """The command that regenerates a folder's missing rollouts (named in errors about bad shards)."""
    return f"attncore rollout --config {Path(root) / RESOLVED_NAME}"


def rollouts_to_table(rollouts: list[Rollout]) -> pa.Table:
    rows = [r.to_row() for r in rollouts]
    base = pa.Table.from_pylist(
        [{k: row[k] for k in ROLLOUT_SCHEMA.names} for row in rows], schema=ROLLOUT_SCHEMA
    )
    extra_names = sorted({k for row in rows for k in row} - set(ROLLOUT_SCHEMA.names))
    for name in extra_names:
        base = base.append_column(name, pa.array([row.get(name) for row in rows]))
    return base


class RolloutStore:
    """A folder of rollouts for one (model, data, prompt, sampling) configuration, resumable.

    Opening it holds the folder's writer lock; `repair` quarantines corrupt or missing shards so that
    the caller generates their rollouts again (see `attncore.shards`).
    """

    def __init__(
        self,
        root: str | Path,
        meta: dict[str, Any],
        writer: str = "main",
        overwrite: bool = False,
        repair: bool = False,
    ):
        self.table = ShardedTable(
            root, meta, writer=writer, overwrite=overwrite, repair=repair, rerun=rerun_command(root)
        )

    @classmethod
    def open_existing(cls, root: str | Path, writer: str = "main") -> RolloutStore:
        """Open a folder written earlier, taking its recorded configuration as is."""
        path = Path(root)
        manifests = sorted(path.glob("manifest-*.json")) if path.is_dir() else []
        if not manifests:
            raise UserError(f"no rollouts found in {path} (no manifest-*.json)")
        return cls(path, ShardedTable.read_only(path).meta, writer=writer)

    @property
    def root(self) -> Path:
        return self.table.root

    @property
    def meta(self) -> dict[str, Any]:
        return self.table.meta

    def done_ids(self) -> set[str]:
        """Ids of every rollout already stored (all writers)."""
        done: set[str] = set()
        for _, table in self.table.iter_tables():
            done.update(table.column("rollout_id").to_pylist())
        return done

    def append(self, rollouts: list[Rollout]) -> None:
        if rollouts:
            self.table.append(rollouts_to_table(rollouts))

    def read_table(self) -> pa.Table | None:
        return self.table.read_all()

    def read(self) -> list[Rollout]:
        table = self.read_table()
        return [] if table is None else [Rollout.from_row(row) for row in table.to_pylist()]
