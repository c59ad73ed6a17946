"""Value types describing decoded pictures, shared by every layer: the plane layout of a pixel format and the
colour description of a stream. They sit at the bottom so that compute (upscaler, runner), color and models know
nothing about containers, and the media layer above them fills these in from what it decodes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# ITU-T H.273 code points (the numbering FFmpeg, PyAV and VapourSynth props share).
MATRIX_NAMES = {0: "rgb", 1: "bt709", 2: "unspecified", 5: "bt470bg", 6: "smpte170m", 9: "bt2020nc", 10: "bt2020c"}
PRIMARIES_NAMES = {1: "bt709", 2: "unspecified", 5: "bt470bg", 6: "smpte170m", 9: "bt2020"}
TRANSFER_NAMES = {1: "bt709", 2: "unspecified", 6: "smpte170m", 13: "iec61966-2-1", 14: "bt2020-10",
                  16: "smpte2084", 18: "arib-std-b67"}
UNSPECIFIED = 2


@dataclass(frozen=True)
class ColorInfo:
    """Colour description of a video stream, as H.273 codes (2 = unspecified)."""

    matrix: int = UNSPECIFIED
    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED
    full_range: bool = False
    chroma_location: int = 0  # AVChromaLocation: 0 unspecified, 1 left, 2 center, 3 top-left, 4 top, ...

    @property
    def chroma_siting(self) -> tuple[bool, bool]:
        """(horizontally centred, vertically centred) chroma samples; unspecified means MPEG-2 'left'."""
        location = self.chroma_location or 1
        return location in (2, 4, 6), location in (1, 2)

    def resolved_matrix(self, height: int) -> int:
        """The matrix to convert with: the tagged one, else FFmpeg's convention (BT.601 below 720 lines)."""
        if self.matrix not in (0, UNSPECIFIED, 3):  # 0 (RGB) says nothing about a YUV rendition
            return self.matrix
        return 1 if height >= 720 else 6

    def describe(self) -> str:
        return (f"matrix={MATRIX_NAMES.get(self.matrix, self.matrix)} "
                f"range={'full' if self.full_range else 'limited'} "
                f"primaries={PRIMARIES_NAMES.get(self.primaries, self.primaries)} "
                f"transfer={TRANSFER_NAMES.get(self.transfer, self.transfer)}")



@dataclass(frozen=True)
class PlaneLayout:
    """How a planar pix_fmt stores a picture: plane count, chroma subsampling and sample depth."""

    pix_fmt: str
    bit_depth: int
    log2_chroma_w: int
    log2_chroma_h: int
    is_rgb: bool
    planes: int

    @property
    def dtype(self) -> np.dtype:
        import numpy as np  # lazily: the layers that only name these types need no numpy

        return np.dtype(np.uint8 if self.bit_depth <= 8 else np.uint16)

    @property
    def is_gray(self) -> bool:
        return self.planes == 1

    @property
    def has_alpha(self) -> bool:
        """The last plane is alpha, at full resolution."""
        return self.planes == 4

    def without_alpha(self) -> PlaneLayout:
        """The colour planes' layout (what colour conversion works on)."""
        return replace(self, planes=3) if self.has_alpha else self
