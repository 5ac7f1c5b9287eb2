"""`cotattn` command line: the MoLSAKI stages, each resumable with a strict config and progress bars."""

from __future__ import annotations

from pathlib import Path

import typer

from attncore.cli_support import (
    CONFIG_OPTION,
    NO_WANDB_OPTION,
    OVERRIDES_ARGUMENT,
    QUIET_OPTION,
    add_version_option,
    job_from_cli,
    library_progress,
    new_app,
    run_app,
)
from cotattn import __version__

app = new_app("MoLSAKI: Mixture-of-Layers distillation of a teacher's stepwise attention on key information.")
add_version_option(app, "cotattn", __version__)


@app.command()
def rationales(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    no_wandb: bool = NO_WANDB_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Teacher rationales in two phases: few-shot CoT on every problem, then the failures again with
    the gold answer in the prompt; kept only when the graded answer equals the gold (SVAMP's fixed
    800-problem training split by default). A rerun continues an interrupted one."""
    from cotattn.config import RationalesConfig
    from cotattn.rationales import RATIONALES_NAME, run_rationales

    cfg = job_from_cli(RationalesConfig, config, overrides, no_wandb=no_wandb)
    with library_progress(not quiet):
        summary = run_rationales(cfg, progress=not quiet)
    typer.echo(
        f"{summary['problems']} problems: kept {summary['kept_phase1']} in phase 1, "
        f"{summary['kept_phase2']} of {summary['guided']} guided in phase 2 ({summary['kept']} in all)"
    )
    typer.echo(f"rationales: {Path(cfg.out) / RATIONALES_NAME}")


@app.command("teacher-targets")
def teacher_targets(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Teacher side, offline: per-layer stepwise matrices of the teacher reading each rationale
    (an attention store), then the column difference G, p^t = softmax(G / tau1) and the mixed target
    A^t per example. A rerun continues where an interrupted one stopped."""
    from cotattn.config import TeacherTargetsConfig
    from cotattn.teacher_targets import run_teacher_targets

    cfg = job_from_cli(TeacherTargetsConfig, config, overrides)
    with library_progress(not quiet):
        summary = run_teacher_targets(cfg, progress=not quiet)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(summary.skipped.items())) or "0"
    typer.echo(f"examples {summary.examples}, with target {summary.with_target}, skipped {skipped}")
    weights = " ".join(f"{w:.3f}" for w in summary.mean_layer_weights)
    typer.echo(f"mean teacher layer weights p^t: {weights}")
    if summary.mean_target_row_entropy is not None:
        entropy = summary.mean_target_row_entropy
        typer.echo(f"targets' mean relative row entropy (1 = uniform rows): {entropy:.4f}")
    typer.echo(f"teacher targets: {cfg.out}")


@app.command()
def train(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    no_wandb: bool = NO_WANDB_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Distil a student from teacher rationales: MoLSAKI (arm.method=molsaki, the default), DSS, MMI,
    vanilla FT or single-layer pairs (sl). Resumes from the last checkpoint in `out`; the deployed
    student lands in `out/student` as a plain checkpoint."""
    from cotattn.config import TrainConfig
    from cotattn.train import STUDENT_DIR, run_training

    cfg = job_from_cli(TrainConfig, config, overrides, no_wandb=no_wandb)
    with library_progress(not quiet):
        summary = run_training(cfg, progress=not quiet)
    typer.echo(
        f"{summary['method']}: {summary['steps']} steps on {summary['examples']} examples "
        f"({summary['with_attention_target']} with an attention target), train loss {summary['train_loss']:.4f}"
    )
    typer.echo(f"student: {Path(cfg.out) / STUDENT_DIR}")


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv)
