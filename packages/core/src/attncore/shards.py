"""Append-only tables of Parquet shards with a manifest: atomic, resumable, checksummed.

A shard is written under a temporary name and renamed into place; only then is the manifest (also
replaced atomically) told about it. A process killed at any point therefore leaves either a shard
the manifest lists, or an orphan file that `open` removes; nothing is lost or counted twice.
Every shard's SHA-256 is kept in the manifest and checked on read, so a corrupted shard is reported
instead of being read silently. Several writers (e.g. data-parallel ranks) each keep their own
manifest (`manifest-<writer>.json`) and shard names; readers merge them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from attncore.errors import UserError

MANIFEST_PREFIX = "manifest"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace `path` with `data` as JSON; readers see the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _manifest_path(root: Path, writer: str) -> Path:
    return root / f"{MANIFEST_PREFIX}-{writer}.json"


class ShardedTable:
    """A folder of Parquet shards described by per-writer manifests sharing one `meta` record.

    `meta` identifies what the table holds (model, config, ...). Opening an existing table with a
    different `meta` is an error unless `overwrite` is set, so a resumed job cannot mix outputs of two
    configurations.
    """

    def __init__(self, root: str | Path, meta: dict[str, Any], writer: str = "main", overwrite: bool = False):
        self.root = Path(root)
        self.writer = writer
        self.meta = json.loads(json.dumps(meta, sort_keys=True, default=str))
        self.root.mkdir(parents=True, exist_ok=True)
        existing = self._load_manifests()
        if existing and overwrite:
            for path in self.root.glob("*.parquet"):
                path.unlink()
            for path in self.root.glob(f"{MANIFEST_PREFIX}-*.json"):
                path.unlink()
            existing = {}
        for writer_name, manifest in existing.items():
            if manifest["meta"] != self.meta:
                diff = sorted(_diff_keys(manifest["meta"], self.meta))
                raise UserError(
                    f"{self.root} holds output of a different configuration (differs in: {', '.join(diff)} "
                    f"[writer {writer_name}]); choose another output folder or pass --overwrite"
                )
        self._manifest = existing.get(writer, {"meta": self.meta, "shards": []})
        self._remove_orphans(existing)

    def _load_manifests(self) -> dict[str, dict[str, Any]]:
        manifests = {}
        for path in sorted(self.root.glob(f"{MANIFEST_PREFIX}-*.json")):
            try:
                manifests[path.stem[len(MANIFEST_PREFIX) + 1 :]] = json.loads(path.read_text())
            except json.JSONDecodeError:
                raise UserError(f"manifest {path} is not valid JSON; the folder is damaged") from None
        return manifests

    def _remove_orphans(self, manifests: dict[str, dict[str, Any]]) -> None:
        known = {s["file"] for m in manifests.values() for s in m["shards"]}
        for pattern in (f"shard-{self.writer}-*", f".shard-{self.writer}-*"):
            for path in self.root.glob(pattern):
                if path.name not in known:
                    path.unlink()

    @property
    def shards(self) -> list[dict[str, Any]]:
        """This writer's shard entries (file, rows, sha256, plus any caller fields)."""
        return self._manifest["shards"]

    def all_shards(self) -> list[dict[str, Any]]:
        """Shard entries of every writer, in writer then shard order."""
        manifests = self._load_manifests()
        manifests[self.writer] = self._manifest
        return [entry for name in sorted(manifests) for entry in manifests[name]["shards"]]

    def append(self, table: pa.Table, **info: Any) -> dict[str, Any]:
        """Write `table` as a new shard and record it; `info` is stored in its manifest entry."""
        index = len(self.shards)
        name = f"shard-{self.writer}-{index:05d}.parquet"
        final = self.root / name
        tmp = self.root / f".{name}.tmp-{os.getpid()}"
        pq.write_table(table, tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(final)
        entry = {"file": name, "rows": table.num_rows, "sha256": file_sha256(final), **info}
        self.shards.append(entry)
        write_json_atomic(_manifest_path(self.root, self.writer), self._manifest)
        return entry

    def replace(self, entry: dict[str, Any], table: pa.Table, **info: Any) -> dict[str, Any]:
        """Rewrite one of this writer's shards (e.g. with added columns), atomically."""
        final = self.root / entry["file"]
        tmp = self.root / f".{entry['file']}.tmp-{os.getpid()}"
        pq.write_table(table, tmp)
        tmp.replace(final)
        entry.update(rows=table.num_rows, sha256=file_sha256(final), **info)
        write_json_atomic(_manifest_path(self.root, self.writer), self._manifest)
        return entry

    def read_shard(self, entry: dict[str, Any]) -> pa.Table:
        """One shard, after checking its checksum."""
        path = self.root / entry["file"]
        if not path.is_file():
            raise UserError(f"shard {path} listed in the manifest is missing")
        if file_sha256(path) != entry["sha256"]:
            raise UserError(f"shard {path} fails its checksum (corrupt or modified); delete it and rerun")
        return pq.read_table(path)

    def iter_tables(self) -> Iterator[tuple[dict[str, Any], pa.Table]]:
        for entry in self.all_shards():
            yield entry, self.read_shard(entry)

    def read_all(self) -> pa.Table | None:
        """All shards concatenated (None when empty)."""
        tables = [table for _, table in self.iter_tables()]
        return pa.concat_tables(tables, promote_options="default") if tables else None


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in set(a) | set(b):
            out |= _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return set() if a == b else {prefix.rstrip(".") or "<root>"}
