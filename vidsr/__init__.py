"""vidsr: video super-resolution with a frame-streaming PyAV + PyTorch engine.

Public API: `upscale_video`, `upscale_path`, `probe`, `load_model`, `list_models`, `Upscaler`, `Progress`.
"""

from vidsr.batch import upscale_path
from vidsr.errors import VidsrError
from vidsr.media.info import MediaInfo, probe
from vidsr.media.pipeline import Progress, upscale_video
from vidsr.upscaler import Upscaler
from vidsr.zoo import ModelInfo, list_models, load_model

__all__ = ["MediaInfo", "ModelInfo", "Progress", "Upscaler", "VidsrError", "list_models", "load_model", "probe",
           "upscale_path", "upscale_video"]
__version__ = "0.1.0"
