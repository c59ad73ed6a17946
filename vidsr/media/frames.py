"""av.VideoFrame <-> numpy planes, zero-copy where FFmpeg's line padding allows.

The engine works on planar frames (YUV, GRAY or GBR, 8 to 16 bit, optionally with an alpha plane) so colour
conversion runs as tensor ops on the device instead of through swscale's rgb24.
"""

from __future__ import annotations

import av
import numpy as np

from vidsr.errors import InputError
from vidsr.formats import PlaneLayout

# Packed or semi-planar formats mapped to the planar layout with the same sampling and depth.
_PLANAR_EQUIVALENT = {
    "nv12": "yuv420p", "nv21": "yuv420p", "p010le": "yuv420p10le", "p016le": "yuv420p16le",
    "nv16": "yuv422p", "yuyv422": "yuv422p", "uyvy422": "yuv422p", "nv24": "yuv444p",
    "rgb24": "gbrp", "bgr24": "gbrp", "rgba": "gbrp", "bgra": "gbrp", "argb": "gbrp", "abgr": "gbrp",
    "rgb0": "gbrp", "bgr0": "gbrp", "0rgb": "gbrp", "pal8": "gbrp", "rgb48le": "gbrp16le", "rgba64le": "gbrp16le",
    "ya8": "gray", "ya16le": "gray16le", "monob": "gray", "monow": "gray",
}
# The same with the alpha kept. FFmpeg has no planar grey + alpha, so that is worked on as GBR + alpha and
# written back as grey + alpha where the encoder takes it (`GREY_WITH_ALPHA`).
_PLANAR_WITH_ALPHA = {"rgba": "gbrap", "bgra": "gbrap", "argb": "gbrap", "abgr": "gbrap", "pal8": "gbrap",
                      "rgba64le": "gbrap16le", "ya8": "gbrap", "ya16le": "gbrap16le"}
GREY_WITH_ALPHA = ("ya8", "ya16be", "ya16le")


def _is_engine_planar(fmt: av.VideoFormat) -> bool:
    comps = fmt.components
    colour = [c for c in comps if not c.is_alpha]
    return (
        (fmt.is_planar or len(comps) == 1) and not fmt.is_big_endian and not fmt.has_palette and not fmt.is_bayer
        and len(colour) in (1, 3) and (len(comps) == len(colour) or (len(colour) == 3 and comps[-1].is_alpha))
        and all(c.bits in (8, 9, 10, 12, 14, 16) for c in comps) and len({c.plane for c in comps}) == len(comps)
    )


def working_format(pix_fmt: str, alpha: bool = False) -> str:
    """The planar format frames of `pix_fmt` are processed in (itself when already suitable). Alpha is
    dropped unless `alpha` is set and a planar format can hold it."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        raise InputError(f"unknown pixel format {pix_fmt!r}") from None
    if fmt.is_big_endian and pix_fmt.endswith("be"):  # 16-bit PNG decodes to gray16be / rgb48be / rgba64be
        return working_format(pix_fmt[:-2] + "le", alpha)
    if alpha and pix_fmt in _PLANAR_WITH_ALPHA:
        return _PLANAR_WITH_ALPHA[pix_fmt]
    if _is_engine_planar(fmt):
        if not alpha and len(fmt.components) == 4:
            return pix_fmt.replace("yuva", "yuv", 1).replace("gbrap", "gbrp", 1)
        return pix_fmt
    if pix_fmt in _PLANAR_EQUIVALENT:
        return _PLANAR_EQUIVALENT[pix_fmt]
    raise InputError(f"unsupported pixel format {pix_fmt!r}")


def plane_layout(pix_fmt: str) -> PlaneLayout:
    fmt = av.VideoFormat(pix_fmt)
    if not _is_engine_planar(fmt):
        raise InputError(f"unsupported pixel format {pix_fmt!r}")
    # chroma_width/height of a 2^k wide frame reveal the subsampling exponents.
    probe_size = 1 << 8
    return PlaneLayout(
        pix_fmt=pix_fmt,
        bit_depth=fmt.components[0].bits,
        log2_chroma_w=(probe_size // fmt.chroma_width(probe_size)).bit_length() - 1,
        log2_chroma_h=(probe_size // fmt.chroma_height(probe_size)).bit_length() - 1,
        is_rgb=fmt.is_rgb,
        planes=len(fmt.components),
    )


def frame_to_planes(frame: av.VideoFrame, alpha: bool = False) -> list[np.ndarray]:
    """Views of the frame's planes as (height, width) uint8/uint16 arrays without line padding.

    Frames not already in a planar engine format are converted first (rare: packed RGB, NV12...).
    For gbrp formats the planes are returned in R, G, B order. Alpha, kept with `alpha`, is the last plane.
    """
    target = working_format(frame.format.name, alpha)
    if target != frame.format.name:
        frame = frame.reformat(format=target)
    dtype = np.dtype(np.uint8 if frame.format.components[0].bits <= 8 else np.uint16)
    planes = []
    for plane in frame.planes:
        row = plane.line_size // dtype.itemsize
        data = np.frombuffer(plane, dtype=dtype, count=row * plane.height).reshape(plane.height, row)
        planes.append(data[:, : plane.width])
    if frame.format.is_rgb:
        planes = [planes[2], planes[0], planes[1], *planes[3:]]  # G, B, R (, A) -> R, G, B (, A)
    return planes


def planes_to_frame(planes: list[np.ndarray], pix_fmt: str) -> av.VideoFrame:
    """Build a frame of `pix_fmt` from (height, width) planes (R, G, B order for gbrp formats)."""
    height, width = planes[0].shape
    frame = av.VideoFrame(width, height, pix_fmt)
    if frame.format.is_rgb:
        planes = [planes[1], planes[2], planes[0], *planes[3:]]  # R, G, B (, A) -> G, B, R (, A)
    for plane, data in zip(frame.planes, planes, strict=True):
        row = plane.line_size // data.itemsize
        dest = np.frombuffer(plane, dtype=data.dtype, count=row * plane.height).reshape(plane.height, row)
        dest[:, : plane.width] = data
    return frame


def crop_planes(planes: list[np.ndarray], layout: PlaneLayout, width: int, height: int) -> list[np.ndarray]:
    """Views of the top-left width x height picture (chroma planes rounded up like FFmpeg)."""
    if planes[0].shape == (height, width):
        return planes
    chroma = (-(-height >> layout.log2_chroma_h), -(-width >> layout.log2_chroma_w))
    colour = [planes[0][:height, :width]] + [p[: chroma[0], : chroma[1]] for p in planes[1:3]]
    return colour + [p[:height, :width] for p in planes[3:]]
