"""vidsr: video super-resolution with a frame-streaming PyAV + PyTorch engine.

Public API: `upscale_video`, `upscale_path`, `probe`, `load_model`, `list_models`, `Upscaler`, `Progress`.
"""

import os

# After each parallel region torch's OpenMP threads spin, waiting for more work. On a machine with few cores that
# spinning takes the CPU from the decoder and encoder threads (a conv-then-sleep loop on 2 cores burns 2.2 s of
# CPU spinning, 1.3 s waiting passively; docs/BENCHMARKS.md). libgomp reads this once, when torch loads it, so
# it is set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# SVT-AV1 prints its banner and settings to stderr at every encoder start unless told otherwise (1: errors only).
os.environ.setdefault("SVT_LOG", "1")

from vidsr.batch import upscale_path  # noqa: E402
from vidsr.errors import VidsrError  # noqa: E402
from vidsr.media.info import MediaInfo, probe  # noqa: E402
from vidsr.media.pipeline import Progress, upscale_video  # noqa: E402
from vidsr.upscaler import Upscaler  # noqa: E402
from vidsr.zoo import ModelInfo, list_models, load_model  # noqa: E402

__all__ = ["MediaInfo", "ModelInfo", "Progress", "Upscaler", "VidsrError", "list_models", "load_model", "probe",
           "upscale_path", "upscale_video"]
__version__ = "0.1.0"
