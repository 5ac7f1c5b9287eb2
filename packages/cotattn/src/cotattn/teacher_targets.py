"""`cotattn teacher-targets`: the teacher's per-layer stepwise matrices, and G, p^t, A^t per example.

Two resumable stages in `out`:
- `attention/`: attncore's attention store of the teacher's `(L, S, C)` matrices, written by
  `attncore.store.extract.run_extraction` (batched no-grad forwards; steps and units from the same
  `prepare_text` the student uses);
- `targets/`: a sharded table (checksummed) with, per example, G and p^t = softmax(G / τ1) as lists and
  the mixed target `A^t` (S, C) as a tensor part. Its meta holds the rules hash, τ1 and the teacher
  store's identity, so a target is never read against other rules or another teacher.

Examples with fewer than two critical units (or no step) are stored as skipped: they get no
attention loss.

`teacher_summary.json` and `teacher_layer_weights.png` give the mean p^t and G per layer (the paper's Fig. 4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from torch import Tensor
from tqdm.auto import tqdm

from attncore.config import RESOLVED_NAME, save_resolved
from attncore.errors import UserError
from attncore.shards import ShardedTable
from attncore.store.config import ExtractConfig
from attncore.store.extract import run_extraction
from attncore.store.store import AttentionStore, ExampleMatrices
from cotattn.attention_loss import row_entropy
from cotattn.config import TeacherTargetsConfig
from cotattn.objective import MIN_UNITS
from cotattn.teacher_mix import teacher_target
from cotattn.text import rules_hash

ATTENTION_DIR = "attention"
TARGETS_DIR = "targets"
TARGETS_PART = "targets"
SUMMARY_NAME = "teacher_summary.json"
PLOT_NAME = "teacher_layer_weights.png"
TARGETS_FORMAT = 1
SHARD_EXAMPLES = 256

TARGET_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("alignment_hash", pa.string()),
        ("n_steps", pa.int32()),
        ("n_units", pa.int32()),
        ("column_difference", pa.list_(pa.float64())),
        ("layer_weights", pa.list_(pa.float64())),
    ]
)


def _targets_meta(cfg: TeacherTargetsConfig, attention: AttentionStore) -> dict[str, Any]:
    return {
        "kind": "molsaki-teacher-targets",
        "format": TARGETS_FORMAT,
        "rules_hash": rules_hash(cfg.task_format, cfg.critical),
        "tau1": cfg.tau1,
        "teacher": attention.meta["model"],
        "layers": attention.meta["layers"],
        "inputs": attention.meta["inputs"],
    }


def _target_row(example: ExampleMatrices, tau1: float) -> tuple[dict[str, Any], Tensor | None]:
    row = {
        "example_id": example.example_id,
        "status": example.status,
        "reason": example.reason,
        "alignment_hash": example.alignment_hash,
        "n_steps": len(example.step_spans),
        "n_units": len(example.units),
        "column_difference": None,
        "layer_weights": None,
    }
    if example.status != "ok":
        return row, None
    if len(example.units) < MIN_UNITS:
        return {**row, "status": "skipped", "reason": "fewer_than_2_units"}, None
    target = teacher_target(example.matrices.double(), tau1)
    row["column_difference"] = target.column_difference.tolist()
    row["layer_weights"] = target.layer_weights.tolist()
    return row, target.target.float()


@dataclass(frozen=True)
class TeacherSummary:
    """Counts, the teacher layer weights p^t and G averaged over examples (the paper's Fig. 4), and the
    targets' mean relative row entropy (`cotattn.attention_loss.row_entropy`; near 1, rows close to
    uniform, bounds how far L_att can pull the student: molsaki-spec pitfall 3)."""

    examples: int
    with_target: int
    skipped: dict[str, int]
    mean_layer_weights: list[float]
    mean_column_difference: list[float]
    mean_target_row_entropy: float | None


def rerun_command(out: str | Path) -> str:
    """The command that computes a folder's missing targets again (named in errors about bad shards)."""
    return f"cotattn teacher-targets --config {Path(out) / RESOLVED_NAME}"


def _row_entropy(target: Tensor) -> Tensor:
    """`row_entropy` of one unpadded (S, C) target; shape (1,)."""
    steps, units = target.shape
    every_step, every_unit = torch.ones(1, steps, dtype=torch.bool), torch.ones(1, units, dtype=torch.bool)
    return row_entropy(target[None], every_step, every_unit)


def summarise_targets(root: str | Path) -> TeacherSummary:
    """Summary of a targets table (all shards checksum-verified)."""
    sharded = ShardedTable.read_only(root, rerun=rerun_command(Path(root).parent))
    table = sharded.read_all()
    rows = [] if table is None else table.to_pylist()
    kept = [r for r in rows if r["status"] == "ok"]
    skipped: dict[str, int] = {}
    for r in rows:
        if r["status"] != "ok":
            skipped[r["reason"]] = skipped.get(r["reason"], 0) + 1
    weights = torch.tensor([r["layer_weights"] for r in kept], dtype=torch.float64)
    g = torch.tensor([r["column_difference"] for r in kept], dtype=torch.float64)
    entropies = [
        _row_entropy(target)
        for entry, _ in sharded.iter_tables()
        for target in sharded.read_part(entry, TARGETS_PART).values()
    ]
    return TeacherSummary(
        len(rows),
        len(kept),
        skipped,
        weights.mean(0).tolist() if kept else [],
        g.mean(0).tolist() if kept else [],
        torch.cat(entropies).mean().item() if entropies else None,
    )


def run_teacher_targets(cfg: TeacherTargetsConfig, progress: bool = True) -> TeacherSummary:
    """Extract the teacher's matrices (resuming), then compute and store the targets (resuming)."""
    out = Path(cfg.out)
    save_resolved(cfg, out)
    extract = ExtractConfig(
        kind="molsaki",
        model=cfg.teacher,
        input=cfg.input,
        text_format=cfg.task_format.text,
        critical=cfg.critical,
        batch_size=cfg.batch_size,
        max_batch_tokens=cfg.max_batch_tokens,
        capture_mb=cfg.capture_mb,
        out=str(out / ATTENTION_DIR),
        overwrite=cfg.overwrite,
        threads=cfg.threads,
    )
    run_extraction(extract, progress=progress)
    attention = AttentionStore.open(
        out / ATTENTION_DIR, segmentation=cfg.task_format.text, critical=cfg.critical
    )
    table = ShardedTable(
        out / TARGETS_DIR,
        _targets_meta(cfg, attention),
        overwrite=cfg.overwrite,
        repair=True,  # a bad shard is quarantined and its targets computed again below
        rerun=rerun_command(out),
    )
    done = {r["example_id"] for _, t in table.iter_tables() for r in t.select(["example_id"]).to_pylist()}
    todo = [i for i in attention.ids(status=None) if i not in done]
    bar = tqdm(total=len(todo), desc="teacher targets", unit="ex", disable=not progress)
    rows: list[dict[str, Any]] = []
    tensors: dict[str, Tensor] = {}

    def flush() -> None:
        if rows:
            table.append(
                pa.Table.from_pylist(rows, schema=TARGET_SCHEMA), parts={TARGETS_PART: dict(tensors)}
            )
            bar.update(len(rows))
            rows.clear()
            tensors.clear()

    wanted = set(todo)
    for example in attention.iter_examples(status=None):
        if example.example_id not in wanted:
            continue
        row, target = _target_row(example, cfg.tau1)
        rows.append(row)
        if target is not None:
            tensors[example.example_id] = target
        if len(rows) >= SHARD_EXAMPLES:
            flush()
    flush()
    bar.close()
    summary = summarise_targets(out / TARGETS_DIR)
    (out / SUMMARY_NAME).write_text(json.dumps(summary.__dict__, indent=1))
    plot_layer_weights(summary, out / PLOT_NAME)
    return summary


def plot_layer_weights(summary: TeacherSummary, path: Path) -> Path | None:
    """Mean p^t and mean G per teacher layer (the paper's Fig. 4); nothing without a target."""
    if not summary.with_target:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    layers = range(len(summary.mean_layer_weights))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    top.bar(layers, summary.mean_layer_weights)
    top.set_ylabel("mean p^t")
    top.set_title(f"teacher layer weights over {summary.with_target} examples")
    bottom.bar(layers, summary.mean_column_difference, color="tab:orange")
    bottom.set_ylabel("mean G")
    bottom.set_xlabel("teacher layer (0-based)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class TeacherExample:
    """What training reads for one example: the mixed target A^t (S, C), p^t (L,), and, when asked
    for, the teacher's per-layer matrices (L, S, C) for the single-layer ablation."""

    target: Tensor
    layer_weights: Tensor
    matrices: Tensor | None


class TeacherTargets:
    """Read-only view of a `teacher-targets` output; every shard is checksum-verified when read."""

    def __init__(self, root: str | Path, expected_rules_hash: str):
        root = Path(root)
        self.table = ShardedTable.read_only(root / TARGETS_DIR, rerun=rerun_command(root))
        recorded = self.table.meta.get("rules_hash")
        if recorded != expected_rules_hash:
            raise UserError(
                f"{root}: the teacher targets were cut with other step / critical-unit / task rules "
                f"(rules hash {str(recorded)[:12]} != {expected_rules_hash[:12]}); teacher and student "
                "must use identical rules"
            )
        self.attention = AttentionStore.open(root / ATTENTION_DIR)
        self.layers: int = self.table.meta["layers"]
        self._rows: dict[str, dict[str, Any]] = {}
        self._targets: dict[str, Tensor] = {}
        for entry, t in self.table.iter_tables():
            self._rows.update((row["example_id"], row) for row in t.to_pylist())
            self._targets.update(self.table.read_part(entry, TARGETS_PART))

    def ids(self) -> list[str]:
        """Ids with a target, sorted."""
        return sorted(i for i, row in self._rows.items() if row["status"] == "ok")

    def get(self, example_id: str, alignment_hash: str, *, layers: bool = False) -> TeacherExample | None:
        """The example's teacher side, or None when it has no target; the caller's alignment hash
        (text, steps, units, rules) must equal the teacher's. `layers` also reads the per-layer
        matrices (the single-layer ablation needs them)."""
        row = self._rows.get(example_id)
        if row is None or row["status"] != "ok":
            return None
        if row["alignment_hash"] != alignment_hash:
            raise UserError(
                f"example {example_id!r}: the student's text, steps or critical units differ from the "
                f"teacher's (alignment hash {alignment_hash[:12]} != {row['alignment_hash'][:12]})"
            )
        matrices = None
        if layers:
            matrices = self.attention.example(example_id, alignment_hash=alignment_hash).matrices
        return TeacherExample(self._targets[example_id], torch.tensor(row["layer_weights"]), matrices)
