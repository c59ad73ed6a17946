"""vidsr: video super-resolution with a frame-streaming PyAV + PyTorch engine.

Public API: `upscale_video`, `upscale_path`, `probe`, `load_model`, `list_models`, `Upscaler`, `Progress`.
Held frames (a drawing on twos, a slide) reuse the output of the frame they repeat: `reuse_held=` of
`upscale_video` and `upscale_path` (exact repeats by default; a threshold in 8-bit levels; False for none).
"""

import importlib
import os
from typing import Any

# After each parallel region torch's OpenMP threads spin, waiting for more work. On a machine with few cores that
# spinning takes the CPU from the decoder and encoder threads (a conv-then-sleep loop on 2 cores burns 2.2 s of
# CPU spinning, 1.3 s waiting passively; docs/BENCHMARKS.md). libgomp reads this once, when torch loads it, so
# it is set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# SVT-AV1 prints its banner and settings to stderr at every encoder start unless told otherwise (1: errors only).
os.environ.setdefault("SVT_LOG", "1")

# The public names and their modules. They are imported on first use, so that `import vidsr` (and with it
# `vidsr --help`, `vidsr models`) does not load torch and PyAV, which take seconds of CPU.
_API = {"upscale_path": "vidsr.jobs.batch", "VidsrError": "vidsr.errors", "MediaInfo": "vidsr.media.info",
        "probe": "vidsr.media.info", "Progress": "vidsr.media.pipeline", "upscale_video": "vidsr.media.pipeline",
        "Upscaler": "vidsr.compute.upscaler", "ModelInfo": "vidsr.models.zoo", "list_models": "vidsr.models.zoo",
        "load_model": "vidsr.models.zoo"}

__all__ = sorted(_API)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'vidsr' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
