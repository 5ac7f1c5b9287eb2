"""`cotattn` command line. Subcommands are added as the method's stages land."""

from __future__ import annotations

from typing import Annotated

import typer

from attncore.cli_support import new_app, run_app
from cotattn import __version__

app = new_app("MoLSAKI: Mixture-of-Layers distillation of a teacher's stepwise attention on key information.")


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"cotattn {__version__}")
    elif ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


def main() -> None:
    run_app(app)
