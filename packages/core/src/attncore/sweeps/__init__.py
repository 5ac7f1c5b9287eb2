"""Sweeps: one wandb sweep file, run by `wandb sweep` + `wandb agent` online or by `attncore sweep` here.

- `spec`: the sweep file (wandb's format), validated strictly;
- `search`: grid and random as wandb defines them, bayes through an Optuna study in SQLite;
- `trial`: a trial's command (wandb's macros), environment, folder and summary file;
- `runner`: trials as subprocesses, in parallel, resumable after a kill;
- `report`: the results table (Markdown, CSV) and the metric against each parameter (PNG).
"""

from attncore.sweeps.runner import run_sweep
from attncore.sweeps.spec import SweepSpec, load_sweep
from attncore.sweeps.trial import TRIAL_DIR_ENV, TRIAL_SUMMARY, trial_dir, write_trial_summary

__all__ = [
    "TRIAL_DIR_ENV",
    "TRIAL_SUMMARY",
    "SweepSpec",
    "load_sweep",
    "run_sweep",
    "trial_dir",
    "write_trial_summary",
]
