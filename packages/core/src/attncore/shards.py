"""Append-only tables of Parquet shards with a manifest: crash-consistent, resumable, checksummed.

A folder holds, per writer `<w>` (`main`, or `rank<r>` of a data-parallel run):

- `manifest-<w>.json`: the table's `meta`, the writer's shard entries (files, rows, SHA-256 of every
  file) and `next`, the number the writer's next file gets. The manifest is the commit record: a
  shard exists when its manifest names it, and only then.
- `shard-<w>-<n>.parquet` and its parts `shard-<w>-<n>.<part>.parquet|safetensors`. `n` comes from
  `next`, which only grows, so no two files ever get one name, whatever was removed or repaired.
- `.lock-<w>`: an OS lock (`flock`) held while a process writes as `<w>`, naming the holder; the OS
  drops it when the holder dies, so a killed writer never blocks the next one.
- `quarantine/`: shards that failed their checksum or lost a file, moved aside and kept.

The write protocol. Every file is published in four steps: write `.<name>.tmp-<pid>`, fsync it,
rename it to `<name>`, fsync the folder. Then:

- create (first open of a writer): publish an empty manifest, before any shard exists;
- append: publish each part, then the main table, under the number `next`; then publish the manifest
  listing the shard, with `next` advanced;
- replace (e.g. grading adds columns): publish the new main table under the number `next` (never over
  the old file), publish the manifest pointing the entry at it, then delete the old file;
- quarantine: move a bad shard's files into `quarantine/<stamp>/`, then publish the manifest without it
  (killed in between, the entry has lost its files and the next repair drops it).

A process killed at any step therefore leaves the last committed manifest plus files it does not
list: temporary files, and shard files of a commit that did not happen or of a replaced version.
Opening the table as that writer removes exactly those, and the rerun redoes the step under the same
number, so a killed and resumed job ends with the files an uninterrupted one writes. A writer's
shard files without its manifest cannot come from a crash (the manifest comes first), so opening
refuses them rather than deleting them.

Opening as a writer also checks every file of its shards. With `repair` (the jobs that can regenerate
rows) it checks every writer's, and a bad shard is quarantined and its rows are left for the job to
write again; otherwise the error says which command does that. Every fault point of the protocol can be made to kill the process
(`ATTNCORE_CRASH_AT`, see `crash_point`), which the crash tests do at each step.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import sys
import tempfile
import time
import weakref
from collections import Counter
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
LOCK_PREFIX = ".lock-"
QUARANTINE = "quarantine"
SHARD_PATTERNS = ("shard-*", ".shard-*")
CRASH_ENV = "ATTNCORE_CRASH_AT"
FILE_STEPS = ("write", "fsync", "rename", "dirsync")
CRASH_POINTS = (
    *(f"create.manifest.{s}" for s in FILE_STEPS),
    *(f"append.{role}.{s}" for role in ("part", "shard", "manifest") for s in FILE_STEPS),
    "append.done",
    *(f"replace.{role}.{s}" for role in ("shard", "manifest") for s in FILE_STEPS),
    "replace.unlink",
    "replace.done",
    "quarantine.move",
    *(f"quarantine.manifest.{s}" for s in FILE_STEPS),
)
"""Every named step of the write protocol, in the order a job meets them (`<op>.<file>.<step>`)."""

Part = pa.Table | Mapping[str, "Tensor"]
"""A shard part: a Parquet table, or named tensors stored as safetensors."""

_crash_hits: Counter[str] = Counter()
_held_locks: dict[str, WriterLock] = {}  # realpath of a lock file -> this process's lock on it


def crash_point(name: str) -> None:
    """A step of the write protocol. `ATTNCORE_CRASH_AT=<name>:<n>` SIGKILLs the process the n-th time
    it reaches `name`, so tests can check that every step survives a kill; `<name>:<n>:SIGSTOP` sends
    that signal instead (a writer frozen mid-run)."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    _crash_hits[name] += 1
    point, hit, *sent = spec.split(":")
    if point == name and str(_crash_hits[name]) == hit:
        os.kill(os.getpid(), getattr(signal, sent[0]) if sent else signal.SIGKILL)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make the renames and removals in a folder durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(path: Path, data: bytes | pa.Buffer, step: str = "file") -> None:
    """Replace `path` with `data` so that readers, and a process killed at any point, see the old file
    or the new one, never a part; a failed write (disk full) leaves no temporary file behind. `step`
    names the crash points (`<step>.write|fsync|rename|dirsync`)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        crash_point(f"{step}.write")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            crash_point(f"{step}.fsync")
            os.fsync(fh.fileno())
        crash_point(f"{step}.rename")
        tmp.replace(path)
        crash_point(f"{step}.dirsync")
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_json_atomic(path: Path, data: Any, step: str = "json") -> None:
    """Replace `path` with `data` as JSON; readers see the old or the new file, never a mix."""
    publish(path, json.dumps(data, indent=1, sort_keys=True, default=str).encode(), step)


def _part_bytes(part: Part) -> bytes | pa.Buffer:
    if isinstance(part, pa.Table):
        sink = pa.BufferOutputStream()
        pq.write_table(part, sink)
        return sink.getvalue()
    from safetensors.torch import save

    return save({name: tensor.contiguous() for name, tensor in part.items()})


def _sha256(data: bytes | pa.Buffer) -> str:
    return hashlib.sha256(memoryview(data)).hexdigest()


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


def _own_files(writer: str) -> re.Pattern[str]:
    """Shard files of `writer` (and their temporaries), not those of a writer whose name extends it."""
    return re.compile(rf"^\.?shard-{re.escape(writer)}-(\d+)\.")


class WriterLock:
    """An exclusive OS lock on `.lock-<writer>` in a folder, shared by every table of this process that
    writes there as that writer; the file names the holder for the error another process gets."""

    def __init__(self, key: str, fd: int):
        self.key, self.fd, self.users = key, fd, 0

    @classmethod
    def acquire(cls, root: Path, writer: str) -> WriterLock:
        path = root / f"{LOCK_PREFIX}{writer}"
        key = os.path.realpath(path)
        lock = _held_locks.get(key)
        if lock is None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise UserError(f"cannot write in {root}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace").strip() or "a process starting up"
                os.close(fd)
                raise UserError(
                    f"{root} is being written by another process ({holder}); wait for it to end or "
                    "write to another folder"
                ) from None
            command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}: {command[:200]}".encode())
            lock = _held_locks[key] = cls(key, fd)
        lock.users += 1
        return lock

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and _held_locks.get(self.key) is self:
            del _held_locks[self.key]
            os.close(self.fd)  # the file stays: removing it would let two processes lock two inodes


class ShardedTable:
    """A folder of Parquet shards described by per-writer manifests sharing one `meta` record (see the
    module docstring for the files and the write protocol).

    `meta` identifies what the table holds (model, config, ...). Opening an existing table with a
    different `meta` is an error unless `overwrite` is set, so a resumed job cannot mix outputs of two
    configurations. `rerun` is the command that regenerates rows (for error messages); `repair`
    quarantines bad shards at opening instead of refusing them, for a caller that writes their rows
    again.
    """

    def __init__(
        self,
        root: str | Path,
        meta: dict[str, Any],
        writer: str = "main",
        overwrite: bool = False,
        repair: bool = False,
        rerun: str | None = None,
    ):
        self.root = Path(root)
        self.writer = writer
        self.rerun = rerun
        self.meta = json.loads(json.dumps(meta, sort_keys=True, default=str))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.root}: {exc.strerror or exc}") from None
        lock = WriterLock.acquire(self.root, writer)
        weakref.finalize(self, lock.release)
        existing = self._load_manifests()
        if overwrite:
            for pattern in (*SHARD_PATTERNS, f"{MANIFEST_PREFIX}-*.json"):
                for path in self.root.glob(pattern):
                    path.unlink()
            existing = {}
        for writer_name, manifest in existing.items():
            if diff := sorted(diff_keys(manifest["meta"], self.meta)):
                raise UserError(
                    f"{self.root} holds output of a different configuration (differs in: {', '.join(diff)} "
                    f"[writer {writer_name}]); choose another output folder or pass --overwrite"
                )
        self._manifest = existing.get(writer)
        self._remove_orphans(existing)
        if self._manifest is None:
            self._manifest = {"meta": self.meta, "shards": [], "next": 0}
            self._save("create")
        self._check(existing, repair)

    @classmethod
    def read_only(cls, root: str | Path, rerun: str | None = None) -> ShardedTable:
        """Open an existing table for reading, with the `meta` its manifests record.

        Nothing is created or deleted, so this is safe while writers are still appending; the
        manifests of all writers must agree on `meta`.
        """
        table = cls.__new__(cls)
        table.root = Path(root)
        table.writer = None
        table.rerun = rerun
        manifests = table._load_manifests() if table.root.is_dir() else {}
        if not manifests:
            raise UserError(f"{table.root} holds no table (no {MANIFEST_PREFIX}-*.json)")
        metas = {name: manifest["meta"] for name, manifest in manifests.items()}
        first_name, first = next(iter(metas.items()))
        for name, meta in metas.items():
            if diff := sorted(diff_keys(first, meta)):
                raise UserError(
                    f"{table.root}: writers {first_name} and {name} record different configurations "
                    f"(differs in: {', '.join(diff)}); the folder mixes two runs"
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
        """Delete this writer's files that no manifest lists (see the protocol); refuse when the
        writer's manifest itself is gone."""
        own = _own_files(self.writer)
        known = {name for m in manifests.values() for s in m["shards"] for name in _entry_files(s)}
        unlisted = [p for p in self.root.iterdir() if own.match(p.name) and p.name not in known]
        if self._manifest is None:
            committed = [p for p in unlisted if not p.name.startswith(".")]
            if committed:
                raise UserError(
                    f"{self.root} holds {len(committed)} shard files of writer {self.writer} but no "
                    f"{_manifest_path(self.root, self.writer).name} (was it deleted?); restore it, or "
                    "pass overwrite=true to start over without them"
                )
        manifest_tmp = f".{_manifest_path(self.root, self.writer).name}.tmp-"
        unlisted += [p for p in self.root.iterdir() if p.name.startswith(manifest_tmp)]
        for path in unlisted:
            path.unlink()

    def _save(self, op: str, writer: str | None = None, manifest: dict[str, Any] | None = None) -> None:
        """Publish this writer's manifest (or `writer`'s `manifest`); `op` names the crash points."""
        path = _manifest_path(self.root, writer or self.writer)
        write_json_atomic(path, self._manifest if manifest is None else manifest, f"{op}.manifest")

    def _fix(self) -> str:
        """What the user runs to replace a bad shard."""
        command = f"`{self.rerun}`" if self.rerun else "rerunning the job that wrote it"
        return f"{command} moves it to {self.root / QUARANTINE} and writes its rows again"

    def _problem(self, file: str, sha256: str) -> str | None:
        path = self.root / file
        if not path.is_file():
            return "is missing"
        if file_sha256(path) != sha256:
            return "fails its checksum (corrupt or modified)"
        return None

    def _check(self, manifests: dict[str, dict[str, Any]], repair: bool) -> None:
        """Check every file of this writer's shards, or with `repair` of every writer's (one process of
        a data-parallel run repairs for all, before the others open); quarantine bad ones (`repair`)
        or refuse."""
        manifests = {**manifests, self.writer: self._manifest} if repair else {self.writer: self._manifest}
        for name, manifest in sorted(manifests.items()):
            for entry in list(manifest["shards"]):
                files = [(entry["file"], entry["sha256"])]
                files += [(p["file"], p["sha256"]) for p in entry.get("parts", {}).values()]
                problems = [(f, p) for f, sha in files if (p := self._problem(f, sha)) is not None]
                if not problems:
                    continue
                file, problem = problems[0]
                if not repair:
                    raise UserError(f"shard {self.root / file} {problem}; {self._fix()}")
                self._quarantine(name, entry, f"{file} {problem}")

    def _quarantine(self, writer: str, entry: dict[str, Any], why: str) -> None:
        """Move a bad shard's files aside, then drop it from its writer's manifest (under that writer's
        lock when it is not this table's). Killed in between, the entry is left missing its files, and
        the next repair drops it."""
        lock = None if writer == self.writer else WriterLock.acquire(self.root, writer)
        try:
            manifest = self._manifest if lock is None else self._load_manifests()[writer]
            entry = next(e for e in manifest["shards"] if e["file"] == entry["file"])
            moving = [file for file in _entry_files(entry) if (self.root / file).exists()]
            where = "nothing left to move"
            if moving:
                (self.root / QUARANTINE).mkdir(exist_ok=True)
                stamp = time.strftime("%Y%m%dT%H%M%S-", time.gmtime())
                folder = Path(tempfile.mkdtemp(prefix=stamp, dir=self.root / QUARANTINE))
                share_as_umask_allows(folder)  # mkdtemp makes it 0700
                for file in moving:
                    crash_point("quarantine.move")
                    (self.root / file).replace(folder / file)
                fsync_dir(folder)
                fsync_dir(self.root)
                where = f"moved to {folder}"
            manifest["shards"].remove(entry)
            self._save("quarantine", writer, manifest)
        finally:
            if lock is not None:
                lock.release()
        print(
            f"{self.root}: shard {why}; {where}, its {entry['rows']} rows will be written again",
            file=sys.stderr,
            flush=True,
        )

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

    def _next_stem(self) -> str:
        """The name of the writer's next shard file; manifests from before `next` was kept continue
        after their highest number."""
        if "next" not in self._manifest:
            own = _own_files(self.writer)
            numbers = [int(m[1]) for e in self.shards for f in _entry_files(e) if (m := own.match(f))]
            self._manifest["next"] = max(numbers, default=-1) + 1
        return f"shard-{self.writer}-{self._manifest['next']:05d}"

    def append(self, table: pa.Table, parts: Mapping[str, Part] | None = None, **info: Any) -> dict[str, Any]:
        """Write `table` (and any named `parts`) as a new shard and record it; `info` is stored in its
        manifest entry. Part names are short words (`steps`, `matrices`)."""
        if self.writer is None:
            raise UserError(f"{self.root} was opened read-only")
        stem = self._next_stem()
        recorded = {}
        for part_name, part in (parts or {}).items():
            if not part_name.isidentifier():
                raise ValueError(f"shard part names must be identifiers, got {part_name!r}")
            suffix = "parquet" if isinstance(part, pa.Table) else "safetensors"
            path = self.root / f"{stem}.{part_name}.{suffix}"
            data = _part_bytes(part)
            publish(path, data, "append.part")
            recorded[part_name] = {"file": path.name, "sha256": _sha256(data)}
        final = self.root / f"{stem}.parquet"
        data = _part_bytes(table)
        publish(final, data, "append.shard")
        entry = {"file": final.name, "rows": table.num_rows, "sha256": _sha256(data), **info}
        if recorded:
            entry["parts"] = recorded
        self.shards.append(entry)
        self._manifest["next"] += 1
        self._save("append")
        crash_point("append.done")
        return entry

    def replace(self, entry: dict[str, Any], table: pa.Table, **info: Any) -> dict[str, Any]:
        """Rewrite one of this writer's shards (e.g. with added columns) under a new name; its parts
        stay as they are."""
        final = self.root / f"{self._next_stem()}.parquet"
        data = _part_bytes(table)
        publish(final, data, "replace.shard")
        old = self.root / entry["file"]
        entry.update(file=final.name, rows=table.num_rows, sha256=_sha256(data), **info)
        self._manifest["next"] += 1
        self._save("replace")
        crash_point("replace.unlink")
        old.unlink(missing_ok=True)
        crash_point("replace.done")
        return entry

    def _checked(self, file: str, sha256: str) -> Path:
        problem = self._problem(file, sha256)
        if problem is not None:
            raise UserError(f"shard {self.root / file} {problem}; {self._fix()}")
        return self.root / file

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


def _manifest_path(root: Path, writer: str) -> Path:
    return root / f"{MANIFEST_PREFIX}-{writer}.json"


def diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    """Dotted paths at which two nested dicts differ (`model.revision`, `segmentation.min_chars`).

    A key one side lacks counts as null there, so a config field added later with a null default
    leaves the identity of outputs written before it unchanged (they still resume)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in set(a) | set(b):
            out |= diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return set() if a == b else {prefix.rstrip(".") or "<root>"}
