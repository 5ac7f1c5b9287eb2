"""What a sweep trial is to the program it runs: its command line, its environment, its folder, its summary.

A trial runs the sweep file's command with the sampled parameters expanded by wandb's macros, in its own
folder `<sweep>/trials/<id>`, named to the program by `$ATTNCORE_TRIAL_DIR`. Under `wandb agent` there is
no such variable; the folder is then `runs/sweeps/<sweep id>/<run id>` from the agent's variables, so a
trial's outputs never land on another's. Inside a trial an attncore job writes its outputs (`out`) into
that folder, and its final metrics (the keys of its wandb summary) into `trial_summary.json` there, where
`attncore sweep` reads the sweep's metric; any other program may write that file itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from attncore.sweeps.spec import MACRO, SweepSpec

TRIAL_DIR_ENV = "ATTNCORE_TRIAL_DIR"
TRIAL_SUMMARY = "trial_summary.json"
ARGS_JSON_FILE = "args.json"


def trial_dir() -> Path | None:
    """The folder of the sweep trial this process runs, or None outside a sweep."""
    if folder := os.environ.get(TRIAL_DIR_ENV):
        return Path(folder)
    sweep, run = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    if sweep and run:
        return Path("runs") / "sweeps" / sweep / run
    return None


def write_trial_summary(metrics: dict[str, Any], out_dir: str | Path | None = None) -> None:
    """Merge final metrics into the trial's summary file (like a wandb summary update); no-op outside a trial.

    A job whose `out_dir` lies inside the trial's folder is part of a bigger job (an eval suite's rollouts
    of one benchmark) and leaves the reporting to it.
    """
    folder = trial_dir()
    if folder is None:
        return
    if out_dir is not None and folder.resolve() in Path(out_dir).resolve().parents:
        return
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / TRIAL_SUMMARY
    summary = read_trial_summary(folder) or {}
    summary.update(metrics)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    tmp.replace(target)


def read_trial_summary(folder: Path) -> dict[str, Any] | None:
    """The trial's summary, or None when it wrote none (or an unreadable one)."""
    try:
        summary = json.loads((folder / TRIAL_SUMMARY).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


def argument_forms(params: dict[str, Any], args_json_file: Path) -> dict[str, list[str]]:
    """The parameters in each form the agent's `${args...}` macros give, formatted as wandb formats them."""
    flags = [f"{name}={value}" for name, value in params.items()]
    no_booleans = [
        f"--{name}" if value is True else f"--{name}={value}"
        for name, value in params.items()
        if value is not False
    ]
    return {
        "args": [f"--{flag}" for flag in flags],
        "args_no_hyphens": flags,
        "args_no_equals": [item for name, value in params.items() for item in (f"--{name}", str(value))],
        "args_no_boolean_flags": no_booleans,
        "args_json": [json.dumps(params)],
        "args_json_file": [str(args_json_file)],
        "args_append_hydra": [f"+{flag}" for flag in flags],
        "args_override_hydra": [f"++{flag}" for flag in flags],
    }


def _expand_env_vars(item: str) -> str:
    # `${envvar:NAME}` anywhere in an item; an unset variable leaves its name, as the agent does.
    out, rest = "", item
    while (start := rest.find("${envvar:")) >= 0 and (end := rest.find("}", start)) >= 0:
        name = rest[start + len("${envvar:") : end]
        out += rest[:start] + os.environ.get(name, name)
        rest = rest[end + 1 :]
    return out + rest


def trial_command(spec: SweepSpec, params: dict[str, Any], folder: Path) -> list[str]:
    """The argv of one trial: the sweep's command (or wandb's default) with every macro expanded.

    `${interpreter}` is the Python running attncore (the agent takes `python` from PATH, which is the same
    one under `uv run`); `${args_json_file}` is written into the trial folder.
    """
    forms = argument_forms(params, folder / ARGS_JSON_FILE)
    forms |= {"env": ["/usr/bin/env"], "interpreter": [sys.executable], "program": [spec.program or ""]}
    argv: list[str] = []
    for item in spec.command_items():
        match = MACRO.match(item)
        if match:
            if match.group(1) == "args_json_file":
                (folder / ARGS_JSON_FILE).write_text(json.dumps(params))
            argv += forms[match.group(1)]
        else:
            argv.append(_expand_env_vars(item))
    return argv


def trial_environment(sweep_name: str, trial_id: str, folder: Path, spec: SweepSpec) -> dict[str, str]:
    """The trial's environment: its folder, and wandb settings that make it a run grouped under the sweep
    (offline when no API key is configured)."""
    from attncore.tracking import resolve_mode

    env = dict(os.environ)
    env[TRIAL_DIR_ENV] = str(folder.resolve())
    env["WANDB_RUN_GROUP"] = sweep_name
    env["WANDB_NAME"] = f"{sweep_name}-{trial_id}"
    env["WANDB_DIR"] = str(folder.resolve())
    env.setdefault("WANDB_MODE", resolve_mode("auto"))
    if spec.project:
        env["WANDB_PROJECT"] = spec.project
    if spec.entity:
        env["WANDB_ENTITY"] = spec.entity
    for name in ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):
        env.pop(name, None)  # a trial is no wandb-server sweep run, even if started under an agent
    return env
