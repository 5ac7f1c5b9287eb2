"""`attncore`: rollouts, grading and the shared tools of both methods."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attncore.cli_support import (
    NO_WANDB_OPTION,
    QUIET_OPTION,
    config_from_cli,
    job_from_cli,
    library_progress,
    new_app,
    run_app,
)
from attncore.eval.cli import app as eval_app
from attncore.store.cli import app as store_app
from attncore.synthetic.cli import app as synth_app

app = new_app("Shared core of AttnPO and MoLSAKI: rollouts, grading, attention extraction, evaluation.")
app.add_typer(eval_app, name="eval")
app.add_typer(store_app)  # extract, view
app.add_typer(synth_app, name="synth")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
Overrides = Annotated[
    list[str] | None, typer.Argument(help="Dotted overrides, e.g. sampling.temperature=0.6 data.limit=8")
]


@app.command()
def rollout(
    config: ConfigOpt = None,
    overrides: Overrides = None,
    no_wandb: bool = NO_WANDB_OPTION,
    quiet: bool = QUIET_OPTION,
):
    """Sample graded completions into a resumable Parquet folder and print a summary table.

    With no arguments: the embedded SmolLM2 model on a slice of GSM8K (bundled problems when the
    reference data folder is absent), greedy, plain step-by-step template, graded by `#### N`.
    A rerun with the same config continues where an interrupted run stopped.
    """
    from attncore.rollout.job import RolloutJobConfig, run_rollouts

    cfg = job_from_cli(RolloutJobConfig, config, overrides, no_wandb=no_wandb)
    with library_progress(not quiet):
        summary = run_rollouts(cfg, progress=not quiet)
    typer.echo(summary.table())
    typer.echo(f"rollouts: {cfg.out}")


@app.command()
def grade(
    rollouts: Annotated[Path, typer.Argument(help="A rollout folder written by `attncore rollout`.")],
    mode: Annotated[str, typer.Option(help="auto | math | attnpo | gsm8k | choice | code")] = "auto",
    workers: Annotated[int, typer.Option(help="Grading worker processes.")] = 2,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per answer.")] = 5.0,
    quiet: bool = QUIET_OPTION,
):
    """Add correctness and token counts to every rollout of a folder (resumable), then summarise."""
    from attncore.rollout.grade import GradingConfig, grade_store
    from attncore.rollout.job import summarise
    from attncore.rollout.store import RolloutStore

    store = RolloutStore.open_existing(rollouts)
    cfg = config_from_cli(GradingConfig, None, [f"mode={mode}", f"workers={workers}", f"timeout_s={timeout}"])
    template = store.meta.get("prompt", {}).get("template", "r1")
    graded = grade_store(store, cfg, template, progress=not quiet)
    typer.echo(summarise(store, 0, 0.0).table())
    typer.echo(f"graded {graded} rollouts in {rollouts}")


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(help="A sweep file in wandb's format (e.g. experiments/eval/sweep.yaml).")],
    trials: Annotated[
        int | None, typer.Option("--trials", "-n", min=1, help="Run at most N trials (random and bayes need it).")
    ] = None,
    parallel: Annotated[int, typer.Option("--parallel", "-j", min=1, help="Trials run at once.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Sweep folder (default runs/sweeps/<name>).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random and bayes searches.")] = 0,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed trials again.")] = False,
    quiet: bool = QUIET_OPTION,
):
    """Run a wandb sweep file here, without a wandb server: each trial is the file's command with the
    sampled parameters (wandb's macros; `${args_no_hyphens}` gives our `key=value` overrides), its
    outputs in `<sweep folder>/trials/<id>`, its metric read from the trial's summary, each a wandb run
    grouped under the sweep (offline without an API key). Grid and random as in wandb, bayes through
    Optuna (SQLite). Rerun the same command to continue a killed sweep; finished trials are kept.
    Ends with results.md, results.csv and metric_vs_parameters.png in the sweep folder.
    """
    from attncore.sweeps.report import RESULTS_MD
    from attncore.sweeps.runner import run_sweep

    folder = run_sweep(file, trials, parallel, out, seed, retry_failed, progress=not quiet)
    typer.echo((folder / RESULTS_MD).read_text().rstrip())
    typer.echo(f"sweep: {folder}")


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv)
