"""`cotattn` command line. Subcommands are added as the method's stages land."""

from __future__ import annotations

from attncore.cli_support import add_version_option, new_app, run_app
from cotattn import __version__

app = new_app("MoLSAKI: Mixture-of-Layers distillation of a teacher's stepwise attention on key information.")
add_version_option(app, "cotattn", __version__)


def main() -> None:
    run_app(app)
