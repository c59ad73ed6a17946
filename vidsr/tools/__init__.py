"""Tools: the benchmark behind `vidsr bench` and the sample-clip generator (`python -m vidsr.tools.sample`).
Beside the frontends: nothing below imports it."""
