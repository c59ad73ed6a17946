"""`sr.source`: a frame-accurate PyAV source filter, so a script needs no other source plugin.

The video packets are demuxed once (no decoding) to learn every frame's timestamp and the keyframes.
That gives the exact length, per-frame durations from real timestamps (VFR) and a keyframe table, so
frame N is decoded by seeking to the last keyframe at or before it and decoding forward; frames
decoded on the way land in a small LRU cache, and sequential requests just keep decoding.

Where the container's pts cannot be trusted (AVI numbers a B-frame stream's packets in decode order), frames are
placed by their order after the keyframe decoding started at, as `vidsr.media.stamps` stamps them; with
`assume_fps`, every frame is placed by its order from the start of the stream.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import vapoursynth as vs

from vidsr.errors import DecodeError, InputError, VidsrError
from vidsr.media.frames import frame_to_planes, plane_layout, working_format
from vidsr.media.info import ColorInfo, open_container, video_info
from vidsr.media.stamps import UNTRUSTED_PTS, parse_rate


@dataclass(frozen=True)
class Keyframe:
    pts: int  # when it is shown: where decoding must have started to show frame n
    dts: int  # when it is decoded: what some demuxers (MPEG-TS) seek by


@dataclass(frozen=True)
class FrameIndex:
    """Timestamps of every frame (presentation order) and the keyframes, in stream time base units."""

    timestamps: list[int]
    keyframes: list[Keyframe]  # sorted by pts
    first_dts: int
    last_duration: int

    def position(self, timestamp: int) -> int | None:
        i = bisect.bisect_left(self.timestamps, timestamp)
        return i if i < len(self.timestamps) and self.timestamps[i] == timestamp else None

    def keyframe_before(self, n: int) -> Keyframe:
        """The last keyframe shown at or before frame n (the stream start when there is none)."""
        i = bisect.bisect_right(self.keyframes, self.timestamps[n], key=lambda k: k.pts) - 1
        return self.keyframes[i] if i >= 0 else Keyframe(self.timestamps[0], self.first_dts)

    def durations(self) -> list[int]:
        """Per-frame durations: the gap to the next timestamp; the last frame keeps its packet duration."""
        gaps = [b - a for a, b in zip(self.timestamps, self.timestamps[1:], strict=False)]
        fallback = gaps[-1] if gaps else 1
        last = self.last_duration if self.last_duration > 0 else fallback
        return [gap if gap > 0 else fallback for gap in gaps] + [last]


def _timestamp(item: av.Packet | av.VideoFrame) -> int | None:
    return item.pts if item.pts is not None else item.dts


def index_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                  counted: bool = False) -> FrameIndex:
    """Demux the stream once, without decoding, to collect the timestamps of all frames shown; `counted`:
    frame n is at n whatever its packet says, decoding starts from the stream's start (`assume_fps`)."""
    stamps: list[tuple[int, int]] = []  # (timestamp, duration)
    keyframes = []
    first_dts = None
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue
            ts = _timestamp(packet)
            if ts is None:
                raise InputError(f"{container.name}: video packets carry no timestamps; remux it into mkv or mp4")
            dts = packet.dts if packet.dts is not None else ts
            first_dts = dts if first_dts is None else min(first_dts, dts)
            stamps.append((ts, packet.duration or 0))
            if packet.is_keyframe:
                keyframes.append(Keyframe(ts, dts))
    except av.FFmpegError as exc:
        raise DecodeError(f"{container.name}: cannot read video packets ({exc})") from None
    if not stamps:
        raise InputError(f"{container.name}: video stream has no frames")
    if counted:
        return FrameIndex(list(range(len(stamps))), [Keyframe(0, first_dts)], first_dts, 1)
    stamps.sort()
    return FrameIndex([ts for ts, _ in stamps], sorted(keyframes, key=lambda k: k.pts), first_dts, stamps[-1][1])


class FrameReader:
    """Random access to decoded frames as numpy planes. Thread safe: VapourSynth calls it from workers."""

    def __init__(self, path: str, cache_size: int, counted: bool = False) -> None:
        with open_container(path) as probed:  # probing decodes a frame, which fixes the decoder's threading
            self.info = video_info(probed, path)
        self.container = open_container(path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.index = index_packets(self.container, self.stream, counted)
        # frames placed by their order after the seek point rather than by their own pts
        self.by_order = counted or self.container.format.name in UNTRUSTED_PTS
        self._next_position = 0
        self.cache_size = max(cache_size, 1)
        self._cache: OrderedDict[int, list[np.ndarray]] = OrderedDict()
        self._frames = None  # decode iterator positioned after the last decoded frame
        self._last_decoded = -1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.index.timestamps)

    def planes(self, n: int) -> list[np.ndarray]:
        with self._lock:
            if n in self._cache:
                self._cache.move_to_end(n)
                return self._cache[n]
            decode_on = self._frames is not None and self._last_decoded < n and not self._needs_seek(n)
            if decode_on and (planes := self._decode_until(n)) is not None:
                return planes
            keyframe = self.index.keyframe_before(n)
            start = self.index.position(keyframe.pts) or 0
            # Demuxers seek by pts (Matroska, MP4) or by dts and loosely (MPEG-TS); a keyframe flag can also
            # mark a picture that does not decode on its own. Fall back until frame n comes out.
            for target, first in ((keyframe.pts, start), (keyframe.dts, start), (self.index.first_dts, 0)):
                self._seek(target, first)
                if (planes := self._decode_until(n)) is not None:
                    return planes
            self._frames = None
            raise DecodeError(f"{self.container.name}: frame {n} is missing from the decoded stream")

    def _needs_seek(self, n: int) -> bool:
        """Seek only when a keyframe after the decoder's position is closer to frame n than decoding on."""
        keyframe = self.index.position(self.index.keyframe_before(n).pts)
        return keyframe is not None and keyframe > self._last_decoded + 1

    def _seek(self, target: int, first: int) -> None:
        """Seek to the keyframe at or before `target`; frames shown before frame `first` are not kept
        (open-GOP leading pictures may reference data before the seek point)."""
        self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
        self.stream.codec_context.flush_buffers()
        self._frames = self.container.decode(self.stream)
        self._last_decoded = first - 1
        self._next_position = first

    def _decode_until(self, n: int) -> list[np.ndarray] | None:
        """Decode forward, caching frames, up to frame n; None if the stream skipped past it."""
        try:
            for frame in self._frames:
                position = self._next_position if self.by_order else self.index.position(_timestamp(frame))
                self._next_position += 1
                if position is None or position <= self._last_decoded:
                    continue
                self._last_decoded = position
                self._remember(position, frame_to_planes(frame))
                if position >= n:
                    break
        except av.FFmpegError as exc:
            self._frames = None
            raise DecodeError(f"{self.container.name}: frame {n} does not decode ({exc})") from None
        return self._cache.get(n)

    def _remember(self, position: int, planes: list[np.ndarray]) -> None:
        self._cache[position] = planes
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def clip_format(pix_fmt: str) -> vs.VideoFormat:
    """The VapourSynth format holding the planes `frame_to_planes` returns for this pix_fmt."""
    layout = plane_layout(working_format(pix_fmt))
    family = vs.GRAY if layout.is_gray else vs.RGB if layout.is_rgb else vs.YUV
    return vs.core.query_video_format(family, vs.INTEGER, layout.bit_depth, layout.log2_chroma_w,
                                      layout.log2_chroma_h)


def color_props(color: ColorInfo, family: vs.ColorFamily, chroma_location: int) -> dict[str, int]:
    """Stream colour description as VapourSynth frame props (H.273 codes; `_Range` 1 = full)."""
    props = {
        "_Matrix": 0 if family == vs.RGB else color.matrix,
        "_Primaries": color.primaries,
        "_Transfer": color.transfer,
        "_Range": int(color.full_range or family == vs.RGB),
    }
    if chroma_location > 0:  # FFmpeg's AVChromaLocation is VapourSynth's plus one, 0 = unspecified
        props["_ChromaLocation"] = chroma_location - 1
    return props


def clip_rate(index: FrameIndex, durations: list[int], time_base: Fraction, guessed: Fraction | None) -> Fraction:
    """Exact rate of a constant-rate stream; the average (or the container's guess) of a variable one."""
    if len(set(durations)) == 1:
        return 1 / (durations[0] * time_base)
    if guessed:
        return guessed
    span = (index.timestamps[-1] - index.timestamps[0] + durations[-1]) * time_base
    return Fraction(len(durations)) / span


def source(path: str | os.PathLike, cache_size: int = 16, assume_fps: str | float | None = None) -> vs.VideoNode:
    """Open the first video stream of a media file with PyAV, with frame-accurate random access.

    Args:
        path: video file (any container and codec FFmpeg decodes).
        cache_size: decoded frames kept for out-of-order requests (frames between a keyframe and
            the one asked for are decoded anyway and often asked for next).
        assume_fps: take the stream as constant-rate at this rate (24, 29.97, "24000/1001") and place its
            frames in order, whatever their timestamps (for files whose frames repeat one timestamp); frames
            are then found by decoding from the stream's start.

    Returns:
        A clip with the stream's exact frame count and planar format (GRAY, YUV or RGB, 8-16 bit;
        NV12-like layouts are made planar), each frame carrying `_DurationNum/_DurationDen` from its
        real timestamps, `_AbsoluteTime`, `_SARNum/_SARDen` and the colour props
        `_Matrix/_Primaries/_Transfer/_Range/_ChromaLocation` of the stream. The clip's frame rate is
        exact for constant-rate streams and the average rate for variable-rate ones.
    """
    try:
        rate = parse_rate(assume_fps)
    except ValueError as exc:
        raise vs.Error(f"vsvidsr.source: assume_fps: {exc}") from None
    try:
        reader = FrameReader(os.fspath(path), cache_size, counted=rate is not None)
    except VidsrError as exc:
        raise vs.Error(f"vsvidsr.source: {exc}") from None
    info = reader.info
    fmt = clip_format(info.pix_fmt)
    time_base = info.time_base if rate is None else 1 / rate
    durations = reader.index.durations()
    rate = clip_rate(reader.index, durations, time_base, info.frame_rate)
    constant_props = color_props(info.color, fmt.color_family, int(reader.stream.codec_context.chroma_sample_location))
    constant_props.update(_SARNum=info.sar.numerator, _SARDen=info.sar.denominator)
    blank = vs.core.std.BlankClip(width=info.width, height=info.height, format=fmt.id, length=len(reader),
                                  fpsnum=rate.numerator, fpsden=rate.denominator, keep=True)

    def deliver(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        try:
            planes = reader.planes(n)
        except VidsrError as exc:
            raise vs.Error(f"vsvidsr.source: {exc}") from None
        out = f.copy()
        for plane, data in enumerate(planes):
            np.copyto(np.asarray(out[plane]), data)
        duration = Fraction(durations[n]) * time_base
        out.props.update(constant_props, _DurationNum=duration.numerator, _DurationDen=duration.denominator,
                         _AbsoluteTime=float(reader.index.timestamps[n] * time_base))
        return out

    return vs.core.std.ModifyFrame(blank, blank, deliver)
