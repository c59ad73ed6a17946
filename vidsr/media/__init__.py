"""Media stages: probing, decoding, batching, encoding and the streaming pipeline."""

from vidsr.errors import NumberRange

# Video encoders vidsr offers by name (`vidsr upscale -c`), here so that the CLI's help needs no PyAV.
ENCODERS = ("libx264", "libx265", "libsvtav1", "libvpx-vp9", "ffv1", "prores_ks", "h264_nvenc", "hevc_nvenc")
# `--reuse-held-frames` without a value: 1 level of 8 bits; vidsr/media/holds.py says why.
NOISE_LEVELS = 1.0
HOLD_LEVELS = NumberRange(0, 255)  # the thresholds that `reuse_held` takes
