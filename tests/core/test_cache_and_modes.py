"""Model caches are keyed by content, and written files and folders are as readable as the umask says."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from attncore.models import atomic_build, gguf_cache_key
from attncore.shards import ShardedTable


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_safetensors_parts_and_built_models_follow_the_umask(tmp_path, umask_027):
    """safetensors writes 0600 and mkdtemp makes 0700: both are widened to what the umask allows."""
    table = ShardedTable(tmp_path / "store", {"kind": "test"})
    entry = table.append(pa.table({"x": [1]}), parts={"matrices": {"m": torch.ones(2, 2)}})
    assert mode(tmp_path / "store" / entry["parts"]["matrices"]["file"]) == 0o640
    assert mode(tmp_path / "store" / entry["file"]) == 0o640
    built = atomic_build(tmp_path / "cache" / "model", lambda tmp: (tmp / "w.bin").write_bytes(b"w"))
    assert mode(built) == 0o750 and mode(built / "w.bin") == 0o640


def test_gguf_cache_key_is_the_content_not_the_path(tmp_path):
    """Every clone or venv holding the same GGUF shares one dequantized folder; other bytes get another."""
    first = tmp_path / "a" / "model.gguf"
    first.parent.mkdir()
    first.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    copy = tmp_path / "b" / "model.gguf"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    os.utime(copy, ns=(1, 1))
    assert gguf_cache_key(first) == gguf_cache_key(copy)
    copy.write_bytes(first.read_bytes()[:-1] + b"\x00")
    assert gguf_cache_key(first) != gguf_cache_key(copy)
    assert gguf_cache_key(first).startswith("model-")
