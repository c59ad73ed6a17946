"""Stream facts the engine relies on, read once from the container (`vidsr probe`)."""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from vidsr.errors import InputError
from vidsr.formats import ColorInfo

if TYPE_CHECKING:  # PyAV is imported where it is used: the web demo's option parser imports this module
    import av


Chromaticity = tuple[Fraction, Fraction]


@dataclass(frozen=True)
class MasteringDisplay:
    """SMPTE ST 2086 mastering display colour volume (HDR10 static metadata): CIE 1931 xy, cd/m2."""

    red: Chromaticity
    green: Chromaticity
    blue: Chromaticity
    white: Chromaticity
    min_luminance: Fraction
    max_luminance: Fraction

    def describe(self) -> str:
        xy = " ".join(f"{name}({float(x):.4f},{float(y):.4f})"
                      for name, (x, y) in zip("RGBW", (self.red, self.green, self.blue, self.white), strict=True))
        return f"mastering display {xy}, {float(self.min_luminance):g}-{float(self.max_luminance):g} cd/m2"


@dataclass(frozen=True)
class ContentLight:
    """CTA-861.3 content light levels (HDR10 static metadata), cd/m2."""

    max_cll: int
    max_fall: int


@dataclass(frozen=True)
class VideoInfo:
    index: int
    codec: str
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    sar: Fraction
    frame_rate: Fraction | None
    time_base: Fraction
    duration: float | None
    frame_count: int | None
    rotation: int
    color: ColorInfo
    mastering_display: MasteringDisplay | None = None
    content_light: ContentLight | None = None
    interlaced: bool = False  # the first frame is coded as two fields
    sar_tagged: bool = False  # the file states its SAR (an explicit 1:1 is kept as such)
    alpha_unused: bool = False  # an alpha channel the decoder adds, opaque everywhere (CMYK JPEG)
    icc_profile: bool = False  # the first frame carries an ICC colour profile
    average_rate: Fraction | None = None  # frames over duration, where FFmpeg could tell

    @property
    def constant_rate(self) -> Fraction:
        """The rate to write where the output holds one rate and no timestamps (y4m): the guessed rate, or the
        average where they disagree (a variable-rate stream, or a guess misled by B-frames in AVI)."""
        guessed, average = self.frame_rate, self.average_rate
        if average and (not guessed or abs(guessed / average - 1) > Fraction(1, 100)):
            return average
        return guessed or average or Fraction(25)

    @property
    def estimated_frames(self) -> int | None:
        """Frame count if the container knows it, else duration x rate, else None (unknown)."""
        if self.frame_count:
            return self.frame_count
        if self.duration and self.frame_rate:
            return max(1, round(self.duration * float(self.frame_rate)))
        return None


@dataclass(frozen=True)
class StreamSummary:
    index: int
    kind: str
    codec: str
    language: str | None


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    container: str
    video: VideoInfo
    others: list[StreamSummary] = field(default_factory=list)
    is_image: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def open_container(path: str | Path) -> av.container.InputContainer:
    """Open a media file, mapping every way it can fail to one readable InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a media file")
    import av

    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise InputError(f"{path}: not a readable media file ({ffmpeg_reason(exc)})") from None


def ffmpeg_reason(exc: av.FFmpegError) -> str:
    return (exc.strerror or str(exc)).rstrip(".").lower()


def bit_depth_of(pix_fmt: str) -> int:
    import av

    fmt = av.VideoFormat(pix_fmt)
    return max(c.bits for c in fmt.components)


def video_info(container: av.container.InputContainer, path: Path) -> VideoInfo:
    if not container.streams.video:
        raise InputError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None:  # a codec id FFmpeg has no decoder for: a damaged header, or a codec it does not build
        raise InputError(f"{path}: its video codec is unknown to FFmpeg (a damaged file, or a codec this build "
                         "lacks)")
    if ctx.pix_fmt is None or ctx.width == 0:
        raise InputError(f"{path}: damaged file: its video stream's parameters (picture size and format) cannot "
                         "be read")
    first = _first_frame(container, stream)
    side_data = _hdr_side_data(first, stream)
    return VideoInfo(
        index=stream.index,
        codec=codec_name(stream),
        width=ctx.width,
        height=ctx.height,
        pix_fmt=ctx.pix_fmt,
        bit_depth=bit_depth_of(ctx.pix_fmt),
        sar=Fraction(stream.sample_aspect_ratio or ctx.sample_aspect_ratio or 1),
        frame_rate=Fraction(stream.guessed_rate) if stream.guessed_rate else None,
        time_base=Fraction(stream.time_base or Fraction(1, 1000)),
        duration=_duration_seconds(container, stream),
        frame_count=stream.frames or None,
        rotation=int(first.rotation or 0),
        color=ColorInfo(
            matrix=int(ctx.colorspace),
            primaries=int(ctx.color_primaries),
            transfer=int(ctx.color_trc),
            full_range=int(ctx.color_range) == 2 or ctx.pix_fmt.startswith("yuvj"),
            chroma_location=int(first.chroma_location or 0),
        ),
        mastering_display=_mastering_display(side_data),
        content_light=_content_light(side_data),
        interlaced=bool(first.interlaced_frame),
        sar_tagged=bool(stream.sample_aspect_ratio or ctx.sample_aspect_ratio),
        alpha_unused=ctx.name == "mjpeg" and _opaque(first),  # JPEG has no alpha: CMYK decodes to RGB + alpha
        icc_profile=_has_icc_profile(first, stream),
        average_rate=Fraction(stream.average_rate) if stream.average_rate else None,
    )


def _opaque(frame: av.VideoFrame) -> bool:
    """Whether the frame has an alpha channel that is opaque everywhere."""
    if not any(c.is_alpha for c in frame.format.components):
        return False
    alpha = frame.reformat(format="gbrap").planes[3]
    data, width = bytes(alpha), alpha.width
    return all(data[start : start + width].count(255) == width
               for start in range(0, alpha.line_size * alpha.height, alpha.line_size))


def _has_icc_profile(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> bool:
    """Asked of a filter that passes only frames with a profile: reading `side_data` could crash (below)."""
    import av

    from vidsr.media.filters import filter_one

    try:
        filter_one(frame, dict(template=stream), [("sidedata", "mode=select:type=ICC_PROFILE")])
    except (av.FFmpegError, ValueError):  # EAGAIN: the frame did not pass
        return False
    return True


def _hdr_side_data(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> dict[str, bytes]:
    """The frame's side data by type name, read from a copy without its ICC profile: PyAV 19 frees the metadata
    of side data that has any (a PNG's ICC profile carries its name) a second time, so merely reading
    `side_data` on such a frame crashes the process. Empty if the copy cannot be made."""
    import av

    from vidsr.media.filters import filter_one

    try:
        copy = filter_one(frame, dict(template=stream), [("sidedata", "mode=delete:type=ICC_PROFILE")])
    except (av.FFmpegError, ValueError):
        return {}
    return {kind.name: bytes(data) for kind, data in copy.side_data.items()}


def _mastering_display(side_data: dict[str, bytes]) -> MasteringDisplay | None:
    """AVMasteringDisplayMetadata: R, G, B and white xy, then min and max luminance, as int32 rationals,
    then the has_primaries / has_luminance flags."""
    data = side_data.get("MASTERING_DISPLAY_METADATA")
    if data is None or len(data) < 88:
        return None
    values = struct.unpack_from("=22i", data)
    if not (values[20] and values[21]):  # both halves are needed to describe the display
        return None
    q = [Fraction(values[i], values[i + 1] or 1) for i in range(0, 20, 2)]
    return MasteringDisplay(red=(q[0], q[1]), green=(q[2], q[3]), blue=(q[4], q[5]), white=(q[6], q[7]),
                            min_luminance=q[8], max_luminance=q[9])


def _content_light(side_data: dict[str, bytes]) -> ContentLight | None:
    data = side_data.get("CONTENT_LIGHT_LEVEL")
    if data is None or len(data) < 8:
        return None
    return ContentLight(*struct.unpack_from("=2I", data))


def _duration_seconds(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> av.VideoFrame:
    """PyAV exposes rotation and chroma location only on decoded frames, so decode the first one that decodes:
    a damaged start is the decoder's to report (or skip, with --skip-errors), not a reason to refuse the file."""
    import av

    failure: av.FFmpegError | None = None
    failed = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                failure, failed = exc, failed + 1
                if failed == _PROBE_BAD_PACKETS:
                    break
                continue
            if frames:  # demux ends with an empty packet, which flushes the frames the decoder still holds
                return frames[0]
    except av.FFmpegError as exc:  # the demuxer itself gave up
        failure = exc
    if failure is not None:
        raise InputError(f"{container.name}: no video frame decodes, the file is damaged "
                         f"({ffmpeg_reason(failure)})") from None
    raise InputError(f"{container.name}: video stream has no frames")


# Undecodable packets the probe reads past before calling the whole stream damaged (a few seconds of video).
_PROBE_BAD_PACKETS = 250


def probe(path: str | Path) -> MediaInfo:
    """Read the stream facts of a video or image file; raises InputError for anything unusable."""
    path = Path(path)
    with open_container(path) as container:
        video = video_info(container, path)
        others = [
            StreamSummary(s.index, s.type, _stream_codec(s), s.metadata.get("language"))
            for s in container.streams if s.index != video.index
        ]
        return MediaInfo(path=path, container=container.format.name, video=video, others=others,
                         is_image=is_image_demuxer(container.format.name))


def _stream_codec(stream: av.stream.Stream) -> str:
    if stream.type == "attachment":
        return f"{stream.name} ({stream.mimetype})"
    return codec_name(stream)


def codec_name(stream: av.stream.Stream) -> str:
    """The codec's name (mp3, av1), not the decoder FFmpeg picked for it (mp3float, libdav1d)."""
    ctx = stream.codec_context
    if ctx is None:
        return "unknown"
    return ctx.codec.canonical_name if ctx.codec is not None else ctx.name


def copy_stream(container: av.container.OutputContainer, template: av.stream.Stream) -> av.stream.Stream:
    """A stream of `container` for `template`'s packets as they are. Its codec parameters are copied as such:
    PyAV otherwise looks a video stream's encoder up by its decoder's name, and there is no libdav1d encoder."""
    return container.add_stream_from_template(template, opaque=True)


def is_image_demuxer(name: str) -> bool:
    """FFmpeg reads pictures with image2 and the *_pipe demuxers (png_pipe, jpeg_pipe, ...); a one-frame video in
    a video container stays a video."""
    return name in ("image2", "image2pipe") or name.endswith("_pipe")
