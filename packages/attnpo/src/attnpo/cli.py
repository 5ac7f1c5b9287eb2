"""`attnpo` command line. Subcommands are added as the method's stages land."""

from __future__ import annotations

from attncore.cli_support import add_version_option, new_app, run_app
from attnpo import __version__

app = new_app("AttnPO: key-focus heads and attention-guided advantage rescaling for RL against overthinking.")
add_version_option(app, "attnpo", __version__)


def main() -> None:
    run_app(app)
