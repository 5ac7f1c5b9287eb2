"""Declarative configs: strict pydantic models loaded from YAML with dotted command-line overrides.

Every config class derives from `Config`, which rejects unknown keys. A section written in a file
replaces the default section (keys it leaves out take the section class's defaults); a dotted override
changes one key of the config resolved from the defaults and the file: the sections on its path are
filled in from that config with only the keys that were set, so validators that ask which fields a
user set (`model_fields_set`) see the same answer with and without overrides. `load_config` turns
validation failures into a one-line `ConfigError` naming the field, the offending value and where it
came from (the file or the override), and `save_resolved` writes the fully resolved config beside an
output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from attncore.errors import ConfigError

RESOLVED_NAME = "config.resolved.yaml"


class Config(BaseModel):
    """Base for all configs: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


C = TypeVar("C", bound=Config)

VALUE_SHOWN_CHARS = 80


class EntryError(ValueError):
    """A validator's complaint about one entry of a mapping field: `key` names the entry, so the
    error points at `field.key` instead of the whole mapping."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _non_blank_path(value: str) -> str:
    if not value.strip():
        raise ValueError("must name a folder (an empty path would write into the current directory)")
    return value


OutputPath = Annotated[str, AfterValidator(_non_blank_path)]
"""A folder a job writes into: never empty, which would silently mean the working directory."""

MAX_THREADS = 1024
Threads = Annotated[
    int | None,
    Field(ge=1, le=MAX_THREADS, description="torch CPU threads per process (default: torch's choice)"),
]
"""A torch thread count: a huge one (threads=100000) would exhaust memory starting threads."""


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
    """Load a YAML mapping, with one-line errors for a missing, unreadable or binary file or bad YAML."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a YAML text file (invalid UTF-8 at byte {exc.start})") from None
    try:
        data = yaml.safe_load(text) or {}
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


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_SHOWN_CHARS else f"{text[: VALUE_SHOWN_CHARS - 3]}..."


def _describe(
    exc: ValidationError, data: dict[str, Any], source: str, overridden: set[str], file_valid: bool
) -> str:
    """One line per error; an error is blamed on the overrides when it is at an overridden key, or
    when the file (with the defaults) validated without them."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, EntryError):
            loc += (cause.key,)
        field = ".".join(str(p) for p in loc)
        value = _lookup(data, loc)
        at_override = bool(loc) and any(o == field or o.startswith(f"{field}.") for o in overridden)
        origin = "command-line override" if at_override or file_valid else source
        if err["type"] == "extra_forbidden":
            lines.append(f"{origin}: unknown key '{field}' (value {_shown(value)})")
        elif err["type"] == "missing":
            lines.append(f"{origin}: missing required key '{field}'")
        elif not loc:
            lines.append(f"{origin}: {err['msg']}")
        elif isinstance(value, dict | list):  # a whole section: the message says what is wrong in it
            lines.append(f"{origin}: {field}: {err['msg']}")
        else:
            lines.append(f"{origin}: {field}={_shown(value)}: {err['msg']}")
    return "; ".join(lines)


def _set_keys(value: Any) -> Any:
    """`value` as plain data holding only the keys that were set (a config's defaults stay defaults)."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, dict):
        return {key: _set_keys(item) for key, item in value.items()}
    return value


def _child(owner: Any, name: str) -> Any:
    """The value of `name` in a resolved config, section or mapping; in a config class, its default."""
    if isinstance(owner, BaseModel):
        return getattr(owner, name, None) if name in type(owner).model_fields else None
    if isinstance(owner, type) and issubclass(owner, BaseModel):
        field = owner.model_fields.get(name)
        return None if field is None else field.get_default(call_default_factory=True)
    return owner.get(name) if isinstance(owner, dict) else None


def _fill_sections(data: dict[str, Any], resolved: Any, overrides: list[str]) -> None:
    """Copy into `data` each section an override path passes through and the file left out, from the
    resolved config (a tuned default section keeps its other values), with only its set keys."""
    for item in overrides:
        path, _ = parse_override(item)
        node, owner = data, resolved
        for part in path[:-1]:
            owner = _child(owner, part)
            if not isinstance(node, dict):
                break
            if node.get(part) is None and isinstance(owner, BaseModel | dict):
                node[part] = _set_keys(owner)
            node = node.get(part)


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Build `cls` from an optional YAML file plus dotted overrides; errors name field, value and file."""
    overrides = list(overrides or [])
    data = read_yaml(Path(path)) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    overridden = {".".join(parse_override(o)[0]) for o in overrides}
    file_valid = False
    if overrides:
        # Overrides edit the resolved config, so `a.b.c=v` changes that key only: a section whose default
        # is a tuned instance keeps its other values instead of falling back to its class's defaults. A
        # file that does not validate on its own (a required key given by an override) is resolved
        # against the class's defaults.
        try:
            resolved: Any = cls.model_validate(data)
            file_valid = True
        except ValidationError:
            resolved = cls
        _fill_sections(data, resolved, overrides)
        apply_overrides(data, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, data, source, overridden, file_valid)) from None


def save_resolved(config: Config, out_dir: str | Path, name: str = RESOLVED_NAME) -> Path:
    """Write the resolved config (every default filled in) as YAML beside an output."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    tmp.replace(target)
    return target
