"""Declarative configs: strict pydantic models loaded from YAML with dotted command-line overrides.

Every config class derives from `Config`, which rejects unknown keys. A section written in a file
replaces the default section (keys it leaves out take the section class's defaults); a dotted override
changes one key of the config resolved from the defaults and the file. `load_config` turns validation
failures into a one-line `ConfigError` naming the field, the offending value and where it came from
(the file or the override), and `save_resolved` writes the fully resolved config beside an output.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from attncore.errors import ConfigError

RESOLVED_NAME = "config.resolved.yaml"


class Config(BaseModel):
    """Base for all configs: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


C = TypeVar("C", bound=Config)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], parsed value); the value is read as YAML (numbers, lists, null)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return [part for part in key.strip().split(".")], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted override inside a nested dict (creating intermediate dicts)."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: Path) -> dict[str, Any]:
    """Load a YAML mapping, with one-line errors for a missing file or bad YAML."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _describe(exc: ValidationError, data: dict[str, Any], source: str, overridden: set[str]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "<root>"
        value = _lookup(data, loc)
        origin = "command-line override" if field in overridden else source
        if err["type"] == "extra_forbidden":
            lines.append(f"{origin}: unknown key '{field}' (value {value!r})")
        elif err["type"] == "missing":
            lines.append(f"{origin}: missing required key '{field}'")
        else:
            lines.append(f"{origin}: {field}={value!r}: {err['msg']}")
    return "; ".join(lines)


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Build `cls` from an optional YAML file plus dotted overrides; errors name field, value and file."""
    overrides = list(overrides or [])
    data = read_yaml(Path(path)) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    overridden = {".".join(parse_override(o)[0]) for o in overrides}
    if overrides:
        # Overrides edit the resolved config, so `a.b.c=v` changes that key only: a section whose default
        # is a tuned instance keeps its other values instead of falling back to its class's defaults. A
        # file that does not validate on its own (a required key given by an override) is edited as read.
        with contextlib.suppress(ValidationError):
            data = cls.model_validate(data).model_dump()
        apply_overrides(data, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, data, source, overridden)) from None


def save_resolved(config: Config, out_dir: str | Path, name: str = RESOLVED_NAME) -> Path:
    """Write the resolved config (every default filled in) as YAML beside an output."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    tmp.replace(target)
    return target
