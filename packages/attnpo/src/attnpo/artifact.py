"""The heads artifact: which key-focus heads to use for a model, and the evidence for them.

A YAML file that `attnpo find-heads` writes and the AttnPO trainer reads by path (`read_heads`). It names
the model and revision, the heads (0-based layer and query head) with their SRA and interval, the
ensemble's SRA, the probe-set hash, the label source's provenance and the segmenter config. Presets
(`experiments/attnpo/heads/presets/`) use the same format with `source: released` evidence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from attncore.config import Config
from attncore.errors import UserError

FORMAT = "attnpo-heads/1"


class HeadEntry(Config):
    """One key-focus head: 0-based layer and query head, with its single-head SRA when measured."""

    layer: int = Field(ge=0)
    head: int = Field(ge=0)
    sra: float | None = None
    low: float | None = None
    high: float | None = None
    sra_after: float | None = None
    sra_before: float | None = None


class HeadsArtifact(Config):
    """The file format; `evidence` holds whatever backs the choice (measurement or citation)."""

    format: str = FORMAT
    model: str
    revision: str | None = None
    heads: list[HeadEntry] = Field(min_length=1)
    ensemble: dict[str, Any] = Field(default_factory=dict)
    probe: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, Any] = Field(default_factory=dict)
    segmenter: dict[str, Any] = Field(default_factory=dict)
    evidence: dict[str, Any] = Field(default_factory=dict)


def write_artifact(artifact: HeadsArtifact, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(artifact.model_dump(mode="json"), sort_keys=False))
    tmp.replace(path)
    return path


def read_artifact(path: str | Path) -> HeadsArtifact:
    """Load and validate a heads file; one-line errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"heads file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
        artifact = HeadsArtifact.model_validate(data)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise UserError(f"{path}: {field}: {first['msg']}") from None
    if artifact.format != FORMAT:
        raise UserError(f"{path}: format {artifact.format!r} is not {FORMAT!r}")
    return artifact


def read_heads(path: str | Path) -> list[tuple[int, int]]:
    """The (layer, query head) pairs of a heads file, in the file's order."""
    return [(h.layer, h.head) for h in read_artifact(path).heads]
