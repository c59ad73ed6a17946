"""`python -m vidsr`: the same command line as `vidsr`."""

import sys

from vidsr.cli import main

sys.exit(main())
