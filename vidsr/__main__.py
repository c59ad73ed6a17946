"""`python -m vidsr`: the same command line as `vidsr`."""

from vidsr.cli import run

run()
