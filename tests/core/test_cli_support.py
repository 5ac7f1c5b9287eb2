"""The shared plumbing of the job commands: config loading with the flags every CLI offers."""

from __future__ import annotations

from attncore.cli_support import job_from_cli
from attncore.rollout.job import RolloutJobConfig


def test_job_from_cli_applies_the_shared_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTNCORE_TRIAL_DIR", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    plain = job_from_cli(RolloutJobConfig, None, [f"out={tmp_path}"])
    assert plain.tracking.mode != "disabled" and not plain.overwrite
    flagged = job_from_cli(RolloutJobConfig, None, [f"out={tmp_path}"], no_wandb=True, overwrite=True)
    assert flagged.tracking.mode == "disabled" and flagged.overwrite
    assert flagged.model_dump(exclude={"tracking", "overwrite"}) == plain.model_dump(
        exclude={"tracking", "overwrite"}
    )
