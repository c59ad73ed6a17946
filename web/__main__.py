"""`python -m web`: the same as `vidsr web` (same options, same one-line errors)."""

import sys

from vidsr.cli import main

sys.exit(main(["web", *sys.argv[1:]]))
