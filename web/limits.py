"""What the demo server accepts: upload size, duration and resolution, set by `vidsr web` flags."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vidsr.errors import InputError
from vidsr.media.info import MediaInfo

MIB = 1024 * 1024


def parse_resolution(text: str) -> tuple[int, int]:
    """`"1920x1080"` -> (1920, 1080)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match or 0 in (width_height := (int(match[1]), int(match[2]))):
        raise ValueError(f"resolution must look like 1920x1080, got {text!r}")
    return width_height


@dataclass(frozen=True)
class Limits:
    """Upper bounds for one upload; None means unlimited."""

    max_upload_mb: float | None = 500
    max_duration_s: float | None = 600
    max_resolution: tuple[int, int] | None = (1920, 1080)

    @property
    def max_upload_bytes(self) -> int | None:
        return None if self.max_upload_mb is None else int(self.max_upload_mb * MIB)

    def check_size(self, path: Path) -> None:
        size = path.stat().st_size
        if self.max_upload_bytes is not None and size > self.max_upload_bytes:
            raise InputError(f"the file is {size / MIB:.1f} MB; this server accepts up to {self.max_upload_mb:g} MB")

    def check_media(self, info: MediaInfo) -> None:
        """Reject media over the duration or resolution limit (a portrait frame is compared turned sideways)."""
        video = info.video
        if self.max_resolution is not None:
            long_side, short_side = sorted((video.width, video.height), reverse=True)
            max_long, max_short = sorted(self.max_resolution, reverse=True)
            if long_side > max_long or short_side > max_short:
                raise InputError(f"the picture is {video.width}x{video.height}; this server accepts up to "
                                 f"{self.max_resolution[0]}x{self.max_resolution[1]}")
        if self.max_duration_s is not None and not info.is_image and (video.duration or 0) > self.max_duration_s:
            raise InputError(f"the video lasts {video.duration:.0f} s; this server accepts up to "
                             f"{self.max_duration_s:g} s")

    def describe(self) -> str:
        parts = []
        if self.max_upload_mb is not None:
            parts.append(f"files up to {self.max_upload_mb:g} MB")
        if self.max_duration_s is not None:
            parts.append(f"videos up to {self.max_duration_s:g} s")
        if self.max_resolution is not None:
            parts.append(f"pictures up to {self.max_resolution[0]}x{self.max_resolution[1]}")
        return ", ".join(parts) or "no limits"
