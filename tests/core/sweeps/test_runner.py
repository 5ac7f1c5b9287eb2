"""`attncore sweep` end to end on a seconds-long program: grid, random and bayes, parallel trials,
failed trials, the results table and plot, a SIGKILL of the runner mid-sweep and the resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from attncore.errors import UserError
from attncore.sweeps.report import PLOT_NAME, RESULTS_CSV, RESULTS_MD
from attncore.sweeps.runner import STATE_NAME, run_sweep
from attncore.sweeps.trial import TRIAL_SUMMARY

# The trial program: `key=value` arguments; score = -(x - 0.3)^2 (+0.1 with opt=b). It logs each start
# and end in its trial folder, sleeps `sleep` seconds, hangs for `hang` seconds on the first start of
# the trial with x == hang_x, and exits 3 for x == fail_x.
PROGRAM = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    folder = Path(os.environ["ATTNCORE_TRIAL_DIR"])
    log = folder / "events.txt"
    first = not log.exists()
    with open(log, "a") as f:
        f.write(f"start {time.time()}\\n")
    x = float(args["x"])
    if "fail_x" in args and x == float(args["fail_x"]):
        sys.exit(3)
    if first and "hang_x" in args and x == float(args["hang_x"]):
        time.sleep(float(args["hang"]))
    time.sleep(float(args.get("sleep", 0)))
    score = -((x - 0.3) ** 2) + (0.1 if args.get("opt") == "b" else 0.0)
    (folder / "trial_summary.json").write_text(json.dumps({"score": score, "group": os.environ["WANDB_RUN_GROUP"]}))
    with open(log, "a") as f:
        f.write(f"end {time.time()}\\n")
    """
)


def score(x: float, opt: str = "a") -> float:
    return -((x - 0.3) ** 2) + (0.1 if opt == "b" else 0.0)


@pytest.fixture
def sweep_file(tmp_path):
    program = tmp_path / "trial_program.py"
    program.write_text(PROGRAM)

    def make(method: str, parameters: dict, **extra) -> Path:
        data = {
            "program": str(program),
            "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"],
            "method": method,
            "metric": {"name": "score", "goal": "maximize"},
            "parameters": parameters,
            **extra,
        }
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


def events(folder: Path, trial: str) -> list[tuple[str, float]]:
    lines = (folder / "trials" / trial / "events.txt").read_text().split()
    return list(zip(lines[::2], map(float, lines[1::2]), strict=True))


def state(folder: Path) -> dict:
    return json.loads((folder / STATE_NAME).read_text())


def test_grid_sweep_runs_every_point_and_reports(sweep_file, tmp_path):
    path = sweep_file(
        "grid", {"x": {"values": [0.0, 0.25, 0.5]}, "opt": {"values": ["a", "b"]}, "sleep": {"value": 0}}
    )
    folder = run_sweep(path, out=tmp_path / "sweep", progress=False)
    trials = state(folder)["trials"]
    assert [t["params"] for t in trials][:2] == [
        {"x": 0.0, "opt": "a", "sleep": 0},
        {"x": 0.0, "opt": "b", "sleep": 0},
    ]
    assert len(trials) == 6 and all(t["status"] == "finished" for t in trials)
    for t in trials:
        assert t["metric"] == pytest.approx(score(t["params"]["x"], t["params"]["opt"]))
        summary = json.loads((folder / "trials" / t["id"] / TRIAL_SUMMARY).read_text())
        assert summary["group"] == state(folder)["name"] == f"{tmp_path.name}-grid", "WANDB_RUN_GROUP"
    with open(folder / RESULTS_CSV) as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["trial"] == "t0003", "x=0.25, opt=b scores best"
    assert [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)
    markdown = (folder / RESULTS_MD).read_text()
    assert markdown.startswith("6 trials: 6 finished; best t0003 with score = 0.0975")
    assert "| t0003 | finished | 0.0975 | 0.25 | b | 0 |" in markdown
    assert (folder / PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "sweep.resolved.yaml").is_file()

    again = run_sweep(path, out=tmp_path / "sweep", progress=False)
    assert all(len(events(again, t["id"])) == 2 for t in trials), "a finished sweep reruns nothing"


def test_random_sweep_is_seeded_and_extends(sweep_file, tmp_path):
    path = sweep_file(
        "random",
        {"x": {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0}, "opt": {"values": ["a", "b"]}},
    )
    with pytest.raises(UserError, match="--trials"):
        run_sweep(path, out=tmp_path / "s", progress=False)
    folder = run_sweep(path, trials=3, out=tmp_path / "s", seed=5, progress=False)
    first = state(folder)["trials"]
    assert len(first) == 3 and all(0.01 <= t["params"]["x"] <= 1.0 for t in first)
    folder = run_sweep(path, trials=5, out=tmp_path / "s", seed=5, progress=False)
    trials = state(folder)["trials"]
    assert len(trials) == 5 and trials[:3] == first
    assert all(len(events(folder, t["id"])) == 2 for t in trials), "the first three ran once each"
    fresh = run_sweep(path, trials=5, out=tmp_path / "fresh", seed=5, progress=False)
    assert [t["params"] for t in state(fresh)["trials"]] == [t["params"] for t in trials]
    with pytest.raises(UserError, match="another file or seed"):
        run_sweep(path, trials=5, out=tmp_path / "s", seed=6, progress=False)


def test_bayes_sweep_keeps_its_study_in_sqlite(sweep_file, tmp_path):
    import optuna

    path = sweep_file(
        "bayes", {"x": {"min": 0.0, "max": 1.0}, "opt": {"values": ["a", "b"]}, "sleep": {"value": 0}}
    )
    folder = run_sweep(path, trials=3, out=tmp_path / "b", progress=False)
    folder = run_sweep(path, trials=5, out=tmp_path / "b", progress=False)
    trials = state(folder)["trials"]
    assert [t["optuna_number"] for t in trials] == list(range(5))
    study = optuna.load_study(study_name=state(folder)["name"], storage=f"sqlite:///{folder / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5
    for record, trial in zip(trials, study.trials, strict=True):
        assert trial.value == pytest.approx(record["metric"])
        assert trial.params == {"x": record["params"]["x"], "opt": record["params"]["opt"]}
        assert record["metric"] == pytest.approx(score(record["params"]["x"], record["params"]["opt"]))
    assert study.best_value == max(t["metric"] for t in trials)


def test_parallel_trials_overlap_and_failures_are_recorded(sweep_file, tmp_path):
    path = sweep_file(
        "grid", {"x": {"values": [0.1, 0.2, 0.3, 0.4]}, "sleep": {"value": 0.5}, "fail_x": {"value": 0.3}}
    )
    folder = run_sweep(path, parallel=2, out=tmp_path / "p", progress=False)
    trials = {t["id"]: t for t in state(folder)["trials"]}
    assert trials["t0002"]["status"] == "failed" and trials["t0002"]["returncode"] == 3
    assert "exit status 3" in trials["t0002"]["error"]
    assert [t["status"] for t in trials.values()].count("finished") == 3
    spans = [(e[0][1], e[-1][1]) for t in ("t0000", "t0001") for e in [events(folder, t)]]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], "two trials ran at once"
    assert "| t0002 | failed |" in (folder / RESULTS_MD).read_text()

    run_sweep(path, parallel=2, out=tmp_path / "p", progress=False)
    assert len(events(folder, "t0002")) == 1, "a failed trial is not rerun by itself"
    run_sweep(path, parallel=2, out=tmp_path / "p", retry_failed=True, progress=False)
    assert len(events(folder, "t0002")) == 2 and state(folder)["trials"][2]["status"] == "failed"


def test_missing_metric_fails_the_trial_and_target_stops_the_sweep(sweep_file, tmp_path):
    path = sweep_file("grid", {"x": {"values": [0.3, 0.0]}}, metric={"name": "loss", "goal": "minimize"})
    folder = run_sweep(path, out=tmp_path / "m", progress=False)
    assert {t["error"] for t in state(folder)["trials"]} == {
        f"metric 'loss' not in {TRIAL_SUMMARY} (keys: group, score)"
    }
    path = sweep_file(
        "grid",
        {"x": {"values": [0.0, 0.3, 0.5]}},
        metric={"name": "score", "goal": "maximize", "target": -0.01},
    )
    folder = run_sweep(path, out=tmp_path / "t", progress=False)
    assert [t["status"] for t in state(folder)["trials"]] == ["finished", "finished"], (
        "x=0.3 reaches the target"
    )


def run_cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "attncore", "sweep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_finished_trials(sweep_file, tmp_path):
    """SIGKILL the runner while a trial runs: the trial's process outlives it; the rerun stops that
    process, runs that trial again, keeps the finished ones and completes the sweep."""
    path = sweep_file(
        "grid",
        {
            "x": {"values": [0.1, 0.2, 0.35]},
            "sleep": {"value": 0.2},
            "hang_x": {"value": 0.2},
            "hang": {"value": 120},
        },
    )
    folder = tmp_path / "k"
    runner = run_cli(str(path), "--out", str(folder), "-q")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (folder / STATE_NAME).exists() and (folder / "trials" / "t0001" / "events.txt").exists():
            trials = state(folder)["trials"]
            if len(trials) == 2 and trials[1]["status"] == "running":
                break
        time.sleep(0.1)
    else:
        runner.kill()
        pytest.fail(f"the sweep never reached its second trial: {runner.communicate()}")
    runner.send_signal(signal.SIGKILL)
    runner.communicate()
    left_over = state(folder)["trials"][1]["pid"]
    assert Path(f"/proc/{left_over}").exists(), "the hanging trial outlived its runner"

    resumed = run_cli(str(path), "--out", str(folder), "-q")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert not Path(f"/proc/{left_over}").exists(), "the left-over trial was stopped"
    trials = state(folder)["trials"]
    assert [t["status"] for t in trials] == ["finished"] * 3
    assert [kind for kind, _ in events(folder, "t0000")] == ["start", "end"], (
        "finished before the kill: not rerun"
    )
    assert [kind for kind, _ in events(folder, "t0001")] == ["start", "start", "end"], "killed: run again"
    assert [kind for kind, _ in events(folder, "t0002")] == ["start", "end"]
    assert "3 trials: 3 finished; best t0002" in out and f"sweep: {folder}" in out


@pytest.mark.slow
def test_bad_sweep_file_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "method: grid\nparameters:\n  lr: {min: 0.1, max: 1.0}\nmetric: {name: s}\nprogram: p.py\n"
    )
    proc = run_cli(str(path))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "grid search takes value, values, int_uniform or q_uniform parameters, not lr" in err


TRACKED_PROGRAM = textwrap.dedent(
    """
    import sys
    from attncore.cli_support import config_from_cli
    from attncore.config import Config
    from attncore.tracking import Tracker, TrackingConfig

    class Toy(Config):
        out: str = "runs/toy"
        x: float = 0.0
        tracking: TrackingConfig = TrackingConfig()

    cfg = config_from_cli(Toy, None, sys.argv[1:])
    tracker = Tracker(cfg.tracking, cfg.model_dump(), cfg.out, job="toy")
    tracker.summary({"score": -cfg.x, "out": cfg.out, "group": tracker.run.group, "mode": tracker.mode})
    tracker.finish()
    """
)


@pytest.mark.slow
def test_trials_of_attncore_jobs_are_offline_wandb_runs_grouped_under_the_sweep(tmp_path, monkeypatch):
    """A job built like ours (config_from_cli + Tracker): its `out` is the trial folder, its wandb run is
    offline (no API key) in the sweep's group, its summary is where the sweep reads the metric."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    program = tmp_path / "toy_job.py"
    program.write_text(TRACKED_PROGRAM)
    path = tmp_path / "toy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "toy-sweep",
                "program": str(program),
                "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"],
                "method": "grid",
                "metric": {"name": "score", "goal": "maximize"},
                "parameters": {"x": {"values": [1.0, 2.0]}},
            }
        )
    )
    folder = run_sweep(path, out=tmp_path / "w", progress=False)
    trials = state(folder)["trials"]
    assert [t["metric"] for t in trials] == [-1.0, -2.0]
    for t in trials:
        trial_folder = folder / "trials" / t["id"]
        summary = json.loads((trial_folder / TRIAL_SUMMARY).read_text())
        assert summary["out"] == str(trial_folder.resolve())
        assert summary["group"] == "toy-sweep" and summary["mode"] == "offline"
        runs = list((trial_folder / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert os.environ.get("WANDB_MODE") is None, "the runner leaves its own environment alone"


def test_inside_a_trial_jobs_write_into_its_folder(tmp_path, monkeypatch):
    """The trial contract of our jobs: `out` is the trial folder unless the command sets it, and final
    metrics land in the trial summary even with wandb off; under a wandb agent the folder comes from
    the agent's sweep and run ids."""
    from attncore.cli_support import config_from_cli
    from attncore.config import Config
    from attncore.tracking import Tracker, TrackingConfig

    class Job(Config):
        out: str = "runs/job"
        x: int = 0

    for name in ("ATTNCORE_TRIAL_DIR", "WANDB_SWEEP_ID", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    assert config_from_cli(Job, None, ["x=1"]).out == "runs/job", "outside a sweep nothing changes"
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setenv("WANDB_RUN_ID", "run7")
    assert config_from_cli(Job, None, []).out == str(Path("runs/sweeps/abc123/run7"))
    monkeypatch.setenv("ATTNCORE_TRIAL_DIR", str(tmp_path / "t0001"))
    assert config_from_cli(Job, None, ["x=1"]).out == str(tmp_path / "t0001")
    assert config_from_cli(Job, None, ["out=mine"]).out == "mine", "an explicit out wins"

    tracker = Tracker(TrackingConfig(mode="disabled"), {}, tmp_path / "t0001", job="test")
    tracker.summary({"eval/gsm8k/pass@1": 0.25})
    tracker.summary({"tokens": 10})
    nested = Tracker(TrackingConfig(mode="disabled"), {}, tmp_path / "t0001" / "gsm8k", job="rollout")
    nested.summary({"rollout/accuracy": 0.5})  # a suite's per-benchmark job: the suite reports
    assert json.loads((tmp_path / "t0001" / TRIAL_SUMMARY).read_text()) == {
        "eval/gsm8k/pass@1": 0.25,
        "tokens": 10,
    }


@pytest.mark.slow
def test_sigterm_stops_the_running_trial_and_leaves_it_to_resume(sweep_file, tmp_path):
    path = sweep_file("grid", {"x": {"values": [0.2, 0.4]}, "hang_x": {"value": 0.2}, "hang": {"value": 120}})
    folder = tmp_path / "term"
    runner = run_cli(str(path), "--out", str(folder), "-q")
    deadline = time.monotonic() + 60
    while not (folder / "trials" / "t0000" / "events.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = state(folder)["trials"][0]["pid"]
    runner.send_signal(signal.SIGTERM)
    runner.communicate(timeout=60)
    assert runner.returncode == 130
    assert not Path(f"/proc/{pid}").exists(), "the trial was stopped with its runner"
    assert [t["status"] for t in state(folder)["trials"]] == ["pending"]
    assert "1 trials: 1 pending" in (folder / RESULTS_MD).read_text()
