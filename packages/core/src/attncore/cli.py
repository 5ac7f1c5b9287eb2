"""`attncore`: rollouts, grading and the shared tools of both methods."""

from __future__ import annotations

from attncore.cli_support import new_app, run_app

app = new_app("Shared core of AttnPO and MoLSAKI: rollouts, grading, attention extraction, evaluation.")


def main() -> None:
    run_app(app)
