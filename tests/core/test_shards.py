"""Shard parts (Parquet tables and safetensors tensors beside a shard's main table) and read-only opening."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch

from attncore.errors import UserError
from attncore.shards import ShardedTable


def rows(*ids: str) -> pa.Table:
    return pa.table({"id": list(ids)})


def test_parts_are_written_with_the_shard_and_read_back_checked(tmp_path):
    table = ShardedTable(tmp_path, {"k": 1}, writer="rank0")
    tensors = {"a/0#1": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(2, 0)}
    entry = table.append(rows("a", "b"), parts={"matrices": tensors, "steps": pa.table({"x": [1, 2, 3]})})
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == [
        "shard-rank0-00000.matrices.safetensors",
        "shard-rank0-00000.parquet",
        "shard-rank0-00000.steps.parquet",
    ]
    reader = ShardedTable.read_only(tmp_path)
    [stored] = reader.all_shards()
    assert stored == entry and set(stored["parts"]) == {"matrices", "steps"}
    got = reader.read_part(stored, "matrices")
    assert torch.equal(got["a/0#1"], tensors["a/0#1"]) and got["b"].shape == (2, 0)
    assert reader.read_part(stored, "steps").column("x").to_pylist() == [1, 2, 3]
    with pytest.raises(KeyError, match="no part 'other'"):
        reader.read_part(stored, "other")

    part = tmp_path / "shard-rank0-00000.matrices.safetensors"
    part.write_bytes(part.read_bytes()[:-4] + b"\xff\xff\xff\xff")
    with pytest.raises(UserError, match=r"matrices\.safetensors fails its checksum"):
        reader.read_part(stored, "matrices")
    assert reader.read_shard(stored).column("id").to_pylist() == ["a", "b"], "other files stay readable"


def test_a_shard_killed_before_its_manifest_entry_leaves_only_orphans(tmp_path):
    table = ShardedTable(tmp_path, {"k": 1}, writer="rank1")
    table.append(rows("a"), parts={"steps": rows("s")})
    for name in ("shard-rank1-00001.steps.parquet", ".shard-rank1-00001.parquet.tmp-7"):
        (tmp_path / name).write_bytes(b"written before the kill")
    other_writer = tmp_path / ".shard-rank0-00000.parquet.tmp-8"  # another rank, still writing
    other_writer.write_bytes(b"in progress")

    reader = ShardedTable.read_only(tmp_path)
    assert (tmp_path / "shard-rank1-00001.steps.parquet").exists(), "a reader deletes nothing"
    assert [e["file"] for e in reader.all_shards()] == ["shard-rank1-00000.parquet"]

    reopened = ShardedTable(tmp_path, {"k": 1}, writer="rank1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".shard-rank0-00000.parquet.tmp-8",
        "manifest-rank1.json",
        "shard-rank1-00000.parquet",
        "shard-rank1-00000.steps.parquet",
    ]
    reopened.append(rows("b"), parts={"steps": rows("t")})
    assert [t.column("id").to_pylist() for _, t in reopened.iter_tables()] == [["a"], ["b"]]


def test_read_only_needs_a_table_and_agreeing_writers(tmp_path):
    with pytest.raises(UserError, match="holds no table"):
        ShardedTable.read_only(tmp_path / "absent")
    ShardedTable(tmp_path, {"model": {"name": "m", "revision": "a"}}, writer="rank0").append(rows("x"))
    with pytest.raises(UserError, match="opened read-only"):
        ShardedTable.read_only(tmp_path).append(rows("y"))
    other = json.loads((tmp_path / "manifest-rank0.json").read_text())
    other["meta"]["model"]["revision"] = "b"
    (tmp_path / "manifest-rank1.json").write_text(json.dumps(other))
    with pytest.raises(
        UserError,
        match=r"writers rank0 and rank1 record different configurations \(differs in: model\.revision\)",
    ):
        ShardedTable.read_only(tmp_path)


def test_overwrite_removes_parts_too(tmp_path):
    ShardedTable(tmp_path, {"k": 1}).append(rows("a"), parts={"m": {"t": torch.ones(1)}})
    (tmp_path / "notes.parquet").write_bytes(b"a user's file")
    ShardedTable(tmp_path, {"k": 2}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.parquet"]
