"""vidsr for VapourSynth: `sr.upscale` filter and `sr.source` PyAV source.

    import vsvidsr as sr
    clip = sr.source("in.mp4")
    clip = sr.upscale(clip, model="espcn-x2", num_streams=2)
    clip.set_output()
"""

from vsvidsr.avsource import source
from vsvidsr.filter import upscale

__all__ = ["source", "upscale"]
