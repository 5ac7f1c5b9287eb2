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


@app.command("view")
def view(
    run: Annotated[
        Path, typer.Argument(help="An `attnpo train` output folder trained with log_rescaled=true.")
    ],
    step: Annotated[
        int | None, typer.Option("--step", help="Training step (default: the last with attenuated steps).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file (default: RUN/rescaled/view-step-N.html).")
    ] = None,
):
    """One rescaled response as HTML: each step shaded by its factor gamma, with its KFH score against the
    baseline and, on testbed problems, the oracle's label (the response with the most attenuated steps)."""
    from attnpo.rescaled_log import read_rescaled
    from attnpo.rescaled_view import pick_response, render_response

    row = pick_response(read_rescaled(run), step)
    path = out if out is not None else run / "rescaled" / f"view-step-{row['step']}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_response(row))
    pos = sum(s["pos"] for s in row["steps"])
    neg = sum(s["neg"] for s in row["steps"])
    typer.echo(
        f"step {row['step']}: {len(row['steps'])} steps, {pos} attenuated by Pos-Adv, {neg} by Neg-Adv -> {path}"
    )


@app.command("baselines")
def baselines(
    run: Annotated[
        Path, typer.Argument(help="An `attnpo train` output folder trained with log_rescaled=true.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also write the figures as JSON here.")
    ] = None,
):
    """Replay a run's logged rescaled responses under each S_base baseline (uniform, thinking), no model:
    the steps each attenuates and, on testbed problems, the oracle's labels of them (a markdown table)."""
    import json

    from attnpo.baseline_replay import figures_table, replay_run

    figures = replay_run(run)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2) + "\n")
    typer.echo(figures_table(figures))


@app.command("report")
def report(
    experiment: Annotated[
        Path, typer.Argument(help="Experiment folder: one subfolder per arm (and start/).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report folder (default: EXPERIMENT/report).")
    ] = None,
    reference: Annotated[
        str,
        typer.Option("--reference", help="Arm the thinking tokens and the paired accuracy test compare with."),
    ] = "a1_traineff",
    start: Annotated[
        str | None,
        typer.Option("--start", help="Starting model's row from a built testbed model (name or folder)."),
    ] = None,
):
    """Table of every arm's held-out figures (accuracy with its 95% interval and its paired test against
    the reference arm, thinking tokens, oracle redundant share, well-formed rate, attenuated steps) and
    curves of length and accuracy vs step."""
    from attnpo.rl_report import write_report

    folder = out if out is not None else experiment / "report"
    table, curves = write_report(experiment, folder, reference, start)
    typer.echo(table)
    typer.echo(
        f"report: {folder / 'report.md'}" + (f", curves: {curves}" if curves else ", no curves logged yet")
    )


def main() -> None:
    run_app(app)
