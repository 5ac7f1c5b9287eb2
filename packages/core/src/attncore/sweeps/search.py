"""How the parameters of the next trial are chosen: grid and random as wandb defines them, bayes by Optuna.

Grid enumerates every combination (int_uniform as min..max, q_uniform as min, min+q, ... below max, as
wandb's grid does), the first parameter varying slowest. Random draws each parameter from its
distribution, trial i from its own seeded generator, so a sweep rerun from scratch draws the same
trials. Bayes asks an Optuna TPE study kept in SQLite beside the sweep, so its history survives a kill;
wandb's own bayes search (a Gaussian process on the server) proposes different points, the search space
is the same.
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

from attncore.errors import ConfigError
from attncore.sweeps.spec import Parameter, SweepSpec

# Kinds Optuna can search without a prior it does not have (normal, beta: unbounded or shaped priors).
BAYES_KINDS = {
    "constant",
    "categorical",
    "categorical_w_probabilities",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
}
OPTUNA_DB = "optuna.db"


def _number(value: float, q: float | int | None = None) -> int | float:
    # wandb returns integers for an integer q, floats otherwise
    if q is None:
        return float(value)
    stepped = round(value / q) * q
    return int(stepped) if isinstance(q, int) else float(stepped)


def grid_values(param: Parameter) -> list[Any]:
    """The values a grid takes for one discrete parameter."""
    kind = param.distribution
    if kind == "constant":
        return [param.value]
    if kind == "categorical":
        return list(param.values or [])
    lo, hi = param.min, param.max
    assert lo is not None and hi is not None
    if kind == "int_uniform":
        return list(range(int(lo), int(hi) + 1))
    q = param.q_step
    count = max(1, math.ceil((hi - lo) / q - 1e-9))
    whole = all(isinstance(v, int) for v in (lo, hi, param.q))  # q defaults to 1.0, as in wandb
    return [lo + i * q if whole else float(lo + i * q) for i in range(count)]


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of the parameters' grid values, in file order."""
    names = list(spec.parameters)
    axes = [grid_values(spec.parameters[name]) for name in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]


def draw(param: Parameter, rng: random.Random) -> Any:
    """One random value of a parameter, with wandb's meaning of each distribution."""
    kind = param.distribution
    lo, hi = param.min, param.max
    mu = 0.0 if param.mu is None else param.mu
    sigma = 1.0 if param.sigma is None else param.sigma
    a = 1.0 if param.a is None else param.a
    b = 1.0 if param.b is None else param.b
    if kind == "constant":
        return param.value
    if kind == "categorical":
        return rng.choice(param.values or [])
    if kind == "categorical_w_probabilities":
        return rng.choices(param.values or [], weights=param.probabilities)[0]
    if kind == "int_uniform":
        return rng.randint(int(lo), int(hi))  # type: ignore[arg-type]
    quantized = kind.startswith("q_")
    base = kind[2:] if quantized else kind
    if base == "uniform":
        x = rng.uniform(lo, hi)  # type: ignore[arg-type]
    elif base == "log_uniform":
        x = math.exp(rng.uniform(lo, hi))  # type: ignore[arg-type]
    elif base == "log_uniform_values":
        x = math.exp(rng.uniform(math.log(lo), math.log(hi)))  # type: ignore[arg-type]
    elif base == "inv_log_uniform":
        x = math.exp(-rng.uniform(lo, hi))  # type: ignore[arg-type]
    elif base == "inv_log_uniform_values":
        x = math.exp(-rng.uniform(-math.log(hi), -math.log(lo)))  # type: ignore[arg-type]
    elif base == "normal":
        x = rng.gauss(mu, sigma)
    elif base == "log_normal":
        x = math.exp(rng.gauss(mu, sigma))
    else:  # beta
        x = rng.betavariate(a, b) if a > 0 and b > 0 else float(rng.random() < b / (a + b))
    return _number(x, param.q if param.q is not None else 1.0) if quantized else x


def random_point(spec: SweepSpec, index: int, seed: int) -> dict[str, Any]:
    """Trial `index` of a random sweep; the same seed and index always give the same point."""
    rng = random.Random(f"{seed}:{index}")
    return {name: draw(param, rng) for name, param in spec.parameters.items()}


def check_bayes_parameters(spec: SweepSpec, where: str) -> None:
    for name, param in spec.parameters.items():
        if param.distribution not in BAYES_KINDS:
            raise ConfigError(
                f"{where}: parameters.{name}: attncore sweep's bayes search takes "
                f"{', '.join(sorted(BAYES_KINDS))}, not {param.distribution}"
            )
        for value in param.values or []:
            if value is not None and not isinstance(value, bool | int | float | str):
                raise ConfigError(
                    f"{where}: parameters.{name}: bayes search needs plain values, not {value!r}"
                )


def _optuna_distribution(param: Parameter) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind, lo, hi = param.distribution, param.min, param.max
    if kind in ("categorical", "categorical_w_probabilities"):
        return CategoricalDistribution(param.values or [])
    if kind == "int_uniform":
        return IntDistribution(int(lo), int(hi))  # type: ignore[arg-type]
    if kind == "uniform":
        return FloatDistribution(lo, hi)  # type: ignore[arg-type]
    if kind == "q_uniform":
        values = grid_values(param)
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(param.q_step))
        return FloatDistribution(values[0], values[-1], step=param.q_step)
    if kind == "log_uniform":
        return FloatDistribution(math.exp(lo), math.exp(hi), log=True)  # type: ignore[arg-type]
    return FloatDistribution(lo, hi, log=True)  # type: ignore[arg-type]  # log_uniform_values


class BayesSearch:
    """An Optuna TPE study in `<sweep folder>/optuna.db`; each trial is asked, run, then told its metric."""

    def __init__(self, spec: SweepSpec, folder: Path, study_name: str, seed: int):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        assert spec.metric is not None
        self.constants = {n: p.value for n, p in spec.parameters.items() if p.distribution == "constant"}
        self.distributions = {
            n: _optuna_distribution(p) for n, p in spec.parameters.items() if p.distribution != "constant"
        }
        self.study = optuna.create_study(
            study_name=study_name,
            storage=f"sqlite:///{(folder / OPTUNA_DB).resolve()}",
            direction=spec.metric.goal,
            sampler=optuna.samplers.TPESampler(seed=seed),
            load_if_exists=True,
        )

    def reconcile(self, finished: dict[int, float | None], pending: set[int]) -> None:
        """Bring the study in line with the sweep's records after a kill: tell finished trials their
        metric, keep pending ones open (they rerun), fail those never recorded (asked, never run)."""
        from optuna.trial import TrialState

        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in finished:
                self.tell(trial.number, finished[trial.number])
            elif trial.number not in pending:
                self.study.tell(trial.number, state=TrialState.FAIL)

    def ask(self) -> tuple[int, dict[str, Any]]:
        trial = self.study.ask(self.distributions)
        return trial.number, {**self.constants, **trial.params}

    def tell(self, number: int, value: float | None) -> None:
        """Report a trial's metric (None: it failed); a trial the study has already closed is left as it is."""
        from optuna.trial import TrialState

        if self.study.get_trials(deepcopy=False)[number].state != TrialState.RUNNING:
            return
        if value is None or not math.isfinite(value):
            self.study.tell(number, state=TrialState.FAIL)
        else:
            self.study.tell(number, value)
