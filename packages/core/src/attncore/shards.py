"""Append-only tables of Parquet shards with a manifest: atomic, resumable, checksummed.

A shard is written under a temporary name and renamed into place; only then is the manifest (also
replaced atomically) told about it. A process killed at any point therefore leaves either a shard
the manifest lists, or an orphan file that `open` removes; nothing is lost or counted twice.
Every shard's SHA-256 is kept in the manifest and checked on read, so a corrupted shard is reported
instead of being read silently. Several writers (e.g. data-parallel ranks) each keep their own
manifest (`manifest-<writer>.json`) and shard names; readers merge them.

A shard may carry named parts beside its main table: further Parquet tables or safetensors files of
tensors (`shard-<writer>-<n>.<part>.parquet|safetensors`). All files of a shard are in place before the
manifest names them, so the shard appears whole or not at all; each part has its own checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from attncore.errors import UserError
from attncore.paths import share_as_umask_allows

if TYPE_CHECKING:
    from torch import Tensor

MANIFEST_PREFIX = "manifest"
SHARD_PATTERNS = ("shard-*", ".shard-*")

Part = pa.Table | Mapping[str, "Tensor"]
"""A shard part: a Parquet table, or named tensors stored as safetensors."""


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


def _write_part(path: Path, part: Part) -> None:
    """Write a part under a temporary name, flush it to disk, then rename it to `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if isinstance(part, pa.Table):
        pq.write_table(part, tmp)
    else:
        from safetensors.torch import save_file

        save_file({name: tensor.contiguous() for name, tensor in part.items()}, str(tmp))
        share_as_umask_allows(tmp)  # safetensors creates its files 0600
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def _checked_manifest(path: Path) -> dict[str, Any]:
    """A manifest as read from disk, refused with one line when it is not the shape writers leave."""
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"manifest {path} is not valid JSON; the folder is damaged") from None
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    well_formed = (
        isinstance(manifest, dict)
        and isinstance(manifest.get("meta"), dict)
        and isinstance(shards, list)
        and all(isinstance(s, dict) and isinstance(s.get("file"), str) and "sha256" in s for s in shards)
    )
    if not well_formed:
        raise UserError(f"manifest {path} lacks its meta or shard list; the folder is damaged")
    return manifest


def _entry_files(entry: dict[str, Any]) -> list[str]:
    return [entry["file"], *(part["file"] for part in entry.get("parts", {}).values())]


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
            for pattern in (*SHARD_PATTERNS, f"{MANIFEST_PREFIX}-*.json"):
                for path in self.root.glob(pattern):
                    path.unlink()
            existing = {}
        for writer_name, manifest in existing.items():
            if manifest["meta"] != self.meta:
                diff = sorted(diff_keys(manifest["meta"], self.meta))
                raise UserError(
                    f"{self.root} holds output of a different configuration (differs in: {', '.join(diff)} "
                    f"[writer {writer_name}]); choose another output folder or pass --overwrite"
                )
        self._manifest = existing.get(writer, {"meta": self.meta, "shards": []})
        self._remove_orphans(existing)

    @classmethod
    def read_only(cls, root: str | Path) -> ShardedTable:
        """Open an existing table for reading, with the `meta` its manifests record.

        Nothing is created or deleted, so this is safe while writers are still appending; the
        manifests of all writers must agree on `meta`.
        """
        table = cls.__new__(cls)
        table.root = Path(root)
        table.writer = None
        manifests = table._load_manifests() if table.root.is_dir() else {}
        if not manifests:
            raise UserError(f"{table.root} holds no table (no {MANIFEST_PREFIX}-*.json)")
        metas = {name: manifest["meta"] for name, manifest in manifests.items()}
        first_name, first = next(iter(metas.items()))
        for name, meta in metas.items():
            if meta != first:
                diff = ", ".join(sorted(diff_keys(first, meta)))
                raise UserError(
                    f"{table.root}: writers {first_name} and {name} record different configurations "
                    f"(differs in: {diff}); the folder mixes two runs"
                )
        table.meta = first
        table._manifest = {"meta": first, "shards": []}
        return table

    def _load_manifests(self) -> dict[str, dict[str, Any]]:
        return {
            path.stem[len(MANIFEST_PREFIX) + 1 :]: _checked_manifest(path)
            for path in sorted(self.root.glob(f"{MANIFEST_PREFIX}-*.json"))
        }

    def _remove_orphans(self, manifests: dict[str, dict[str, Any]]) -> None:
        known = {name for m in manifests.values() for s in m["shards"] for name in _entry_files(s)}
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
        if self.writer is not None:
            manifests[self.writer] = self._manifest
        return [entry for name in sorted(manifests) for entry in manifests[name]["shards"]]

    def append(self, table: pa.Table, parts: Mapping[str, Part] | None = None, **info: Any) -> dict[str, Any]:
        """Write `table` (and any named `parts`) as a new shard and record it; `info` is stored in its
        manifest entry. Part names are short words (`steps`, `matrices`)."""
        if self.writer is None:
            raise UserError(f"{self.root} was opened read-only")
        stem = f"shard-{self.writer}-{len(self.shards):05d}"
        recorded = {}
        for part_name, part in (parts or {}).items():
            if not part_name.isidentifier():
                raise ValueError(f"shard part names must be identifiers, got {part_name!r}")
            suffix = "parquet" if isinstance(part, pa.Table) else "safetensors"
            path = self.root / f"{stem}.{part_name}.{suffix}"
            _write_part(path, part)
            recorded[part_name] = {"file": path.name, "sha256": file_sha256(path)}
        final = self.root / f"{stem}.parquet"
        _write_part(final, table)
        entry = {"file": final.name, "rows": table.num_rows, "sha256": file_sha256(final), **info}
        if recorded:
            entry["parts"] = recorded
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

    def _checked(self, file: str, sha256: str) -> Path:
        path = self.root / file
        if not path.is_file():
            raise UserError(f"shard {path} listed in the manifest is missing")
        if file_sha256(path) != sha256:
            raise UserError(f"shard {path} fails its checksum (corrupt or modified); delete it and rerun")
        return path

    def read_shard(self, entry: dict[str, Any]) -> pa.Table:
        """One shard's main table, after checking its checksum and that its text is valid UTF-8."""
        path = self._checked(entry["file"], entry["sha256"])
        table = pq.read_table(path)
        try:
            table.validate(full=True)
        except pa.ArrowInvalid as exc:
            raise UserError(f"shard {path} holds invalid data ({exc}); the folder is damaged") from None
        return table

    def read_part(self, entry: dict[str, Any], name: str) -> Part:
        """One named part of a shard (a table, or a dict of tensors), after checking its checksum."""
        part = entry.get("parts", {}).get(name)
        if part is None:
            raise KeyError(f"shard {entry['file']} has no part {name!r}")
        path = self._checked(part["file"], part["sha256"])
        if path.suffix == ".parquet":
            return pq.read_table(path)
        from safetensors.torch import load_file

        return load_file(str(path))

    def iter_tables(self) -> Iterator[tuple[dict[str, Any], pa.Table]]:
        for entry in self.all_shards():
            yield entry, self.read_shard(entry)

    def read_all(self) -> pa.Table | None:
        """All shards concatenated (None when empty)."""
        tables = [table for _, table in self.iter_tables()]
        return pa.concat_tables(tables, promote_options="default") if tables else None


def diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    """Dotted paths at which two nested dicts differ (`model.revision`, `segmentation.min_chars`)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in set(a) | set(b):
            out |= diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return set() if a == b else {prefix.rstrip(".") or "<root>"}
