"""Shared command-line plumbing for the three CLIs: one-line errors and config loading from options."""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import typer

from attncore.config import Config, load_config
from attncore.errors import UserError
from attncore.sweeps.trial import trial_dir

C = TypeVar("C", bound=Config)

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML config file.", exists=False)
OVERRIDES_ARGUMENT = typer.Argument(None, help="Dotted overrides, e.g. sampling.temperature=0.6")
# The flags every job command shares (`job_from_cli` applies the first and the last to the config).
NO_WANDB_OPTION = typer.Option(False, "--no-wandb", help="Turn wandb logging off.")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No progress bars.")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Discard what the output folder holds.")


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


def job_from_cli(
    cls: type[C],
    config: Path | None,
    overrides: list[str] | None,
    *,
    no_wandb: bool = False,
    overwrite: bool = False,
) -> C:
    """`config_from_cli`, then the shared flags: `--no-wandb` turns the job's `tracking` off and
    `--overwrite` sets its `overwrite` (each only on a config that has the field)."""
    cfg = config_from_cli(cls, config, overrides)
    if no_wandb:
        cfg.tracking.mode = "disabled"
    if overwrite:
        cfg.overwrite = True
    return cfg


@contextlib.contextmanager
def library_progress(enabled: bool) -> Iterator[None]:
    """Within the block, let the libraries' own progress bars (model loading) show only if `enabled`."""
    if enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# Errors of where a file goes, which the user fixes (another folder, permissions, space), not bugs.
PLACEMENT_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EEXIST,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENAMETOOLONG,
    errno.EFBIG,
}


def _fail(message: str, code: int) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


def run_app(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run a CLI on `argv` (default: the process's arguments). A user mistake (a `UserError`, a bad
    option, a folder that cannot be written) becomes one line `error: <message>` on stderr and exit
    status 2; Ctrl-C exits 130."""
    try:
        code = app(args=argv, standalone_mode=False)
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except typer.TyperException as exc:  # a usage mistake: unknown option, bad option value
        message = exc.format_message() if hasattr(exc, "format_message") else exc.message
        _fail(f"{message} (see --help)", exc.exit_code)
    except OSError as exc:
        if exc.errno not in PLACEMENT_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}", UserError.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
