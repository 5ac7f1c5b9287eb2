"""`attncore eval`: run an evaluation suite, and `attncore eval compare` runs side by side.

`attncore eval [--config FILE] [key=value ...]` runs a suite (`run` is the default subcommand, so
`attncore eval run ...` is the same); `attncore eval compare RUN_A RUN_B ...` compares run folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from attncore.cli_support import NO_WANDB_OPTION, QUIET_OPTION, job_from_cli, library_progress


class _RunByDefault(TyperGroup):
    """A group whose first argument, when it names no subcommand, starts the `run` subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RunByDefault,
    help="Evaluate a model on a suite of benchmarks (default: run), or compare evaluated runs.",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Suite YAML (see experiments/eval/).")]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Dotted overrides, e.g. out=runs/eval/x benchmarks.gsm8k.limit=50"),
]


@app.command()
def run(
    config: ConfigOpt = None,
    overrides: Overrides = None,
    no_wandb: bool = NO_WANDB_OPTION,
    quiet: bool = QUIET_OPTION,
):
    """Run a suite: rollouts, grades and metrics per benchmark, then the run's report and plots.

    With no arguments: the CPU suite (the embedded SmolLM2 on a slice of GSM8K, greedy). Rerunning the
    same config reuses every finished rollout and grade, and continues a killed run.
    """
    from attncore.eval.config import SuiteConfig
    from attncore.eval.suite import run_suite

    cfg = job_from_cli(SuiteConfig, config, overrides, no_wandb=no_wandb)
    with library_progress(not quiet):
        report = run_suite(cfg, progress=not quiet)
    typer.echo(report.markdown())
    typer.echo(f"\nresults: {cfg.out}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders written by `attncore eval`.")],
    baseline: Annotated[
        Path | None, typer.Option(help="Run the deltas and AES are against (default: the first).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write compare.md and accuracy_vs_tokens.png here.")
    ] = None,
):
    """Print runs side by side per benchmark with deltas and AES against a baseline run."""
    from attncore.eval.compare import write_comparison

    typer.echo(write_comparison(runs, baseline, out))
