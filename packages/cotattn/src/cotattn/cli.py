"""`cotattn` command line: the MoLSAKI stages, each resumable with a strict config and progress bars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attncore.cli_support import (
    CONFIG_OPTION,
    OVERRIDES_ARGUMENT,
    add_version_option,
    config_from_cli,
    library_progress,
    new_app,
    run_app,
)
from cotattn import __version__

app = new_app("MoLSAKI: Mixture-of-Layers distillation of a teacher's stepwise attention on key information.")
add_version_option(app, "cotattn", __version__)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


@app.command("teacher-targets")
def teacher_targets(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    quiet: Quiet = False,
) -> None:
    """Teacher side, offline: per-layer stepwise matrices of the teacher reading each rationale
    (an attention store), then the column difference G, p^t = softmax(G / tau1) and the mixed target
    A^t per example. A rerun continues where an interrupted one stopped."""
    from cotattn.config import TeacherTargetsConfig
    from cotattn.teacher_targets import run_teacher_targets

    cfg = config_from_cli(TeacherTargetsConfig, config, overrides)
    with library_progress(not quiet):
        summary = run_teacher_targets(cfg, progress=not quiet)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(summary.skipped.items())) or "0"
    typer.echo(f"examples {summary.examples}, with target {summary.with_target}, skipped {skipped}")
    weights = " ".join(f"{w:.3f}" for w in summary.mean_layer_weights)
    typer.echo(f"mean teacher layer weights p^t: {weights}")
    typer.echo(f"teacher targets: {cfg.out}")


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv)
