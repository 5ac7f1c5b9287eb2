"""The attention store: per-rollout AttnPO step scores and per-example MoLSAKI matrices on disk.

A store is a `ShardedTable` (atomic, checksummed, resumable shards; one manifest per data-parallel
writer). Every shard holds one batch of examples:

- AttnPO: a main table with one row per rollout (status, skip reason, |F|, |o|, steps, correctness,
  decoded response) and a `steps` part in long form, one row per (rollout, layer, head, step) with the
  step's token and character span and its score `S^{l,h}_k`.
- MoLSAKI: a main table with one row per example (canonical text, step and unit spans, alignment
  hash) and a `matrices` part, a safetensors file mapping each example id to its `(L, S, C)` stack of
  stepwise matrices `A_l`.

The manifest's `meta` names the model, the head set, the step rules, the critical-unit rules and a
hash of the inputs. Readers that pass their own rules get an error naming any difference: teacher and
student (or scorer and trainer) must cut the same text the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from attncore.config import RESOLVED_NAME
from attncore.critical import CriticalConfig, CriticalUnit
from attncore.errors import UserError
from attncore.shards import ShardedTable, diff_keys
from attncore.steps import Step, StepKind, StepSegmenterConfig
from attncore.store.config import Kind, TextFormat

STORE_NAME = "attention"
FORMAT_VERSION = 1
STEPS_PART = "steps"
MATRICES_PART = "matrices"

Status = Literal["ok", "skipped"]

ROLLOUT_SCHEMA = pa.schema(
    [
        ("rollout_id", pa.string()),
        ("problem_id", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("response_tokens", pa.int32()),
        ("answer_tokens", pa.int32()),
        ("n_steps", pa.int32()),
        ("uniform_score", pa.float64()),
        ("correct", pa.bool_()),
        ("text", pa.string()),
    ]
)
"""AttnPO, one row per rollout. `answer_tokens` is |F|, `uniform_score` is |F| / |o| with
|o| = prompt_tokens + response_tokens; `text` is the response decoded with special tokens kept, the
string that step character spans index."""

STEP_SCHEMA = pa.schema(
    [
        ("rollout_id", pa.string()),
        ("layer", pa.int16()),
        ("head", pa.int16()),
        ("step_index", pa.int32()),
        ("token_start", pa.int32()),
        ("token_end", pa.int32()),
        ("char_start", pa.int32()),
        ("char_end", pa.int32()),
        ("kind", pa.string()),
        ("trigger", pa.string()),
        ("score", pa.float32()),
    ]
)
"""AttnPO, one row per (rollout, layer, query head, step). Token spans `[start, end)` are
response-relative (add `prompt_tokens` for sequence positions)."""

_SPANS = pa.list_(pa.list_(pa.int32()))
EXAMPLE_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("text", pa.string()),
        ("rationale_start", pa.int32()),
        ("prefix_tokens", pa.int32()),
        ("text_tokens", pa.int32()),
        ("step_chars", _SPANS),
        ("step_tokens", _SPANS),
        ("unit_labels", pa.list_(pa.string())),
        ("unit_chars", pa.list_(_SPANS)),
        ("unit_tokens", _SPANS),
        ("alignment_hash", pa.string()),
    ]
)
"""MoLSAKI, one row per example. Token indices are text-relative; `prefix_tokens` special tokens
(BOS) precede the text in the forward."""


@dataclass(frozen=True)
class RolloutScores:
    """AttnPO result for one rollout: the step scores `S^{l,h}_k` of each head, `(heads, steps)`."""

    rollout_id: str
    problem_id: str
    status: Status
    reason: str | None
    prompt_tokens: int
    response_tokens: int
    answer_tokens: int
    correct: bool | None
    text: str
    steps: tuple[Step, ...] = ()
    heads: tuple[tuple[int, int], ...] = ()
    scores: Tensor | None = None

    @property
    def total_tokens(self) -> int:
        """|o|: prompt and response positions, the denominator of the uniform reference."""
        return self.prompt_tokens + self.response_tokens

    @property
    def uniform_score(self) -> float:
        """|F| / |o|, a step's score if the answer queries spread their attention evenly."""
        return self.answer_tokens / self.total_tokens if self.total_tokens else 0.0

    def mean_scores(self) -> Tensor:
        """Head-averaged step scores `S_k`, `(steps,)`."""
        if self.scores is None:
            raise UserError(f"rollout {self.rollout_id} has no scores ({self.status}: {self.reason})")
        return self.scores.mean(0)


@dataclass(frozen=True)
class ExampleMatrices:
    """MoLSAKI result for one example: the stepwise matrices `A_l[s, c]` of every layer, `(L, S, C)`."""

    example_id: str
    status: Status
    reason: str | None
    text: str
    rationale_start: int
    prefix_tokens: int
    text_tokens: int
    step_spans: tuple[tuple[int, int], ...] = ()
    step_tokens: tuple[tuple[int, int], ...] = ()
    units: tuple[CriticalUnit, ...] = ()
    unit_tokens: tuple[tuple[int, ...], ...] = ()
    alignment_hash: str | None = None
    matrices: Tensor | None = None


def segmentation_meta(rules: StepSegmenterConfig | TextFormat) -> dict[str, Any]:
    """The step rules as recorded in a store's meta: AttnPO phrase rules, or MoLSAKI sentences of the
    canonical text."""
    steps = "attnpo-phrases" if isinstance(rules, StepSegmenterConfig) else "sentences"
    return {"steps": steps, **rules.model_dump(mode="json")}


def store_meta(
    kind: Kind,
    model: dict[str, Any],
    segmentation: StepSegmenterConfig | TextFormat,
    inputs: dict[str, Any],
    *,
    heads: list[tuple[int, int]] | None = None,
    layers: int | None = None,
    critical: CriticalConfig | None = None,
) -> dict[str, Any]:
    """What identifies a store's content; a resumed extraction must match it exactly."""
    return {
        "store": STORE_NAME,
        "format": FORMAT_VERSION,
        "kind": kind,
        "model": model,
        "heads": [list(h) for h in heads] if heads is not None else None,
        "layers": layers,
        "segmentation": segmentation_meta(segmentation),
        "critical": critical.rules() if critical is not None else None,
        "inputs": inputs,
    }


def _mismatch(root: Path, what: str, recorded: Any, given: Any) -> UserError:
    diff = ", ".join(sorted(diff_keys({what: recorded}, {what: given})))
    return UserError(
        f"{root} was extracted with other {what} rules (differs in: {diff}); "
        "the reader and the store must cut steps with identical rules (teacher and student alike)"
    )


def _rollout_rows(records: list[RolloutScores]) -> tuple[pa.Table, pa.Table]:
    rows: list[dict[str, Any]] = []
    long: dict[str, list] = {name: [] for name in STEP_SCHEMA.names}
    for r in records:
        rows.append(
            {
                "rollout_id": r.rollout_id,
                "problem_id": r.problem_id,
                "status": r.status,
                "reason": r.reason,
                "prompt_tokens": r.prompt_tokens,
                "response_tokens": r.response_tokens,
                "answer_tokens": r.answer_tokens,
                "n_steps": len(r.steps) if r.scores is not None else 0,
                "uniform_score": r.uniform_score,
                "correct": r.correct,
                "text": r.text,
            }
        )
        if r.scores is None:
            continue
        for (layer, head), head_scores in zip(r.heads, r.scores.tolist(), strict=True):
            for k, (step, score) in enumerate(zip(r.steps, head_scores, strict=True)):
                row = {
                    "rollout_id": r.rollout_id,
                    "layer": layer,
                    "head": head,
                    "step_index": k,
                    "token_start": step.tokens[0],
                    "token_end": step.tokens[1],
                    "char_start": step.chars[0],
                    "char_end": step.chars[1],
                    "kind": step.kind.name.lower(),
                    "trigger": step.trigger,
                    "score": score,
                }
                for name, value in row.items():
                    long[name].append(value)
    return pa.Table.from_pylist(rows, schema=ROLLOUT_SCHEMA), pa.table(long, schema=STEP_SCHEMA)


def _example_rows(records: list[ExampleMatrices]) -> tuple[pa.Table, dict[str, Tensor]]:
    rows, tensors = [], {}
    for e in records:
        rows.append(
            {
                "example_id": e.example_id,
                "status": e.status,
                "reason": e.reason,
                "text": e.text,
                "rationale_start": e.rationale_start,
                "prefix_tokens": e.prefix_tokens,
                "text_tokens": e.text_tokens,
                "step_chars": [list(s) for s in e.step_spans],
                "step_tokens": [list(s) for s in e.step_tokens],
                "unit_labels": [u.label for u in e.units],
                "unit_chars": [[list(s) for s in u.spans] for u in e.units],
                "unit_tokens": [list(t) for t in e.unit_tokens],
                "alignment_hash": e.alignment_hash,
            }
        )
        if e.matrices is not None:
            tensors[e.example_id] = e.matrices.to(torch.float32).cpu()
    return pa.Table.from_pylist(rows, schema=EXAMPLE_SCHEMA), tensors


def rerun_command(root: str | Path) -> str:
    """The command that extracts a store's missing examples again (named in errors about bad shards)."""
    return f"attncore extract --config {Path(root) / RESOLVED_NAME}"


def _pairs(spans: list[list[int]]) -> tuple[tuple[int, int], ...]:
    return tuple((a, b) for a, b in spans)


class AttentionStore:
    """Write (`create`) or read (`open`) an attention store; see the module docstring for the layout."""

    def __init__(self, table: ShardedTable):
        self.table = table
        meta = table.meta
        if meta.get("store") != STORE_NAME:
            raise UserError(
                f"{table.root} is not an attention store (its manifest says {meta.get('store')!r})"
            )
        if meta.get("format") != FORMAT_VERSION:
            raise UserError(
                f"{table.root} has store format {meta.get('format')}, this version reads {FORMAT_VERSION}"
            )
        self._index: dict[str, tuple[dict[str, Any], dict[str, Any]]] | None = None

    @classmethod
    def create(
        cls,
        root: str | Path,
        meta: dict[str, Any],
        writer: str = "main",
        overwrite: bool = False,
        repair: bool = False,
    ) -> AttentionStore:
        """Open for writing as `writer`; an existing store must have the same `meta` (resume). With
        `repair`, shards with a bad or missing file are quarantined, for the caller to extract again."""
        return cls(
            ShardedTable(
                root, meta, writer=writer, overwrite=overwrite, repair=repair, rerun=rerun_command(root)
            )
        )

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        segmentation: StepSegmenterConfig | TextFormat | None = None,
        critical: CriticalConfig | None = None,
    ) -> AttentionStore:
        """Open for reading, checking that the store used the caller's step and critical-unit rules."""
        store = cls(ShardedTable.read_only(root, rerun=rerun_command(root)))
        meta = store.meta
        if segmentation is not None and segmentation_meta(segmentation) != meta["segmentation"]:
            raise _mismatch(store.root, "segmentation", meta["segmentation"], segmentation_meta(segmentation))
        if critical is not None:
            given = critical.rules()
            if given != meta["critical"]:
                raise _mismatch(store.root, "critical", meta["critical"], given)
        return store

    @property
    def root(self) -> Path:
        return self.table.root

    @property
    def meta(self) -> dict[str, Any]:
        return self.table.meta

    @property
    def kind(self) -> Kind:
        return self.meta["kind"]

    @property
    def heads(self) -> list[tuple[int, int]]:
        """AttnPO: the (layer, query head) pairs scored, in score-row order."""
        return [(layer, head) for layer, head in self.meta["heads"] or []]

    @property
    def _id_column(self) -> str:
        return "rollout_id" if self.kind == "attnpo" else "example_id"

    def append(self, records: list[RolloutScores] | list[ExampleMatrices]) -> None:
        """Write one shard holding `records` (one batch); nothing for an empty list."""
        if not records:
            return
        if self.kind == "attnpo":
            table, steps = _rollout_rows(records)
            self.table.append(table, parts={STEPS_PART: steps})
        else:
            table, tensors = _example_rows(records)
            self.table.append(table, parts={MATRICES_PART: tensors})
        self._index = None

    def _rows(self) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """id -> (shard entry, main-table row), over every writer's shards."""
        if self._index is None:
            self._index = {}
            for entry, table in self.table.iter_tables():
                for row in table.to_pylist():
                    self._index[row[self._id_column]] = (entry, row)
        return self._index

    def done_ids(self) -> set[str]:
        """Ids of every example already stored, scored or skipped, by any writer."""
        return set(self._rows())

    def ids(self, status: Status | None = "ok") -> list[str]:
        """Stored ids (sorted), by default only those with scores or matrices."""
        return sorted(i for i, (_, row) in self._rows().items() if status is None or row["status"] == status)

    def summary_table(self) -> pa.Table:
        """One row per stored rollout or example (all writers), sorted by id."""
        schema = ROLLOUT_SCHEMA if self.kind == "attnpo" else EXAMPLE_SCHEMA
        rows = [row for _, (_, row) in sorted(self._rows().items())]
        return pa.Table.from_pylist(rows, schema=schema)

    def step_table(self) -> pa.Table:
        """AttnPO: every step score in long form, sorted by rollout, layer, head and step."""
        self._require("attnpo")
        parts = [self.table.read_part(entry, STEPS_PART) for entry in self.table.all_shards()]
        table = pa.concat_tables(parts) if parts else STEP_SCHEMA.empty_table()
        order = [(name, "ascending") for name in ("rollout_id", "layer", "head", "step_index")]
        return table.sort_by(order)

    def _require(self, kind: Kind) -> None:
        if self.kind != kind:
            raise UserError(f"{self.root} holds {self.kind} results, not {kind}")

    def _lookup(self, item_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        found = self._rows().get(item_id)
        if found is None:
            raise UserError(f"{self.root} has no {self._id_column.removesuffix('_id')} {item_id!r}")
        return found

    def rollout(self, rollout_id: str) -> RolloutScores:
        """AttnPO: one rollout with its steps and its `(heads, steps)` scores (None when skipped)."""
        self._require("attnpo")
        entry, row = self._lookup(rollout_id)
        if row["status"] != "ok":
            return _rollout_from(row, [], self.heads)
        long = self.table.read_part(entry, STEPS_PART)
        long = long.filter(pc.equal(long.column("rollout_id"), rollout_id))
        return _rollout_from(row, long.to_pylist(), self.heads)

    def example(self, example_id: str, *, alignment_hash: str | None = None) -> ExampleMatrices:
        """MoLSAKI: one example with its `(L, S, C)` matrices (None when skipped). With
        `alignment_hash`, the caller's hash of (text, spans, rules) must equal the stored one."""
        self._require("molsaki")
        entry, row = self._lookup(example_id)
        if alignment_hash is not None and alignment_hash != row["alignment_hash"]:
            raise UserError(
                f"example {example_id!r}: the caller's text, steps or critical units differ from the "
                f"teacher's (alignment hash {alignment_hash[:12]} != {str(row['alignment_hash'])[:12]})"
            )
        tensors = self.table.read_part(entry, MATRICES_PART) if row["status"] == "ok" else {}
        return _example_from(row, tensors)

    def iter_rollouts(self, status: Status | None = "ok") -> Iterator[RolloutScores]:
        """AttnPO: stored rollouts in storage order (each shard is read once), by default scored ones."""
        self._require("attnpo")
        for entry in self.table.all_shards():
            long_rows: dict[str, list[dict[str, Any]]] = {}
            for r in self.table.read_part(entry, STEPS_PART).to_pylist():
                long_rows.setdefault(r["rollout_id"], []).append(r)
            for row in self.table.read_shard(entry).to_pylist():
                if status is None or row["status"] == status:
                    yield _rollout_from(row, long_rows.get(row["rollout_id"], []), self.heads)

    def iter_examples(self, status: Status | None = "ok") -> Iterator[ExampleMatrices]:
        """MoLSAKI: stored examples in storage order (each shard is read once), by default those with
        matrices."""
        self._require("molsaki")
        for entry in self.table.all_shards():
            tensors = self.table.read_part(entry, MATRICES_PART)
            for row in self.table.read_shard(entry).to_pylist():
                if status is None or row["status"] == status:
                    yield _example_from(row, tensors)


def _rollout_from(
    row: dict[str, Any], long_rows: list[dict[str, Any]], heads: list[tuple[int, int]]
) -> RolloutScores:
    """A rollout from its main-table row and its long-form step rows."""
    record = RolloutScores(
        row["rollout_id"],
        row["problem_id"],
        row["status"],
        row["reason"],
        row["prompt_tokens"],
        row["response_tokens"],
        row["answer_tokens"],
        row["correct"],
        row["text"],
    )
    if row["status"] != "ok":
        return record
    head_index = {head: i for i, head in enumerate(heads)}
    scores = torch.zeros(len(heads), row["n_steps"])
    steps: dict[int, Step] = {}
    for r in long_rows:
        scores[head_index[(r["layer"], r["head"])], r["step_index"]] = r["score"]
        steps[r["step_index"]] = Step(
            (r["char_start"], r["char_end"]),
            (r["token_start"], r["token_end"]),
            StepKind[r["kind"].upper()],
            r["trigger"],
        )
    ordered = tuple(steps[k] for k in range(row["n_steps"]))
    return replace(record, steps=ordered, heads=tuple(heads), scores=scores)


def _example_from(row: dict[str, Any], tensors: dict[str, Tensor]) -> ExampleMatrices:
    """An example from its main-table row and its shard's matrices."""
    units = tuple(
        CriticalUnit(label, _pairs(spans))
        for label, spans in zip(row["unit_labels"], row["unit_chars"], strict=True)
    )
    return ExampleMatrices(
        row["example_id"],
        row["status"],
        row["reason"],
        row["text"],
        row["rationale_start"],
        row["prefix_tokens"],
        row["text_tokens"],
        _pairs(row["step_chars"]),
        _pairs(row["step_tokens"]),
        units,
        tuple(tuple(t) for t in row["unit_tokens"]),
        row["alignment_hash"],
        tensors.get(row["example_id"]) if row["status"] == "ok" else None,
    )
