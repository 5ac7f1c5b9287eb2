"""`attncore sweep`: run a wandb sweep file's trials here, as subprocesses, without a wandb server.

The sweep folder (default `runs/sweeps/<name>`) holds `sweep.json` (every trial: parameters, status,
metric), `sweep.resolved.yaml`, Optuna's `optuna.db` for bayes, one folder per trial under `trials/`
(its outputs, `trial.log`, `trial_summary.json`) and, at the end, the results table and plot. Every
change of a trial's state is written before the runner goes on, so a killed sweep rerun with the same
file continues: finished and failed trials are kept, the trials that were running start again (left-over
processes of a killed runner are stopped first), and the search continues from its recorded trials.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from attncore.config import save_resolved
from attncore.errors import UserError
from attncore.sweeps.report import write_report
from attncore.sweeps.search import BayesSearch, grid_points, random_point
from attncore.sweeps.spec import SweepSpec, check_runnable_here, load_sweep
from attncore.sweeps.trial import (
    TRIAL_DIR_ENV,
    TRIAL_SUMMARY,
    read_trial_summary,
    trial_command,
    trial_environment,
)

STATE_NAME = "sweep.json"
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 10.0


@dataclass
class TrialRecord:
    """One trial as the sweep remembers it; `status` is pending, running, finished or failed."""

    id: str
    index: int
    params: dict[str, Any]
    status: str = "pending"
    metric: float | None = None
    optuna_number: int | None = None
    returncode: int | None = None
    seconds: float | None = None
    error: str | None = None
    pid: int | None = None


@dataclass
class SweepState:
    name: str
    file: str
    seed: int
    spec: dict[str, Any]
    trials: list[TrialRecord] = field(default_factory=list)

    def save(self, folder: Path) -> None:
        tmp = folder / (STATE_NAME + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, default=str))
        tmp.replace(folder / STATE_NAME)

    @classmethod
    def load(cls, folder: Path) -> SweepState | None:
        path = folder / STATE_NAME
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            data["trials"] = [TrialRecord(**t) for t in data["trials"]]
            return cls(**data)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{path}: not a sweep state this runner wrote ({exc})") from None


def sweep_name(spec: SweepSpec, path: Path) -> str:
    """The sweep's `name`, else `<folder>-<file stem>` (experiments/eval/sweep.yaml -> eval-sweep)."""
    raw = spec.name or f"{path.resolve().parent.name}-{path.stem}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-") or "sweep"


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another attncore sweep is running in {folder}") from None
        yield


def _stop_leftover(record: TrialRecord, folder: Path) -> None:
    """Kill the process group a killed runner left running for this trial, if it is still alive.

    The pid is only trusted when that process still carries this trial's folder in its environment.
    """
    if record.pid is None:
        return
    marker = f"{TRIAL_DIR_ENV}={folder.resolve()}".encode()
    try:
        environ = Path(f"/proc/{record.pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return
    if marker not in environ:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while Path(f"/proc/{record.pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


class _Runner:
    """Launches trials up to the parallel limit, polls them, records each result as it comes."""

    def __init__(self, spec: SweepSpec, folder: Path, state: SweepState, budget: int, seed: int):
        self.spec, self.folder, self.state = spec, folder, state
        self.budget, self.seed = budget, seed
        self.metric = spec.metric
        self.bayes = BayesSearch(spec, folder, state.name, seed) if spec.method == "bayes" else None
        self.grid = grid_points(spec) if spec.method == "grid" else None
        self.running: dict[str, tuple[subprocess.Popen, float]] = {}
        assert self.metric is not None
        self.stop_launching = any(
            r.metric is not None and self.metric.reached(r.metric) for r in state.trials
        )

    def trial_folder(self, record: TrialRecord) -> Path:
        return self.folder / "trials" / record.id

    def next_record(self) -> TrialRecord | None:
        for record in self.state.trials:
            if record.status == "pending":
                return record
        index = len(self.state.trials)
        if index >= self.budget:
            return None
        record = TrialRecord(id=f"t{index:04d}", index=index, params={})
        if self.grid is not None:
            record.params = self.grid[index]
        elif self.bayes is not None:
            record.optuna_number, record.params = self.bayes.ask()
        else:
            record.params = random_point(self.spec, index, self.seed)
        self.state.trials.append(record)
        self.state.save(self.folder)
        return record

    def launch(self, record: TrialRecord) -> None:
        folder = self.trial_folder(record)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TRIAL_SUMMARY).unlink(missing_ok=True)  # a rerun reports afresh
        argv = trial_command(self.spec, record.params, folder)
        env = trial_environment(self.state.name, record.id, folder, self.spec)
        with open(folder / "trial.log", "ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped as a whole
                )
            except OSError as exc:
                self.finish(record, None, f"could not start {argv[0]!r}: {exc.strerror}", 0.0)
                return
        record.status, record.pid, record.error = "running", proc.pid, None
        self.state.save(self.folder)
        self.running[record.id] = (proc, time.monotonic())

    def finish(self, record: TrialRecord, returncode: int | None, error: str | None, seconds: float) -> None:
        assert self.metric is not None
        record.returncode, record.seconds, record.pid = returncode, round(seconds, 2), None
        value = None
        if error is None:
            summary = read_trial_summary(self.trial_folder(record))
            if summary is None:
                error = f"no {TRIAL_SUMMARY} in its folder"
            elif self.metric.name not in summary:
                keys = ", ".join(sorted(summary)) or "none"
                error = f"metric {self.metric.name!r} not in {TRIAL_SUMMARY} (keys: {keys})"
            elif not _is_number(summary[self.metric.name]):
                error = f"metric {self.metric.name!r} is {summary[self.metric.name]!r}, not a finite number"
            else:
                value = float(summary[self.metric.name])
        record.status = "finished" if value is not None else "failed"
        record.metric, record.error = value, error
        self.state.save(self.folder)
        if self.bayes is not None and record.optuna_number is not None:
            self.bayes.tell(record.optuna_number, value)
        if value is not None and self.metric.reached(value):
            self.stop_launching = True

    def poll(self) -> list[TrialRecord]:
        done = []
        records = {r.id: r for r in self.state.trials}
        for trial_id, (proc, started) in list(self.running.items()):
            returncode = proc.poll()
            if returncode is None:
                continue
            del self.running[trial_id]
            record = records[trial_id]
            error = None if returncode == 0 else f"exit status {returncode} (see trial.log)"
            self.finish(record, returncode, error, time.monotonic() - started)
            done.append(record)
        return done

    def stop_all(self) -> None:
        """Interrupted: stop every running trial and leave it pending, so the next run starts it again."""
        for proc, _ in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc, _ in self.running.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        records = {r.id: r for r in self.state.trials}
        for trial_id in self.running:
            records[trial_id].status, records[trial_id].pid = "pending", None
        self.running.clear()
        self.state.save(self.folder)

    def report(self, record: TrialRecord, bar: tqdm) -> None:
        assert self.metric is not None
        bar.update(1)
        bar.write(_trial_line(record, self.metric.name))
        if self.stop_launching and record.metric is not None and self.metric.reached(record.metric):
            bar.write(f"metric target reached by {record.id}: no further trials")

    def run(self, parallel: int, progress: bool) -> None:
        ended = sum(r.status in ("finished", "failed") for r in self.state.trials)
        bar = tqdm(
            total=self.budget,
            initial=ended,
            desc=f"sweep {self.state.name}",
            unit="trial",
            disable=not progress,
        )
        try:
            while True:
                while len(self.running) < parallel and not self.stop_launching:
                    record = self.next_record()
                    if record is None:
                        break
                    self.launch(record)
                    if record.status == "failed":  # its command could not start
                        self.report(record, bar)
                if not self.running:
                    break
                time.sleep(POLL_SECONDS)
                for record in self.poll():
                    self.report(record, bar)
        except KeyboardInterrupt:
            self.stop_all()
            raise
        finally:
            bar.close()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _trial_line(record: TrialRecord, metric: str) -> str:
    params = " ".join(f"{k}={v}" for k, v in record.params.items())
    result = f"{metric}={record.metric:.6g}" if record.metric is not None else f"failed: {record.error}"
    return f"{record.id} {result}  ({params}; {record.seconds:.1f} s)"


def _budget(spec: SweepSpec, path: Path, trials: int | None) -> int:
    caps = [n for n in (trials, spec.run_cap) if n is not None]
    if spec.method == "grid":
        return min([len(grid_points(spec)), *caps])
    if not caps:
        raise UserError(f"{path}: a {spec.method} search has no end of its own; give --trials N (or run_cap)")
    return min(caps)


def _raise_on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_sweep(
    path: Path,
    trials: int | None = None,
    parallel: int = 1,
    out: Path | None = None,
    seed: int = 0,
    retry_failed: bool = False,
    progress: bool = True,
) -> Path:
    """Run (or continue) a sweep file's trials here; returns the sweep folder with its results."""
    spec = load_sweep(path)
    check_runnable_here(spec, path)
    name = sweep_name(spec, path)
    folder = out or Path("runs") / "sweeps" / name
    folder.mkdir(parents=True, exist_ok=True)
    budget = _budget(spec, path, trials)
    resolved = spec.model_dump(mode="json")
    with _exclusive(folder):
        state = SweepState.load(folder)
        if state is None:
            state = SweepState(name=name, file=str(path), seed=seed, spec=resolved)
        elif state.spec != resolved or state.seed != seed:
            raise UserError(
                f"{folder} holds a sweep of another file or seed ({state.file}, seed {state.seed}); "
                "give it another --out"
            )
        save_resolved(spec, folder, "sweep.resolved.yaml")
        for record in state.trials:
            if record.status == "running":
                _stop_leftover(record, folder / "trials" / record.id)
                record.status, record.pid = "pending", None
            if retry_failed and record.status == "failed":
                record.status, record.metric, record.error = "pending", None, None
        state.save(folder)
        if spec.early_terminate is not None and progress:
            print("note: early_terminate is applied by a wandb server only; every trial here runs to its end")
        runner = _Runner(spec, folder, state, budget, seed)
        if runner.bayes is not None:
            asked = [r for r in state.trials if r.optuna_number is not None]
            runner.bayes.reconcile(
                {r.optuna_number: r.metric for r in asked if r.status in ("finished", "failed")},
                {r.optuna_number for r in asked if r.status == "pending"},
            )
        previous = signal.signal(signal.SIGTERM, _raise_on_term)
        try:
            runner.run(parallel, progress)
        finally:
            signal.signal(signal.SIGTERM, previous)
            write_report(state.trials, spec, folder)
    return folder
