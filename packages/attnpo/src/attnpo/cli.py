"""`attnpo` command line. Subcommands are added as the method's stages land."""

from __future__ import annotations

from typing import Annotated

import typer

from attncore.cli_support import new_app, run_app
from attnpo import __version__

app = new_app("AttnPO: key-focus heads and attention-guided advantage rescaling for RL against overthinking.")


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"attnpo {__version__}")
    elif ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


def main() -> None:
    run_app(app)
