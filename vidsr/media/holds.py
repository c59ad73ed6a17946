"""Held frames: a decoded frame that repeats the last frame upscaled reuses its output instead of the model.

Animation drawn on twos and threes, slides and screen recordings repeat a picture for several frames. A frame
is *held* when every sample of every plane (luma, chroma and alpha, as decoded, before the model) is within
`threshold` 8-bit levels of the *reference*, the last frame that was upscaled: a difference of d codes at
bit depth b counts d / 2**(b - 8) levels, so one level is 1 code at 8 bits and 4 codes at 10. Comparing with the
reference rather than with the previous frame keeps a slow change from creeping through under the threshold one
small step at a time: every picture written is the upscale of an input that differs from the frame's own input
by at most `threshold` levels in any sample.

The threshold is a largest absolute difference because what it must let through is local. Measured with
`python bench/reuse.py threshold` (docs/BENCHMARKS.md has the tables): 640x360, libx264 medium, yuv420p;
the pictures are generated, there being no real footage on the project's machine: a 1/f "natural" texture,
and flat cel shapes with dark outlines.

- Codec noise between the decoded frames of one held picture, within a GOP: natural picture 0, 1, 2 and 14
  levels at CRF 18, 23, 28 and 35 (most frames exactly equal); cel picture 43-45 levels at CRF 18-28, as
  x264 keeps refining the outlines. A keyframe inside the hold: 7-42 (natural), 46-82 (cel).
- The smallest real motion: a 1-pixel pan of the textures 76-235 levels, a 3x3 white dot moving one pixel
  18-133, one step of a fade to black over 1, 2 and 4 s at 24 fps 7-9, 4-7 and 2-6. Under 2 levels only
  what the decoded input does not show either: a 1-pixel pan of a smooth gradient (1 level), and a 2x2
  mid-grey dot (13 levels as drawn) whose motion x264 codes as 1 level at CRF 18 and drops at CRF 28.

No threshold separates the two: outline noise reaches 45 levels where a fade step has 2. PSNR does no better:
a moving 3x3 dot leaves 65-69 dB between frames, the outline noise 54 dB. Hence:

- `threshold=0` (exact repeats) is on by default: the reused output is the one the model gives that input.
- `NOISE_LEVELS`, 1 level (opt-in: `--reuse-held-frames` without a value), reuses 89% of the held cel frames
  at CRF 18 instead of 43%, and 94-100% of the natural ones at CRF 18-28 (87-100% exactly), while no motion
  measured stays under it except the two that the decoded input does not show; a reused frame is at most one
  level, the output format's own rounding step, from its input in any sample.
- Larger values trade pictures for speed knowingly: the outline noise above, a slow fade's steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vidsr.errors import InputError
from vidsr.media import HOLD_LEVELS, NOISE_LEVELS

ReuseHeld = bool | float

__all__ = ["NOISE_LEVELS", "HeldFrames", "ReuseHeld", "reuse_threshold"]


def reuse_threshold(reuse_held: ReuseHeld | None) -> float | None:
    """The threshold in 8-bit levels that `reuse_held` asks for, None when held frames are upscaled anew.

    True: exact repeats (0); False or None: off; a number: that many levels (0 is the same as True)."""
    if reuse_held is None or reuse_held is False:
        return None
    if reuse_held is True:
        return 0.0
    if HOLD_LEVELS.holds(reuse_held):
        return float(reuse_held)
    raise InputError(f"reuse_held must be True, False or {HOLD_LEVELS} (8-bit levels), got {reuse_held!r}")


class HeldFrames:
    """Tells held frames from the frames to upscale, in decode order. `bit_depth` None: float samples in [0, 1]."""

    def __init__(self, threshold: float, bit_depth: int | None) -> None:
        self.threshold = threshold
        # the largest difference allowed, in the planes' own units
        self._limit = threshold / 255 if bit_depth is None else math.floor(threshold * 2 ** (bit_depth - 8))
        self._reference: Sequence[np.ndarray] | None = None

    def held(self, planes: Sequence[np.ndarray]) -> bool:
        """Whether `planes` repeat the reference; if not, they become the reference (the caller keeps them
        unchanged while they are: decoded frames are never written to)."""
        if self._reference is not None and self.same(planes, self._reference):
            return True
        self._reference = planes
        return False

    def same(self, planes: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> bool:
        """Whether every plane of `planes` is within the threshold of `reference`'s."""
        return all(self._close(a, b) for a, b in zip(planes, reference, strict=True))

    def _close(self, a: np.ndarray, b: np.ndarray) -> bool:
        if a.shape != b.shape:
            return False
        # By blocks of rows: motion shows in the first ones, and comparing stops there (a moving 1080p frame
        # against a threshold: 19 ms as a whole on this project's CPU, 0.03 ms by blocks; a held one 2-6 ms).
        for top in range(0, a.shape[0], _BLOCK_ROWS):
            x, y = a[top:top + _BLOCK_ROWS], b[top:top + _BLOCK_ROWS]
            if np.array_equal(x, y):
                continue
            if not self._limit:
                return False
            difference = np.maximum(x, y)  # unsigned samples: no wrap-around, no wider copy
            difference -= np.minimum(x, y)
            if difference.max() > self._limit:
                return False
        return True


_BLOCK_ROWS = 64


def held_frames_note(reused: int) -> str:
    """What a progress bar says of the held frames that reused the output before them."""
    return f"{reused} held frames reused"
