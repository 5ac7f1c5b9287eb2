"""A sweep file in wandb's own sweep format, validated as strictly as wandb's schema, and stricter.

The same YAML goes to `wandb sweep FILE` (a wandb server runs the search, `wandb agent` the trials) and to
`attncore sweep FILE` (the search and the trials run here). The model mirrors the JSON schema wandb's
sweep controller validates against (package `sweeps`, `config/schema.json`): the same top-level keys,
parameter kinds with the keys each allows, metric goals, hyperband early termination. It also refuses
what that schema lets through but no search can use: `min > max`, probabilities that do not sum to 1,
a macro the agent does not know (the agent silently drops it).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from attncore.config import Config, load_config
from attncore.errors import ConfigError

# Parameter kinds: distribution -> (required keys, optional keys), as in wandb's schema.
_BOUNDS = ({"min", "max"}, set())
_Q_BOUNDS = ({"min", "max"}, {"q"})
DISTRIBUTIONS: dict[str, tuple[set[str], set[str]]] = {
    "constant": ({"value"}, set()),
    "categorical": ({"values"}, set()),
    "categorical_w_probabilities": ({"values", "probabilities"}, set()),
    "int_uniform": _BOUNDS,
    "uniform": _BOUNDS,
    "q_uniform": _Q_BOUNDS,
    "log_uniform": _BOUNDS,
    "log_uniform_values": _BOUNDS,
    "q_log_uniform": _Q_BOUNDS,
    "q_log_uniform_values": _Q_BOUNDS,
    "inv_log_uniform": _BOUNDS,
    "inv_log_uniform_values": _BOUNDS,
    "normal": (set(), {"mu", "sigma"}),
    "q_normal": (set(), {"mu", "sigma", "q"}),
    "log_normal": (set(), {"mu", "sigma"}),
    "q_log_normal": (set(), {"mu", "sigma", "q"}),
    "beta": (set(), {"a", "b"}),
    "q_beta": (set(), {"a", "b", "q"}),
}
# `*_values` bounds are the values themselves, so they must be positive; the legacy kinds take exponents.
_POSITIVE_BOUNDS = {"log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"}

NUMERIC_KEYS = {"min", "max", "q", "mu", "sigma", "a", "b"}

# Whole-item macros of a sweep command, as `wandb agent` expands them; `${envvar:NAME}` works inside items.
MACROS = {
    "env",
    "interpreter",
    "program",
    "args",
    "args_no_hyphens",
    "args_no_equals",
    "args_no_boolean_flags",
    "args_json",
    "args_json_file",
    "args_append_hydra",
    "args_override_hydra",
}
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
MACRO = re.compile(r"^\$\{(\w+)\}$")
PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class Parameter(Config):
    """One swept parameter: a constant, a list of values, or a distribution with its keys.

    Without `distribution` the kind follows from the keys, as in wandb: `value` -> constant, `values` ->
    categorical (with `probabilities`: weighted), integer `min`/`max` -> int_uniform, else uniform.
    """

    distribution: str
    value: Any = None
    values: list[Any] | None = None
    probabilities: list[float] | None = None
    min: int | float | None = None
    max: int | float | None = None
    q: int | float | None = None
    mu: float | None = None
    sigma: float | None = None
    a: float | None = None
    b: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _kind(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("a parameter is a mapping (value, values, or a distribution with its keys)")
        if "parameters" in data:
            raise ValueError("nested parameters are not supported; name the key with dots (a.b.c)")
        keys = set(data) - {"distribution"}
        kind = data.get("distribution") or _infer_kind(data, keys)
        if kind not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {kind!r} (one of {', '.join(DISTRIBUTIONS)})")
        required, optional = DISTRIBUTIONS[kind]
        if missing := required - keys:
            raise ValueError(f"{kind} needs {', '.join(sorted(missing))}")
        if extra := keys - required - optional:
            raise ValueError(f"{kind} takes no {', '.join(sorted(extra))}")
        for key in NUMERIC_KEYS & keys:
            if isinstance(data[key], bool) or not isinstance(data[key], int | float):
                hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(data[key], str) else ""
                raise ValueError(f"{key}={data[key]!r} is not a number{hint}")
        if kind == "int_uniform" and not all(type(data[k]) is int for k in ("min", "max")):
            raise ValueError("int_uniform needs integer min and max")
        return {**data, "distribution": kind}

    @model_validator(mode="after")
    def _ranges(self) -> Parameter:
        kind = self.distribution
        if self.values is not None and not self.values:
            raise ValueError("values is empty")
        if self.probabilities is not None:
            if len(self.probabilities) != len(self.values or []):
                raise ValueError("probabilities and values differ in length")
            if any(p < 0 for p in self.probabilities) or not math.isclose(sum(self.probabilities), 1.0):
                raise ValueError("probabilities must be non-negative and sum to 1")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if kind in _POSITIVE_BOUNDS and self.min is not None and self.min <= 0:
            raise ValueError(f"{kind} needs min > 0")
        for key in ("q", "a", "b", "sigma"):
            value = getattr(self, key)
            if value is not None and (value <= 0 if key == "q" else value < 0):
                raise ValueError(f"{key}={value} must be {'positive' if key == 'q' else 'non-negative'}")
        return self

    @property
    def q_step(self) -> float:
        return 1.0 if self.q is None else self.q

    def is_discrete(self) -> bool:
        """Whether a grid can enumerate it (wandb's grid takes these four kinds)."""
        return self.distribution in ("constant", "categorical", "int_uniform", "q_uniform")


def _infer_kind(data: dict[str, Any], keys: set[str]) -> str:
    if "value" in keys:
        return "constant"
    if "values" in keys:
        return "categorical_w_probabilities" if "probabilities" in keys else "categorical"
    if {"min", "max"} <= keys and "q" not in keys:
        return "int_uniform" if all(type(data[k]) is int for k in ("min", "max")) else "uniform"
    raise ValueError("give value, values, or a distribution")


class Metric(Config):
    """The summary key a trial is judged by; `target` ends the sweep once a trial reaches it."""

    name: str
    goal: Literal["minimize", "maximize"] = "minimize"
    target: float | None = None
    impute: Literal["latest", "best", "worst"] = "worst"
    impute_while_running: Literal["latest", "best", "worst", "false"] = "false"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.goal == "maximize" else a < b

    def reached(self, value: float) -> bool:
        return self.target is not None and (value == self.target or self.better(value, self.target))


class Hyperband(Config):
    """wandb's early termination: stop trials whose logged metric trails at hyperband brackets."""

    type: Literal["hyperband"]
    min_iter: int | None = Field(None, ge=1)
    max_iter: int | None = None
    s: float | None = None
    eta: float = Field(3.0, gt=1)
    strict: bool = True

    @model_validator(mode="after")
    def _brackets(self) -> Hyperband:
        if self.min_iter is None and (self.max_iter is None or self.s is None):
            raise ValueError("hyperband needs min_iter, or max_iter and s")
        return self


class Controller(Config):
    type: Literal["local", "cloud"] = "cloud"


class SweepSpec(Config):
    """A whole sweep file; every key wandb's schema defines is accepted, nothing else."""

    method: Literal["grid", "random", "bayes", "custom"]
    parameters: dict[str, Parameter] = Field(min_length=1)
    metric: Metric | None = None
    program: str | None = None
    command: list[str | int | float] | None = None
    early_terminate: Hyperband | None = None
    name: str | None = None
    description: str | None = None
    project: str | None = None
    entity: str | None = None
    run_cap: int | None = Field(None, gt=0)
    controller: Controller | None = None
    apiVersion: str | None = None  # wandb's key
    kind: Literal["sweep"] | None = None
    job: str | None = None
    image_uri: str | None = None
    metrics: list[Metric] | None = Field(None, min_length=2)
    scheduler: dict[str, Any] | None = None

    @field_validator("parameters")
    @classmethod
    def _names(cls, parameters: dict[str, Parameter]) -> dict[str, Parameter]:
        for name in parameters:
            if not PARAMETER_NAME.match(name):
                raise ValueError(f"parameter name {name!r} must match {PARAMETER_NAME.pattern}")
        return parameters

    @field_validator("command")
    @classmethod
    def _macros(cls, command: list[str | int | float] | None) -> list[str | int | float] | None:
        for item in command or []:
            match = MACRO.match(str(item))
            if match and match.group(1) not in MACROS:
                known = ", ".join("${" + m + "}" for m in sorted(MACROS))
                raise ValueError(f"unknown macro {item} (one of {known})")
        return command

    @model_validator(mode="after")
    def _coherent(self) -> SweepSpec:
        if self.metric is not None and self.metrics is not None:
            raise ValueError("give metric or metrics, not both")
        if self.method == "grid" and (bad := [n for n, p in self.parameters.items() if not p.is_discrete()]):
            raise ValueError(
                f"grid search takes value, values, int_uniform or q_uniform parameters, not {', '.join(bad)}"
            )
        if self.method == "bayes" and self.metric is None:
            raise ValueError("bayes search needs a metric")
        uses_program = any(str(item) == "${program}" for item in self.command or DEFAULT_COMMAND)
        if uses_program and not self.program:
            raise ValueError("the command runs ${program} but no program is given")
        return self

    def command_items(self) -> list[str]:
        return [str(item) for item in self.command or DEFAULT_COMMAND]


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; a mistake is a one-line `ConfigError` naming the key and the file."""
    return load_config(SweepSpec, path)


def check_runnable_here(spec: SweepSpec, path: str | Path) -> None:
    """Refuse, in one line, what is valid for wandb but that `attncore sweep` cannot run itself."""
    where = str(path)
    if spec.method == "custom" or spec.scheduler is not None or spec.metrics is not None:
        raise ConfigError(f"{where}: custom schedulers and multi-metric sweeps run on a wandb server only")
    if spec.job is not None or spec.image_uri is not None:
        raise ConfigError(f"{where}: launch sweeps (job, image_uri) run on a wandb server only")
    if spec.metric is None:
        raise ConfigError(f"{where}: attncore sweep needs a metric (the summary key each trial is judged by)")
    if spec.method == "bayes":
        from attncore.sweeps.search import check_bayes_parameters

        check_bayes_parameters(spec, where)
