"""Sweep files: wandb's format validated strictly, the shipped files accepted by their jobs' configs,
grid / random draws with wandb's meaning, and trial command lines expanded as the wandb agent does."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest
import yaml

from attncore.config import load_config
from attncore.errors import ConfigError
from attncore.sweeps.search import draw, grid_points, grid_values, random_point
from attncore.sweeps.spec import Parameter, SweepSpec, check_runnable_here, load_sweep
from attncore.sweeps.trial import argument_forms, trial_command

REPO = Path(__file__).resolve().parents[3]

BASE = {
    "program": "train.py",
    "method": "random",
    "metric": {"name": "score", "goal": "maximize"},
    "parameters": {"lr": {"min": 0.0, "max": 1.0}},
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def with_changes(**changes) -> dict:
    return {**BASE, **changes}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (with_changes(methd="grid"), "unknown key 'methd'"),
        ({k: v for k, v in BASE.items() if k != "method"}, "missing required key 'method'"),
        (with_changes(method="hyperopt"), "method='hyperopt'"),
        (with_changes(parameters={}), "parameters"),
        (
            with_changes(parameters={"lr": {"distribution": "gamma", "min": 0, "max": 1}}),
            "unknown distribution",
        ),
        (with_changes(parameters={"lr": {"distribution": "uniform", "min": 0.1}}), "uniform needs max"),
        (with_changes(parameters={"lr": {"values": [1], "min": 0}}), "categorical takes no min"),
        (
            with_changes(parameters={"n": {"distribution": "int_uniform", "min": 1, "max": 4.5}}),
            "integer min",
        ),
        (with_changes(parameters={"lr": {"min": 0.5, "max": 0.1}}), "min 0.5 is above max 0.1"),
        (
            with_changes(parameters={"lr": {"distribution": "log_uniform_values", "min": 0.0, "max": 1.0}}),
            "needs min > 0",
        ),
        (with_changes(parameters={"lr": {"min": "1e-4", "max": 1.0}}), "write 1.0e-4"),
        (with_changes(parameters={"o": {"values": ["a", "b"], "probabilities": [0.5, 0.6]}}), "sum to 1"),
        (with_changes(parameters={"o": {"values": []}}), "values is empty"),
        (with_changes(parameters={"2lr": {"value": 1}}), "parameter name '2lr'"),
        (with_changes(parameters={"opt": {"parameters": {"lr": {"value": 1}}}}), "nested parameters"),
        (with_changes(command=["${env}", "${args_no_hyphen}"]), "unknown macro ${args_no_hyphen}"),
        (with_changes(method="grid"), "grid search takes value, values, int_uniform or q_uniform"),
        (with_changes(method="bayes", metric=None), "bayes search needs a metric"),
        ({k: v for k, v in BASE.items() if k != "program"}, "no program is given"),
        (with_changes(metric={"name": "score", "goal": "up"}), "metric.goal='up'"),
        (with_changes(early_terminate={"type": "hyperband", "eta": 3}), "min_iter, or max_iter and s"),
        (with_changes(run_cap=0), "run_cap=0"),
    ],
)
def test_bad_sweep_file_is_one_line_naming_key_and_file(tmp_path, data, fragment):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    message = str(err.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_wandb_forms_are_accepted(tmp_path):
    """Keys wandb's schema allows: kinds inferred from their keys, early termination, controller, run_cap."""
    spec = load_sweep(
        write(
            tmp_path,
            with_changes(
                parameters={
                    "const": {"value": None},
                    "opt": {"values": ["adam", "sgd"]},
                    "w": {"values": [1, 2], "probabilities": [0.25, 0.75]},
                    "layers": {"min": 1, "max": 4},
                    "lr": {"min": 0.0, "max": 1.0},
                    "decay": {"distribution": "q_log_uniform_values", "min": 1.0e-3, "max": 1.0, "q": 1.0e-3},
                    "noise": {"distribution": "normal"},
                    "frac": {"distribution": "beta", "a": 2, "b": 5},
                },
                early_terminate={"type": "hyperband", "min_iter": 3},
                controller={"type": "local"},
                run_cap=10,
                name="s",
                description="d",
                project="p",
                entity="e",
            ),
        )
    )
    kinds = {name: p.distribution for name, p in spec.parameters.items()}
    assert kinds == {
        "const": "constant",
        "opt": "categorical",
        "w": "categorical_w_probabilities",
        "layers": "int_uniform",
        "lr": "uniform",
        "decay": "q_log_uniform_values",
        "noise": "normal",
        "frac": "beta",
    }
    assert spec.early_terminate is not None and spec.early_terminate.eta == 3.0


def test_valid_for_wandb_but_not_runnable_here_is_one_line(tmp_path):
    for data, fragment in [
        (with_changes(method="custom", scheduler={"engine": "optuna"}), "wandb server only"),
        (with_changes(job="entity/project/job:v0"), "launch sweeps"),
        (with_changes(metric=None), "needs a metric"),
        (
            with_changes(method="bayes", parameters={"noise": {"distribution": "normal"}}),
            "bayes search takes",
        ),
    ]:
        path = write(tmp_path, data)
        with pytest.raises(ConfigError, match=fragment):
            check_runnable_here(load_sweep(path), path)


# The shipped sweep files and the config each trial's command loads: its parameters must be keys the
# job accepts, with values it accepts, or every trial would fail on its first line.
SHIPPED = {
    "experiments/attnpo/testbed/sweep.yaml": (
        "attnpo.train",
        "TrainConfig",
        "experiments/attnpo/testbed/a2_attnpo.yaml",
    ),
    "experiments/eval/sweep.yaml": ("attncore.eval.config", "SuiteConfig", "experiments/eval/cpu_suite.yaml"),
    "experiments/testbed/sweep.yaml": (
        "attncore.synthetic.testbed_model",
        "TestbedModelConfig",
        "experiments/testbed/default.yaml",
    ),
    "experiments/cotattn/testbed/sweep.yaml": (
        "cotattn.config",
        "TrainConfig",
        "experiments/cotattn/testbed/train_molsaki.yaml",
    ),
}


@pytest.mark.parametrize("sweep_file", sorted(SHIPPED))
def test_shipped_sweep_files_drive_their_jobs(sweep_file, tmp_path):
    module, cls_name, config_file = SHIPPED[sweep_file]
    spec = load_sweep(REPO / sweep_file)
    check_runnable_here(spec, sweep_file)
    assert (REPO / spec.program).is_file() and spec.command_items()[-1] == "${args_no_hyphens}"
    assert Path(config_file).name in spec.command_items(), "the command names the config it sweeps"
    cls = getattr(__import__(module, fromlist=[cls_name]), cls_name)
    points = grid_points(spec) if spec.method == "grid" else [random_point(spec, i, 0) for i in range(5)]
    for params in points:
        argv = trial_command(spec, params, tmp_path)
        overrides = argv[argv.index(Path(config_file).name) + 1 :]
        cfg = load_config(cls, REPO / config_file, overrides)
        for name, value in params.items():
            node = cfg
            for part in name.split("."):
                node = getattr(node, part)
            if isinstance(value, str) and isinstance(yaml.safe_load(value), dict):  # a whole section
                section = yaml.safe_load(value)
                assert node.model_dump(include=set(section)) == section, (
                    f"{name} reached the config as {node!r}"
                )
            else:
                assert node == pytest.approx(value), f"{name} reached the config as {node!r}, not {value!r}"


def test_grid_values_follow_wandb():
    q = Parameter.model_validate({"distribution": "q_uniform", "min": 0, "max": 10, "q": 4})
    assert grid_values(q) == [0, 4, 8], "q_uniform steps from min, stopping below max (numpy arange)"
    qf = Parameter.model_validate({"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25})
    assert grid_values(qf) == [0.0, 0.25, 0.5, 0.75]
    assert grid_values(Parameter.model_validate({"min": 2, "max": 4})) == [2, 3, 4]
    spec = SweepSpec.model_validate(
        with_changes(
            method="grid",
            parameters={"a": {"values": [1, 2]}, "b": {"values": ["x", "y", "z"]}, "c": {"value": 0}},
        )
    )
    points = grid_points(spec)
    assert (
        len(points) == 6
        and points[0] == {"a": 1, "b": "x", "c": 0}
        and points[1] == {"a": 1, "b": "y", "c": 0}
    )
    assert len({json.dumps(p) for p in points}) == 6


def test_random_draws_stay_in_their_distribution_and_repeat_per_seed():
    spec = SweepSpec.model_validate(
        with_changes(
            parameters={
                "lr": {"distribution": "log_uniform_values", "min": 1.0e-5, "max": 1.0e-2},
                "n": {"min": 1, "max": 3},
                "q": {"distribution": "q_uniform", "min": 0, "max": 100, "q": 10},
                "w": {"values": ["never", "always"], "probabilities": [0.0, 1.0]},
                "inv": {"distribution": "inv_log_uniform_values", "min": 0.1, "max": 10.0},
            }
        )
    )
    points = [random_point(spec, i, seed=3) for i in range(400)]
    assert points[7] == random_point(spec, 7, seed=3) and points[7] != random_point(spec, 7, seed=4)
    lrs = [p["lr"] for p in points]
    assert all(1e-5 <= v <= 1e-2 for v in lrs)
    below = sum(v < 1e-4 for v in lrs) / len(lrs)
    assert 0.2 < below < 0.47, "log-uniform: a third of the draws lie in the first of three decades"
    assert {p["n"] for p in points} == {1, 2, 3}
    assert all(isinstance(p["q"], int) and p["q"] % 10 == 0 and 0 <= p["q"] <= 100 for p in points)
    assert {p["w"] for p in points} == {"always"}
    assert all(0.1 <= p["inv"] <= 10.0 for p in points)


def test_unbounded_and_quantized_draws():
    rng = random.Random(0)
    normal = Parameter.model_validate({"distribution": "normal", "mu": 5.0, "sigma": 0.5})
    values = [draw(normal, rng) for _ in range(2000)]
    mean = sum(values) / len(values)
    assert abs(mean - 5.0) < 0.05
    qlog = Parameter.model_validate({"distribution": "q_log_normal", "mu": 0.0, "sigma": 1.0, "q": 0.5})
    assert all(math.isclose(v / 0.5, round(v / 0.5)) for v in (draw(qlog, rng) for _ in range(50)))


def test_argument_forms_match_wandbs_own():
    """The agent's argument formats come from wandb's own function; ours must give the same lists."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    params = {
        "sampling.temperature": 0.6,
        "flag": True,
        "off": False,
        "name": "x y",
        "ks": [1, 2],
        "none": None,
    }
    theirs = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    ours = argument_forms(params, Path("args.json"))
    for form in ("args", "args_no_hyphens", "args_no_equals", "args_no_boolean_flags", "args_json"):
        assert ours[form] == theirs[form], form
    assert ours["args_append_hydra"] == theirs["args_append_hydra"]
    assert ours["args_override_hydra"] == theirs["args_override_hydra"]


def test_trial_command_expands_macros(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_TEST_ROOT", "/data")
    spec = SweepSpec.model_validate(
        with_changes(
            command=[
                "${env}",
                "${interpreter}",
                "${program}",
                "--root=${envvar:SWEEP_TEST_ROOT}/x",
                "${args_json_file}",
                "${args_no_hyphens}",
            ]
        )
    )
    argv = trial_command(spec, {"lr": 0.5, "n": 2}, tmp_path)
    assert argv == [
        "/usr/bin/env",
        sys.executable,
        "train.py",
        "--root=/data/x",
        str(tmp_path / "args.json"),
        "lr=0.5",
        "n=2",
    ]
    assert json.loads((tmp_path / "args.json").read_text()) == {"lr": 0.5, "n": 2}
    default = trial_command(SweepSpec.model_validate(BASE), {"lr": 0.5}, tmp_path)
    assert default == ["/usr/bin/env", sys.executable, "train.py", "--lr=0.5"]


def eval_reported_keys(label: str = "gsm8k", dataset: str = "gsm8k") -> dict[str, float]:
    """The summary an eval run reports, from a real report of a two-problem benchmark, one right."""
    import pyarrow as pa

    from attncore.eval.report import RunReport, benchmark_metrics
    from attncore.eval.suite import _flat_metrics

    table = pa.table(
        {
            "problem_id": ["p1", "p2"],
            "correct": [True, False],
            "n_completion_tokens": [10, 20],
            "n_thinking_tokens": [0, 0],
            "n_answer_tokens": [10, 20],
            "finish_reason": ["stop", "length"],
            "grade_mode": ["gsm8k", "gsm8k"],
            "grade_reason": ["match", "mismatch"],
        }
    )
    return _flat_metrics(RunReport("run", "model", {label: benchmark_metrics(dataset, table)}))


def _testbed_reported_keys() -> dict[str, float]:
    """The summary `synth train-model` reports, from a real evaluation record."""
    from attncore.synthetic.cli import _flat_figures
    from attncore.synthetic.evaluation import TestbedEvaluation

    evaluation = TestbedEvaluation(100, 0.5, 0.9, 0.3, 120.0, 150.0, 0.02, {2: 0.6, 3: 0.4})
    return _flat_figures("testbed", {"training": {"train_loss": 0.7}, "evaluation": evaluation.as_dict()})


def _attnpo_reported_keys(tmp_path: Path) -> dict[str, float]:
    """The summary `attnpo train` reports after its held-out evaluation, with a starting model's as AES
    baseline (accuracy 0.5 -> 0.5, completion tokens 200 -> 150: AES = 0.25 + 3 * 0)."""
    from attncore.synthetic.evaluation import TestbedEvaluation
    from attnpo.train import EVALUATION, HeldOutConfig, held_out_figures

    def figures(accuracy: float, completion: float) -> str:
        return json.dumps(TestbedEvaluation(100, accuracy, 0.9, 0.3, 120.0, completion, 0.0, {}).as_dict())

    (tmp_path / EVALUATION).write_text(figures(0.5, 150.0))
    (tmp_path / "start.json").write_text(figures(0.5, 200.0))
    return held_out_figures(HeldOutConfig(baseline=str(tmp_path / "start.json")), None, tmp_path, False)


@pytest.mark.parametrize(
    ("sweep_file", "reported", "expected"),
    [
        ("experiments/attnpo/testbed/sweep.yaml", _attnpo_reported_keys, 0.25),
        ("experiments/eval/sweep.yaml", lambda _: eval_reported_keys(), 0.5),
        ("experiments/testbed/sweep.yaml", lambda _: _testbed_reported_keys(), 0.5),
        ("experiments/cotattn/testbed/sweep.yaml", lambda _: eval_reported_keys("testbed", "synthetic"), 0.5),
    ],
)
def test_shipped_sweep_metric_is_a_key_its_job_reports(sweep_file, reported, expected, tmp_path):
    spec = load_sweep(REPO / sweep_file)
    assert spec.metric is not None
    assert reported(tmp_path)[spec.metric.name] == pytest.approx(expected)
