"""`python -m web`: the same as `vidsr web`."""

import argparse
import sys

from web.cli import add_arguments, run

parser = argparse.ArgumentParser(prog="python -m web", description="vidsr web demo (Gradio).")
add_arguments(parser)
sys.exit(run(parser.parse_args()))
