"""Shard parts (Parquet tables and safetensors tensors beside a shard's main table) and read-only opening."""

from __future__ import annotations

import json
import os
import resource
import signal
import time

import pyarrow as pa
import pytest
import torch

from attncore.errors import UserError
from attncore.shards import ShardedTable, WriterLock


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
        ".lock-rank1",
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


def test_a_config_field_added_with_a_null_default_keeps_old_outputs_resumable(tmp_path):
    first = ShardedTable(tmp_path, {"model": {"name": "m"}})
    first.append(rows("a"))
    del first
    later = ShardedTable(tmp_path, {"model": {"name": "m", "keep_layers": None}})
    assert ids_of(later) == [["a"]], "the folder resumes under the wider config"
    later.append(rows("b"))
    del later
    with pytest.raises(UserError, match=r"differs in: model\.keep_layers"):
        ShardedTable(tmp_path, {"model": {"name": "m", "keep_layers": [0, 1]}})


def test_overwrite_removes_parts_too(tmp_path):
    ShardedTable(tmp_path, {"k": 1}).append(rows("a"), parts={"m": {"t": torch.ones(1)}})
    (tmp_path / "notes.parquet").write_bytes(b"a user's file")
    fresh = ShardedTable(tmp_path, {"k": 2}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock-main", "manifest-main.json", "notes.parquet"]
    assert fresh.shards == [] and fresh.meta == {"k": 2}


def ids_of(table: ShardedTable) -> list[list[str]]:
    return [t.column("id").to_pylist() for _, t in table.iter_tables()]


def test_shard_names_never_collide_after_a_hand_edited_manifest(tmp_path):
    table = ShardedTable(tmp_path, {"k": 1})
    for name in "abcd":
        table.append(rows(name))
    manifest = tmp_path / "manifest-main.json"
    edited = json.loads(manifest.read_text())
    gone = edited["shards"].pop(1)  # the repair by hand: file and entry removed
    (tmp_path / gone["file"]).unlink()
    manifest.write_text(json.dumps(edited))

    reopened = ShardedTable(tmp_path, {"k": 1})
    entry = reopened.append(rows("b"))
    assert entry["file"] == "shard-main-00004.parquet", "a new number, not the count of shards"
    assert ids_of(ShardedTable.read_only(tmp_path)) == [["a"], ["c"], ["d"], ["b"]]


def test_a_deleted_manifest_is_refused_not_taken_for_an_empty_table(tmp_path):
    table = ShardedTable(tmp_path, {"k": 1})
    assert json.loads((tmp_path / "manifest-main.json").read_text())["shards"] == [], (
        "the manifest exists before any shard"
    )
    table.append(rows("a"))
    table.append(rows("b"), parts={"steps": rows("s")})
    del table
    (tmp_path / "manifest-main.json").unlink()
    files = sorted(p.name for p in tmp_path.glob("shard-*"))
    with pytest.raises(
        UserError,
        match=r"holds 3 shard files of writer main but no manifest-main\.json \(was it deleted\?\); "
        r"restore it, or pass overwrite=true",
    ):
        ShardedTable(tmp_path, {"k": 1})
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == files, "nothing deleted"
    assert ShardedTable(tmp_path, {"k": 1}, overwrite=True).shards == []
    assert not list(tmp_path.glob("shard-*"))


def flip_last_byte(path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    return path.read_bytes()


def test_bad_shards_name_the_repair_and_repair_quarantines_exactly_them(tmp_path, capsys):
    table = ShardedTable(tmp_path, {"k": 1}, rerun="attncore job --config c.yaml")
    for name in "abcd":
        table.append(rows(name), parts={"steps": rows(f"{name}-step")})
    del table
    flipped = flip_last_byte(tmp_path / "shard-main-00001.steps.parquet")
    (tmp_path / "shard-main-00002.parquet").unlink()

    with pytest.raises(
        UserError,
        match=rf"^shard {tmp_path}/shard-main-00001\.steps\.parquet fails its checksum \(corrupt or "
        rf"modified\); `attncore job --config c\.yaml` moves it to {tmp_path}/quarantine and writes its "
        r"rows again$",
    ):
        ShardedTable(tmp_path, {"k": 1}, rerun="attncore job --config c.yaml")
    with pytest.raises(UserError, match=r"shard-main-00002\.parquet is missing; `attncore job"):
        ShardedTable.read_only(tmp_path, rerun="attncore job --config c.yaml").read_all()

    repaired = ShardedTable(tmp_path, {"k": 1}, repair=True)
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 2 and "shard-main-00001.steps.parquet fails its checksum" in notes[0]
    assert (
        "shard-main-00002.parquet is missing" in notes[1] and "its 1 rows will be written again" in notes[1]
    )
    assert ids_of(repaired) == [["a"], ["d"]], "the good shards stay"
    kept = {p.name: p.read_bytes() for p in (tmp_path / "quarantine").rglob("*") if p.is_file()}
    assert sorted(kept) == [
        "shard-main-00001.parquet",
        "shard-main-00001.steps.parquet",
        "shard-main-00002.steps.parquet",
    ]
    assert kept["shard-main-00001.steps.parquet"] == flipped, "the bad file is kept as it was"
    assert repaired.append(rows("b"))["file"] == "shard-main-00004.parquet"
    assert ShardedTable(tmp_path, {"k": 1}).shards == repaired.shards, "a repaired table opens clean"


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    """Disk full, simulated with a file size limit (Python ignores SIGXFSZ, so writes fail with EFBIG)."""
    table = ShardedTable(tmp_path, {"k": 1})
    table.append(rows("a"))
    big = pa.table({"id": [f"{i:08d}" * 64 for i in range(2000)]})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
    try:
        with pytest.raises(UserError, match=r"^cannot write .*shard-main-00001\.parquet: File too large$"):
            table.append(big)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock-main",
        "manifest-main.json",
        "shard-main-00000.parquet",
    ]
    table.append(rows("b"))
    assert ids_of(ShardedTable.read_only(tmp_path)) == [["a"], ["b"]]


def test_one_writer_per_folder_and_a_killed_writer_leaves_no_lock(tmp_path):
    ShardedTable(tmp_path, {"k": 1}).append(rows("a"))
    pid = hold_in_child(tmp_path, "main")
    try:
        with pytest.raises(
            UserError, match=rf"^{tmp_path} is being written by another process \(pid {pid}: "
        ):
            ShardedTable(tmp_path, {"k": 1})
        assert ShardedTable(tmp_path, {"k": 1}, writer="rank1").shards == [], "other writers are free"
    finally:
        kill(pid)
    taken = ShardedTable(tmp_path, {"k": 1})
    assert ShardedTable(tmp_path, {"k": 1}).shards == taken.shards, "one process may open a folder twice"
    assert (tmp_path / ".lock-main").read_text().startswith(f"pid {os.getpid()}: ")


def hold_in_child(root, writer: str) -> int:
    """A child process that holds the writer lock of `root` for `writer` until killed."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            WriterLock.acquire(root, writer)
            os.write(ready_w, b"x")
            time.sleep(600)
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x", "the child holds the lock"
    return pid


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_repair_takes_in_the_shards_of_a_writer_no_process_runs(tmp_path, capsys):
    """A store of two ranks resumed by one process: rank0 quarantines rank1's bad shard under rank1's
    lock, and refuses while a live rank1 holds it."""
    rank1 = ShardedTable(tmp_path, {"k": 1}, writer="rank1")
    for name in "ab":
        rank1.append(rows(name))
    del rank1
    flip_last_byte(tmp_path / "shard-rank1-00000.parquet")
    plain = ShardedTable(tmp_path, {"k": 1}, writer="rank0")  # checks its own shards only
    with pytest.raises(UserError, match=r"^shard .*shard-rank1-00000\.parquet fails its checksum"):
        plain.read_all()

    pid = hold_in_child(tmp_path, "rank1")
    try:
        with pytest.raises(UserError, match=rf"is being written by another process \(pid {pid}: "):
            ShardedTable(tmp_path, {"k": 1}, writer="rank0", repair=True)
    finally:
        kill(pid)
    assert list(tmp_path.glob("quarantine/*/*")) == []

    ShardedTable(tmp_path, {"k": 1}, writer="rank0", repair=True)
    assert "shard-rank1-00000.parquet fails its checksum" in capsys.readouterr().err
    assert ids_of(ShardedTable.read_only(tmp_path)) == [["b"]]
    assert [p.name for p in tmp_path.glob("quarantine/*/*")] == ["shard-rank1-00000.parquet"]
