"""Where caches and reference data live, overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from attncore.errors import UserError

CACHE_ENV = "ATTNCORE_CACHE_DIR"
DATA_ENV = "ATTNCORE_DATA_DIR"

# packages/core/src/attncore/paths.py -> the workspace root is four levels up.
_REPO_ROOT = Path(__file__).resolve().parents[4]


def cache_dir() -> Path:
    """Cache for dequantized models and built checkpoints (`$ATTNCORE_CACHE_DIR` or the platform cache)."""
    root = os.environ.get(CACHE_ENV)
    path = Path(root).expanduser() if root else Path(platformdirs.user_cache_dir("attncore"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, or a place this user cannot create folders in
        raise UserError(f"cache folder {path} cannot be created ({exc.strerror}); set ${CACHE_ENV}") from None
    return path


def built_model_dir(name: str) -> Path:
    """Where a model that attncore builds or converts (testbed checkpoints, dequantized GGUF files) lives
    in the cache; `attncore.models.load_model(name)` loads a complete one by that name."""
    return cache_dir() / "models" / name


def umask() -> int:
    """The process's file-creation mask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_as_umask_allows(path: Path) -> None:
    """Give a file or folder the permissions a plain `open`/`mkdir` would have (0666 / 0777 less the
    umask): temporary-file helpers create 0600 files and 0700 folders, which other users cannot read."""
    base = 0o777 if path.is_dir() else 0o666
    path.chmod(base & ~umask())


def data_dir(explicit: str | Path | None = None) -> Path | None:
    """The reference-data folder: the explicit argument, `$ATTNCORE_DATA_DIR`, or `../shared/data`
    beside the working directory or the repository. None when no candidate exists."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    for base in (Path.cwd(), _REPO_ROOT):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None
