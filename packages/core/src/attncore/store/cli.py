"""`attncore extract` (examples in, attention store out) and `attncore view` (one rollout as a page and
heatmaps). Mounted on the `attncore` app; data-parallel runs start it under `accelerate launch`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attncore.cli_support import CONFIG_OPTION, OVERRIDES_ARGUMENT, config_from_cli, library_progress, new_app
from attncore.errors import UserError

app = new_app("Attention extraction and its viewer.")


@app.command()
def extract(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Extract AttnPO step scores or MoLSAKI stepwise matrices into a resumable attention store.

    Reads a rollout folder or a problems file (`input.path`), writes `out` with the resolved config
    beside it, and continues a store that an interrupted run left. For several GPUs or nodes, start it
    with `accelerate launch -m attncore extract ...`: each process extracts its own slice.
    """
    from attncore.store.config import ExtractConfig
    from attncore.store.extract import run_extraction

    cfg = config_from_cli(ExtractConfig, config, overrides)
    with library_progress(not quiet):
        summary = run_extraction(cfg, progress=not quiet)
    from accelerate import PartialState

    if PartialState().is_main_process:
        typer.echo(summary.table())
        typer.echo(f"attention store: {cfg.out}")


@app.command()
def view(
    store: Annotated[Path, typer.Option("--store", "-s", help="An attention store folder.")],
    rollout: Annotated[str, typer.Option("--rollout", "--example", "-r", help="Rollout or example id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the page and the PNGs.")],
    layer: Annotated[
        list[int] | None,
        typer.Option("--layer", "-l", help="MoLSAKI: also a heatmap of this layer (repeatable)."),
    ] = None,
    width: Annotated[int, typer.Option(help="PNG width in pixels.")] = 1200,
    height: Annotated[int, typer.Option(help="PNG height in pixels.")] = 800,
) -> None:
    """Write one rollout's steps shaded by score as a self-contained HTML page, and PNG heatmaps
    (step × head for AttnPO stores; step × critical unit, layer mean and chosen layers, for MoLSAKI)."""
    from attncore.store.store import AttentionStore
    from attncore.store.view import write_view

    if not store.is_dir():
        raise UserError(f"attention store not found: {store}")
    for path in write_view(AttentionStore.open(store), rollout, out, layers=layer, size=(width, height)):
        typer.echo(str(path))
