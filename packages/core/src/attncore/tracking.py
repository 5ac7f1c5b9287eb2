"""Experiment tracking with wandb that never blocks a run.

`mode="auto"` logs online when an API key is configured (environment or ~/.netrc) and offline
otherwise; offline runs land beside the job's outputs and can be uploaded later with `wandb sync`.
`--no-wandb` (mode "disabled") turns tracking off. Inside a sweep trial the run joins the sweep's group
(`$WANDB_RUN_GROUP`, set by `attncore sweep`) and the final metrics also go to the trial's summary file,
where the sweep reads its metric, whatever the mode.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from attncore.config import Config
from attncore.sweeps.trial import write_trial_summary

Mode = Literal["auto", "online", "offline", "disabled"]


class TrackingConfig(Config):
    """wandb settings; `mode=auto` picks online or offline by whether an API key exists."""

    mode: Mode = "auto"
    project: str = "attn-reasoning"
    entity: str | None = None
    run_name: str | None = None
    group: str | None = None
    tags: list[str] = Field(default_factory=list)


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: Mode) -> Literal["online", "offline", "disabled"]:
    """The mode wandb will actually run in; `WANDB_MODE` in the environment wins over "auto"."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env  # type: ignore[return-value]
    return "online" if wandb_api_key_configured() else "offline"


class Tracker:
    """A thin wrapper so jobs log the same way whether wandb is online, offline or off."""

    def __init__(self, cfg: TrackingConfig, config: dict[str, Any], out_dir: str | Path, job: str):
        self.mode = resolve_mode(cfg.mode)
        self.out_dir = Path(out_dir)
        self.run = None
        if self.mode == "disabled":
            return
        import wandb

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            name=cfg.run_name,
            group=os.environ.get("WANDB_RUN_GROUP") or cfg.group,
            tags=[job, *cfg.tags],
            job_type=job,
            config=config,
            dir=str(out_dir),
            mode=self.mode,
            reinit="finish_previous",
        )

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        """Final metrics: the run's summary and, inside a sweep trial, the trial's summary file."""
        write_trial_summary(metrics, self.out_dir)
        if self.run is not None:
            self.run.summary.update(metrics)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def report_to_active_run(metrics: dict[str, Any]) -> None:
    """Final metrics of a job whose wandb run another library opened (TRL's callback): into that run's
    summary when one is open, and into the sweep trial's summary file inside a sweep."""
    import sys

    write_trial_summary(metrics)
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.summary.update(metrics)
