"""Quality measurement: metrics, MATLAB-compatible resize, evaluation on image sets, NIQE and the real-world
protocol. Beside the frontends: nothing below imports it."""
