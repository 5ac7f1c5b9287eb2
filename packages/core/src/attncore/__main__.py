"""`python -m attncore` runs the attncore CLI."""

from attncore.cli import main

main()
