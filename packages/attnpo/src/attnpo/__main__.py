"""`python -m attnpo` runs the attnpo CLI (and `accelerate launch -m attnpo train ...`)."""

from attnpo.cli import main

main()
