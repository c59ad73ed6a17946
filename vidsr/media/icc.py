"""ICC colour profiles of pictures, carried from the input to a PNG or JPEG output.

FFmpeg's PNG and JPEG writers would embed a frame's profile, but PyAV can neither attach one to a frame nor read
one safely (PyAV 19 frees the profile's name twice), so the profile is read with Pillow and written into the
finished file: a phone photo in Display P3 keeps its colours instead of being shown as sRGB.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that describe the colour space another way; PNG gives some of them precedence over iCCP.
_PNG_COLOUR_CHUNKS = (b"iCCP", b"sRGB", b"cICP", b"gAMA", b"cHRM")
_JPEG_ICC_MARKER = b"ICC_PROFILE\0"
_JPEG_SEGMENT_DATA = 65_519  # 65,535 less the length field, the marker name and the sequence bytes


def read_profile(path: str | Path) -> bytes | None:
    """The picture's ICC profile, or None (no profile, or not a picture Pillow reads)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.info.get("icc_profile") or None
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def embed_profile(path: Path, profile: bytes) -> bool:
    """Write `profile` into the PNG or JPEG file at `path`; False for any other file."""
    data = path.read_bytes()
    if data.startswith(PNG_SIGNATURE):
        path.write_bytes(_png_with(data, profile))
    elif data.startswith(b"\xff\xd8"):
        path.write_bytes(_jpeg_with(data, profile))
    else:
        return False
    return True


def _png_with(data: bytes, profile: bytes) -> bytes:
    """An iCCP chunk right after IHDR (it must come before PLTE and IDAT), other colour descriptions removed."""
    body = b"ICC profile\0\0" + zlib.compress(profile)  # name, NUL, compression method 0 (zlib)
    iccp = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    parts, pos = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if kind not in _PNG_COLOUR_CHUNKS:
            parts.append(data[pos:end])
        if kind == b"IHDR":
            parts.append(iccp)
        pos = end
    return b"".join(parts)


def _jpeg_with(data: bytes, profile: bytes) -> bytes:
    """APP2 ICC_PROFILE segments after SOI and the JFIF APP0 segment (which must come first)."""
    pos = 2
    if data[2:4] == b"\xff\xe0":
        pos += 2 + struct.unpack(">H", data[4:6])[0]
    pieces = [profile[i : i + _JPEG_SEGMENT_DATA] for i in range(0, len(profile), _JPEG_SEGMENT_DATA)]
    segments = b"".join(
        b"\xff\xe2" + struct.pack(">H", 2 + len(_JPEG_ICC_MARKER) + 2 + len(piece)) + _JPEG_ICC_MARKER
        + bytes([number, len(pieces)]) + piece
        for number, piece in enumerate(pieces, start=1)
    )
    return data[:pos] + segments + data[pos:]
