"""Shared command-line plumbing for the three CLIs: one-line errors and config loading from options."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypeVar

import typer

from attncore.config import Config, load_config
from attncore.errors import UserError
from attncore.sweeps.trial import trial_dir

C = TypeVar("C", bound=Config)

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML config file.", exists=False)
OVERRIDES_ARGUMENT = typer.Argument(None, help="Dotted overrides, e.g. sampling.temperature=0.6")


def new_app(help_text: str) -> typer.Typer:
    """A Typer app with plain (not rich) tracebacks and `-h` as an alias of `--help`."""
    return typer.Typer(
        help=help_text,
        no_args_is_help=False,
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def add_version_option(app: typer.Typer, name: str, version: str) -> None:
    """Give a command group `--version`, and its help when it is run without a subcommand."""

    @app.callback(invoke_without_command=True)
    def root(
        ctx: typer.Context,
        show_version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    ) -> None:
        if show_version:
            typer.echo(f"{name} {version}")
        elif ctx.invoked_subcommand is None:
            typer.echo(ctx.get_help())


def config_from_cli(cls: type[C], config: Path | None, overrides: list[str] | None) -> C:
    """Load `cls` from `--config` plus positional `key=value` overrides.

    Inside a sweep trial a job's `out` is the trial's folder, unless the command line sets `out=`, so
    the trials of one sweep never write into (or resume) each other's outputs.
    """
    overrides = list(overrides or [])
    folder = trial_dir()
    if folder is not None and "out" in cls.model_fields and not any(o.startswith("out=") for o in overrides):
        overrides.append(f"out={folder}")
    return load_config(cls, config, overrides)


def run_app(app: typer.Typer) -> None:
    """Run a CLI; a `UserError` becomes `error: <message>` on stderr and a non-zero exit."""
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
