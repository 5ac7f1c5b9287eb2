"""`attnpo` command line: key-focus-head discovery and its checks, and RL training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attncore.cli_support import (
    CONFIG_OPTION,
    NO_WANDB_OPTION,
    OVERRIDES_ARGUMENT,
    OVERWRITE_OPTION,
    QUIET_OPTION,
    add_version_option,
    job_from_cli,
    new_app,
    run_app,
)
from attnpo import __version__

app = new_app("AttnPO: key-focus heads and attention-guided advantage rescaling for RL against overthinking.")
add_version_option(app, "attnpo", __version__)


@app.command("find-heads")
def find_heads(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    no_wandb: bool = NO_WANDB_OPTION,
    quiet: bool = QUIET_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
):
    """Discover key-focus heads: probe rollouts, step labels, SRA of every head, selection, report.

    Writes heads.yaml (read by the trainer), sra.json, sra_heatmap.png, ensembles.png and report.md
    into `out`; a rerun with the same config continues where an interrupted run stopped.
    """
    from attnpo.find_heads import FindHeadsConfig, run_find_heads

    cfg = job_from_cli(FindHeadsConfig, config, overrides, no_wandb=no_wandb, overwrite=overwrite)
    result = run_find_heads(cfg, progress=not quiet)
    sra = "-" if result.ensemble_sra is None else f"{result.ensemble_sra:.3f}"
    typer.echo(
        f"heads {list(result.heads)}: ensemble SRA {sra}, best single head {result.best_head_sra:.3f}, "
        f"{result.responses} responses ({result.scored_now} scored now, {result.seconds:.1f} s)"
    )
    typer.echo(f"outputs: {result.out}")


@app.command("head-stability")
def head_stability(
    run_a: Annotated[Path, typer.Argument(help="find-heads output folder of one checkpoint.")],
    run_b: Annotated[Path, typer.Argument(help="find-heads output folder of another checkpoint.")],
):
    """Pearson r of per-head SRA between two checkpoints (two find-heads runs on the same probe set)."""
    from attnpo.stability import read_sra_table, sra_stability

    (a, probe_a), (b, probe_b) = read_sra_table(run_a), read_sra_table(run_b)
    r, n = sra_stability(a, b)
    typer.echo(f"Pearson r of per-head SRA: {r:.3f} over {n} heads")
    if probe_a.get("hash") != probe_b.get("hash"):
        typer.echo("note: the two runs probed different responses (probe hashes differ)")


@app.command("train")
def train(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    no_wandb: bool = NO_WANDB_OPTION,
    quiet: bool = QUIET_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
):
    """RL with AttnPO (or a length-penalty baseline) on TRL: rollouts, rewards, RLOO, step rescaling.

    Writes config.resolved.yaml, checkpoints/, metrics.jsonl, final/ and summary.json into `out`; a
    rerun with the same `out` resumes from the last checkpoint.
    """
    from attnpo.train import TrainConfig, run_train

    cfg = job_from_cli(TrainConfig, config, overrides, no_wandb=no_wandb, overwrite=overwrite)
    result = run_train(cfg, progress=not quiet)
    shown = {
        k: result.metrics[k]
        for k in ("attnpo/reward", "attnpo/accuracy", "attnpo/total_tokens")
        if k in result.metrics
    }
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    typer.echo(
        f"trained to step {result.steps}{resumed}; last step: "
        + ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
    )
    typer.echo(f"outputs: {result.out}")


def main() -> None:
    run_app(app)
