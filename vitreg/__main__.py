"""`python -m vitreg`."""

from vitreg.cli import main

main()
