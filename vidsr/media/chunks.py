"""Cutting a video into chunks at its keyframes, and the packets that one chunk needs.

A chunk holds the frames whose pts fall in [start, end), where start and end are keyframes: every frame
belongs to exactly one chunk whatever the frame order. It is decoded from the keyframe before its own (an
open GOP's leading frames reference the previous GOP) and shipped to remote workers as its video packets in
a NUT container, which keeps the stream's time base and, with negative timestamps allowed, every pts.
"""

from __future__ import annotations

import bisect
import io
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from vidsr.errors import NON_NEGATIVE
from vidsr.media.info import copy_stream, open_container
from vidsr.media.source import PtsRange

log = logging.getLogger("vidsr")

AUTO_CHUNK_SECONDS = 60.0
AUTO_CHUNK_ABOVE = 300.0  # inputs longer than this (seconds) are chunked by default
# Chunks travel and are stored in NUT: it keeps any time base, and negative dts (B-frames) stay as they are.
CHUNK_FORMAT = "nut"
CHUNK_OPTIONS = {"avoid_negative_ts": "disabled"}


@dataclass(frozen=True)
class Chunk:
    """Chunk `index`: frames with pts in [start, end) (None: open), decoded from the keyframe `seek`; its
    packets run up to the keyframe `stop` (the one after `end`, so the next GOP's leading frames are in)."""

    index: int
    start: int | None
    end: int | None
    seek: int | None
    stop: int | None

    def pts_range(self, seek: bool = True) -> PtsRange:
        """The frames to upscale; without `seek` for packets that already begin at the seek point."""
        return PtsRange(self.start, self.end, self.seek if seek else None)


def resolve_chunk_seconds(requested: float | None, duration: float | None) -> float:
    """`--chunk-seconds`: as given (0: off), or by default ~60 s for inputs longer than 5 minutes and off below."""
    if requested is not None:
        return float(NON_NEGATIVE.check("chunk_seconds", requested))
    return AUTO_CHUNK_SECONDS if duration is not None and duration > AUTO_CHUNK_ABOVE else 0.0


def keyframe_times(path: Path) -> list[int] | None:
    """The pts of every keyframe of the first video stream, reading packets only (no decoding); None when
    some packet has no timestamp (elementary streams), which cannot be cut by time."""
    keyframes = []
    with open_container(path) as container:
        for packet in container.demux(container.streams.video[0]):
            if not packet.size:
                continue
            if packet.pts is None:
                return None
            if packet.is_keyframe:
                keyframes.append(packet.pts)
    return sorted(set(keyframes))


def plan_chunks(keyframes: list[int], time_base: Fraction, seconds: float) -> list[Chunk]:
    """Chunks of at least `seconds` each, cut at keyframes; one keyframe (or none), or `seconds` 0, is one chunk."""
    if seconds <= 0:
        return [Chunk(0, None, None, None, None)]
    step = seconds / float(time_base)
    starts = keyframes[:1]
    for pts in keyframes[1:]:
        if pts - starts[-1] >= step:
            starts.append(pts)
    bounds: list[int | None] = [None, *starts[1:], None]  # the first chunk also takes frames before a keyframe
    return [Chunk(i, bounds[i], bounds[i + 1], _neighbour(keyframes, bounds[i], -1),
                  _neighbour(keyframes, bounds[i + 1], +1)) for i in range(len(bounds) - 1)]


def _neighbour(keyframes: list[int], pts: int | None, side: int) -> int | None:
    """The keyframe before (side -1) or after (+1) the keyframe `pts`; None past either end."""
    if pts is None:
        return None
    i = bisect.bisect_left(keyframes, pts) + side
    return keyframes[i] if 0 <= i < len(keyframes) else None


def chunk_packets(path: Path, chunk: Chunk) -> bytes:
    """The video packets `chunk` decodes from (its seek keyframe up to its stop keyframe), as a NUT file."""
    buffer = io.BytesIO()
    with open_container(path) as source:
        video = source.streams.video[0]
        if chunk.seek is not None:
            source.seek(chunk.seek, stream=video)
        with av.open(buffer, "w", format=CHUNK_FORMAT, container_options=CHUNK_OPTIONS) as out:
            stream = copy_stream(out, video)
            for packet in source.demux(video):
                if not packet.size:
                    continue
                if chunk.stop is not None and packet.is_keyframe and packet.pts is not None \
                        and packet.pts >= chunk.stop:
                    break
                packet.stream = stream
                out.mux(packet)
    return buffer.getvalue()
