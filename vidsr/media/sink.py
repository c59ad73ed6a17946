"""Sink stage: encode upscaled frames and remux every other stream of the input.

The video stream keeps the input's time base and each frame its input pts (VFR survives), plus colour
tags, SAR and rotation. Audio, subtitle and data streams, chapters and metadata are copied without
re-encoding, and Matroska attachments (subtitle fonts) too; audio the container cannot hold is re-encoded
(and said so), other streams it cannot hold are dropped with a warning.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from vidsr.errors import EncodeError
from vidsr.formats import UNSPECIFIED, ColorInfo
from vidsr.media.frames import _is_engine_planar, working_format
from vidsr.media.info import VideoInfo, ffmpeg_reason

log = logging.getLogger("vidsr")

ENCODERS = ("libx264", "libx265", "libsvtav1", "libvpx-vp9", "ffv1", "prores_ks", "h264_nvenc", "hevc_nvenc")
# Each encoder's name for the quality knob that `--crf` sets.
_QUALITY_OPTION = {"libx264": "crf", "libx265": "crf", "libsvtav1": "crf", "libvpx-vp9": "crf",
                   "h264_nvenc": "cq", "hevc_nvenc": "cq", "av1_nvenc": "cq"}
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libsvtav1": 28, "libvpx-vp9": 24}
# Options that make the quality knob mean constant quality (libvpx otherwise caps the bitrate at 256 kb/s).
_CONSTANT_QUALITY = {"libvpx-vp9": {"b": "0", "row-mt": "1"}}
# x265 prints its banner and settings to stderr unless told otherwise.
_QUIET_PARAMS = {"libx265": ("x265-params", "log-level", "error")}
# Primaries / transfer that go with a matrix when the input leaves them unspecified.
_IMPLIED = {1: (1, 1), 5: (5, 6), 6: (6, 6), 9: (9, 14), 10: (9, 14)}


@dataclass(frozen=True)
class EncodeSettings:
    encoder: str | None = None  # None: libx264, or the container's own codec where it cannot hold H.264
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    threads: int | None = None  # encoder threads; None lets FFmpeg choose


def encoder_options(settings: EncodeSettings, encoder: str) -> dict[str, str]:
    """FFmpeg options for `encoder`: quality (CRF / CQ; vidsr's default for the encoder when unset), preset, extras."""
    options = {}
    crf = settings.crf if settings.crf is not None else DEFAULT_CRF.get(encoder)
    if crf is not None:
        if encoder not in _QUALITY_OPTION:
            raise EncodeError(f"encoder {encoder} has no CRF/CQ quality setting; leave out --crf")
        options[_QUALITY_OPTION[encoder]] = str(crf)
        options.update(_CONSTANT_QUALITY.get(encoder, {}))
    if settings.preset:
        options["preset"] = settings.preset
    options.update(settings.options)
    if encoder in _QUIET_PARAMS:
        key, name, value = _QUIET_PARAMS[encoder]
        if f"{name}=" not in options.get(key, ""):
            options[key] = ":".join(filter(None, [f"{name}={value}", options.get(key)]))
    return options


def encoder_codec(name: str) -> av.Codec:
    try:
        codec = av.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        raise EncodeError(f"unknown encoder {name!r} (try one of: {', '.join(available_encoders())})") from None
    if codec.type != "video":
        raise EncodeError(f"{name!r} is not a video encoder")
    return codec


def available_encoders() -> list[str]:
    found = []
    for name in ENCODERS:
        try:
            av.Codec(name, "w")
            found.append(name)
        except (av.FFmpegError, ValueError):
            continue
    return found


def choose_pix_fmt(codec: av.Codec, source_format: str, requested: str | None) -> str:
    """The encoder pix_fmt: the requested one, else the source's planar format when the encoder takes it
    (10-bit in -> 10-bit out), else the encoder's format that keeps the most of the source: its colour
    first, then its depth, its alpha (or lack of it), its chroma sampling and its colour model."""
    supported = [f.name for f in codec.video_formats or ()]
    if requested:
        if supported and requested not in supported:
            raise EncodeError(f"encoder {codec.name} does not support pix_fmt {requested} "
                              f"(it takes: {', '.join(supported)})")
        working_format(requested)  # refuses formats the engine cannot produce
        return requested
    if not supported or source_format in supported:
        return source_format
    source = av.VideoFormat(source_format)

    def distance(name: str) -> tuple[bool, bool, bool, int, bool, bool]:
        fmt = av.VideoFormat(name)
        depth = fmt.components[0].bits - source.components[0].bits
        sampling = (fmt.chroma_width(64), fmt.chroma_height(64)) != (source.chroma_width(64), source.chroma_height(64))
        loses_colour = _colour_components(fmt) < _colour_components(source)
        return (loses_colour, depth < 0, _has_alpha(fmt) != _has_alpha(source), abs(depth) + 8 * sampling,
                fmt.is_rgb != source.is_rgb, not _is_engine_planar(fmt))

    usable = [name for name in supported if _engine_can_make(name)]
    if not usable:
        raise EncodeError(f"encoder {codec.name} takes no pixel format vidsr can produce")
    best = min(usable, key=distance)
    if distance(best)[0]:
        raise EncodeError(f"encoder {codec.name} would drop the colour (it takes: {', '.join(supported)}); "
                          "choose another output format, or --pix-fmt gray to mean it")
    return best


def _colour_components(fmt: av.VideoFormat) -> int:
    return sum(not c.is_alpha for c in fmt.components)


def _has_alpha(fmt: av.VideoFormat) -> bool:
    return any(c.is_alpha for c in fmt.components)


def _engine_can_make(pix_fmt: str) -> bool:
    """Formats the engine's planes convert to losslessly: no palette to quantise to, and alpha only where a
    planar format holds it."""
    try:
        planar = working_format(pix_fmt, alpha=True)
    except Exception:
        return False
    fmt = av.VideoFormat(pix_fmt)
    return not fmt.has_palette and _has_alpha(fmt) == _has_alpha(av.VideoFormat(planar))


class Sink:
    """Writes the output file: one encoded video stream plus the remuxed streams of `source`."""

    def __init__(self, path: Path, container_format: str | None, source: av.container.InputContainer,
                 video: VideoInfo, width: int, height: int, settings: EncodeSettings) -> None:
        self.settings = settings
        if settings.encoder:
            encoder_codec(settings.encoder)  # an unknown encoder is reported before any file is created
        try:
            # image2 writes a single picture to a plain filename only with update=1
            options = {"update": "1"} if container_format == "image2" else {}
            self.output = av.open(str(path), "w", format=container_format, options=options)
        except ValueError:  # FFmpeg knows no container for the suffix
            raise EncodeError(f"no output format is known for '{path.suffix}' files; use a suffix such as .mp4, "
                              ".mkv or .png") from None
        except av.FFmpegError as exc:
            raise EncodeError(f"cannot create the output file ({ffmpeg_reason(exc)})") from None
        try:
            self._set_up(source, video, width, height)
        except BaseException:
            self.abort()
            raise

    def _set_up(self, source: av.container.InputContainer, video: VideoInfo, width: int, height: int) -> None:
        codec, self.stream = self._add_video_stream(video)
        self.pix_fmt = choose_pix_fmt(codec, working_format(video.pix_fmt, alpha=True), self.settings.pix_fmt)
        self.width, self.height = _whole_chroma_size(width, height, self.pix_fmt)
        self.color = _output_color(video, av.VideoFormat(self.pix_fmt).is_rgb)
        self._configure_video(codec, video)
        _copy_identity(source.streams.video[0], self.stream, _VIDEO_TAGS)
        self._resamplers: dict[int, av.AudioResampler] = {}  # input audio stream index -> for re-encoding
        self.stream_map = self._add_passthrough_streams(source)
        self.output.metadata.update(source.metadata)
        self._copy_chapters(source)

    @property
    def passthrough_indices(self) -> set[int]:
        return set(self.stream_map)

    # --- set-up ------------------------------------------------------------------------------------------

    def _add_video_stream(self, video: VideoInfo) -> tuple[av.Codec, av.VideoStream]:
        """The chosen encoder's stream; without a choice libx264, or the container's own codec where it
        cannot hold H.264 (WebM: VP9)."""
        names = [self.settings.encoder] if self.settings.encoder else ["libx264", self.output.default_video_codec]
        for name in names:
            codec = encoder_codec(name)
            try:  # FFmpeg knows which codecs a container refuses (its list of accepted ones is incomplete)
                return codec, self.output.add_stream(codec.name, rate=video.frame_rate or Fraction(25))
            except ValueError:
                continue
        raise EncodeError(f"the {self.output.format.name} container cannot hold {names[0]} video; "
                          "choose another encoder (-c) or output suffix")

    def _configure_video(self, codec: av.Codec, video: VideoInfo) -> None:
        stream = self.stream
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, self.pix_fmt
        ctx.time_base = video.time_base
        stream.time_base = video.time_base
        if video.sar != 1:
            ctx.sample_aspect_ratio = video.sar
        ctx.colorspace, ctx.color_primaries = self.color.matrix, self.color.primaries
        ctx.color_trc = self.color.transfer
        ctx.color_range = 2 if self.color.full_range else 1
        options = encoder_options(self.settings, codec.name)
        ctx.options = options | _hdr10_options(codec.name, video, options)
        if self.settings.threads is not None and "threads" not in self.settings.options:
            ctx.thread_count = self.settings.threads
        if video.rotation:
            stream.set_display_rotation(video.rotation)
        try:  # now, so that bad settings fail before any decoding, and as what they are
            ctx.open()
        except av.FFmpegError as exc:
            raise EncodeError(f"{codec.name} does not start with these settings ({ffmpeg_reason(exc)}); check "
                              "--preset, --crf, --pix-fmt and --encoder-option") from None

    def _add_passthrough_streams(self, source: av.container.InputContainer) -> dict[int, av.stream.Stream]:
        mapping: dict[int, av.stream.Stream] = {}
        upscaled = source.streams.video[0].index
        for stream in source.streams:
            if stream.index == upscaled:
                continue
            if stream.type == "attachment":
                self._copy_attachment(stream)
                continue
            try:
                mapping[stream.index] = self.output.add_stream_from_template(stream)
                _copy_identity(stream, mapping[stream.index])
            except (av.FFmpegError, ValueError):
                if stream.type == "audio":
                    mapping[stream.index] = self._add_audio_reencode(stream)
                else:
                    log.warning("stream %d (%s %s): the %s container cannot hold it; dropped (use .mkv to keep it)",
                                stream.index, stream.type, _codec_name(stream), self.output.format.name)
        return mapping

    def _copy_attachment(self, stream: av.stream.Stream) -> None:
        """Attachments (an ASS subtitle's fonts) have no packets: Matroska stores them whole."""
        if self.output.format.name != "matroska":
            log.warning("stream %d (attachment %s): the %s container cannot hold it; dropped (use .mkv to keep it)",
                        stream.index, stream.name, self.output.format.name)
            return
        self.output.add_attachment(name=stream.name, mimetype=stream.mimetype, data=bytes(stream.data))

    def _add_audio_reencode(self, stream: av.AudioStream) -> av.AudioStream:
        codec = self.output.default_audio_codec
        log.warning("stream %d (audio %s): not allowed in %s; re-encoding to %s",
                    stream.index, stream.codec_context.name, self.output.format.name, codec)
        out = self.output.add_stream(codec, rate=stream.codec_context.sample_rate)
        out.layout = stream.codec_context.layout
        _copy_identity(stream, out)
        ctx = out.codec_context
        self._resamplers[stream.index] = av.AudioResampler(format=ctx.format, layout=ctx.layout, rate=ctx.sample_rate)
        return out

    def _copy_chapters(self, source: av.container.InputContainer) -> None:
        chapters = source.chapters()
        if chapters:
            self.output.set_chapters(chapters)

    # --- writing -----------------------------------------------------------------------------------------

    def write_frame(self, frame: av.VideoFrame, pts: int, time_base: Fraction) -> None:
        if frame.format.name != self.pix_fmt:
            frame = frame.reformat(format=self.pix_fmt)
        frame.pts, frame.time_base = pts, time_base
        frame.colorspace, frame.color_range = self.color.matrix, 2 if self.color.full_range else 1
        frame.chroma_location = self.color.chroma_location
        self._mux(self.stream.encode(frame))

    def write_packet(self, packet: av.Packet) -> None:
        out = self.stream_map[packet.stream.index]
        resampler = self._resamplers.get(packet.stream.index)
        if resampler is None:
            packet.stream = out
            self._mux([packet])
            return
        for frame in packet.decode():
            for resampled in resampler.resample(frame):
                self._mux(out.encode(resampled))

    def _mux(self, packets: list[av.Packet]) -> None:
        try:
            self.output.mux(packets)
        except av.FFmpegError as exc:
            raise EncodeError(f"writing the output failed ({ffmpeg_reason(exc)})") from None

    def close(self) -> None:
        """Flush encoders and finish the file."""
        try:
            self._mux(self.stream.encode(None))
            for index in self._resamplers:
                self._mux(self.stream_map[index].encode(None))
        finally:
            self.output.close()

    def abort(self) -> None:
        # The file is deleted next; a failing close must not hide the original error.
        with contextlib.suppress(Exception):
            self.output.close()


@dataclass(frozen=True)
class _HDR10Syntax:
    """How an encoder takes HDR10 static metadata in its parameter string."""

    option: str  # the FFmpeg option holding the encoder's own parameters
    flags: tuple[str, ...]
    display: str
    light: str
    chromaticity: Callable[[Fraction], str]
    luminance: Callable[[Fraction], str]


_HDR10 = {
    # HEVC SEI units: 0.00002 for xy, 0.0001 cd/m2
    "libx265": _HDR10Syntax("x265-params", ("hdr10=1",), "master-display", "max-cll",
                            lambda v: str(round(v * 50000)), lambda v: str(round(v * 10000))),
    "libsvtav1": _HDR10Syntax("svtav1-params", (), "mastering-display", "content-light",
                              lambda v: f"{float(v):.4f}", lambda v: f"{float(v):.4f}"),
}


def _hdr10_options(encoder: str, video: VideoInfo, options: dict[str, str]) -> dict[str, str]:
    """Encoder parameters that write the input's HDR10 static metadata. FFmpeg's encoders would take it from
    side data, which PyAV cannot attach, so it goes in as x265 / SVT-AV1 parameters."""
    display, light = video.mastering_display, video.content_light
    if display is None and light is None:
        return {}
    syntax = _HDR10.get(encoder)
    if syntax is None:
        log.warning("the input's HDR10 mastering metadata is written by %s only; the %s output keeps the HDR "
                    "colour tags without it", " and ".join(_HDR10), encoder)
        return {}
    params = list(syntax.flags)
    if display:
        xy = syntax.chromaticity
        colours = (("G", display.green), ("B", display.blue), ("R", display.red), ("WP", display.white))
        primaries = "".join(f"{name}({xy(x)},{xy(y)})" for name, (x, y) in colours)
        levels = f"L({syntax.luminance(display.max_luminance)},{syntax.luminance(display.min_luminance)})"
        params.append(f"{syntax.display}={primaries}{levels}")
    if light:
        params.append(f"{syntax.light}={light.max_cll},{light.max_fall}")
    return {syntax.option: ":".join(filter(None, [options.get(syntax.option), *params]))}


# Tags of the input's video stream that still describe the re-encoded one (not its encoder or statistics).
_VIDEO_TAGS = ("language", "title", "handler_name")


def _copy_identity(source: av.stream.Stream, out: av.stream.Stream, tags: tuple[str, ...] | None = None) -> None:
    """A stream's language, title and other tags (only `tags`, if given) and its default / forced flags."""
    out.metadata.update({k: v for k, v in source.metadata.items() if tags is None or k in tags})
    out.disposition = source.disposition


def _codec_name(stream: av.stream.Stream) -> str:
    return stream.codec_context.name if stream.codec_context else "data"


def _whole_chroma_size(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """Encoders reject subsampled pictures with a partial chroma sample (odd sizes in 4:2:0): crop to whole ones."""
    fmt = av.VideoFormat(pix_fmt)
    step_w, step_h = 64 // fmt.chroma_width(64), 64 // fmt.chroma_height(64)
    cropped = (width - width % step_w, height - height % step_h)
    if cropped != (width, height):
        log.info("output cropped from %dx%d to %dx%d for %s", width, height, *cropped, pix_fmt)
    return cropped


def _output_color(video: VideoInfo, rgb_output: bool) -> ColorInfo:
    """Tags for the output: the input's, with the matrix the engine used (and what it implies) filled in,
    so players don't re-guess from the new, larger frame size."""
    matrix = 0 if rgb_output else video.color.resolved_matrix(video.height)
    implied_primaries, implied_transfer = _IMPLIED.get(matrix, (UNSPECIFIED, UNSPECIFIED))
    return ColorInfo(
        matrix=matrix,
        primaries=video.color.primaries if video.color.primaries != UNSPECIFIED else implied_primaries,
        transfer=video.color.transfer if video.color.transfer != UNSPECIFIED else implied_transfer,
        full_range=video.color.full_range,
        chroma_location=video.color.chroma_location,
    )
