"""vidsr for VapourSynth: `sr.upscale` filter and `sr.source` PyAV source."""
