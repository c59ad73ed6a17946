"""Sink stage: encode upscaled frames and remux every other stream of the input.

The video stream keeps the input's time base and each frame its input pts (VFR survives), plus colour
tags, SAR and rotation. Audio, subtitle and data streams, chapters and metadata are copied without
re-encoding, and Matroska attachments (subtitle fonts) too; audio the container cannot hold is re-encoded
(and said so), other streams it cannot hold are dropped with a warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidsr.errors import DecodeError, EncodeError
from vidsr.formats import UNSPECIFIED, ColorInfo
from vidsr.media import ENCODERS
from vidsr.media.chunks import CHUNK_FORMAT, CHUNK_OPTIONS
from vidsr.media.filters import filter_chain
from vidsr.media.frames import GREY_WITH_ALPHA, _is_engine_planar, working_format
from vidsr.media.icc import embed_profile, read_profile
from vidsr.media.info import VideoInfo, codec_name, copy_stream, ffmpeg_reason
from vidsr.media.lost import LostFrames

log = logging.getLogger("vidsr")

# Each encoder's name for the quality knob that `--crf` sets.
_QUALITY_OPTION = {"libx264": "crf", "libx265": "crf", "libsvtav1": "crf", "libvpx-vp9": "crf", "libvpx": "crf",
                   "h264_nvenc": "cq", "hevc_nvenc": "cq", "av1_nvenc": "cq"}
# The quality knob's range per encoder (FFmpeg clamps or ignores values outside it without saying so).
_CRF_RANGE = {"libx264": (0, 51), "libx265": (0, 51), "libsvtav1": (1, 63), "libvpx-vp9": (0, 63), "libvpx": (4, 63),
              "h264_nvenc": (0, 51), "hevc_nvenc": (0, 51), "av1_nvenc": (0, 63)}
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libsvtav1": 28, "libvpx-vp9": 24, "libvpx": 10}
# Options that make the quality knob mean constant quality (libvpx otherwise caps the bitrate at 256 kb/s).
# VP8's CRF is constrained quality: it needs a bitrate cap, set high enough that the CRF decides.
_CONSTANT_QUALITY = {"libvpx-vp9": {"b": "0", "row-mt": "1"}, "libvpx": {"b": "100M"}}
# x265 prints its banner and settings to stderr unless told otherwise.
_QUIET_PARAMS = {"libx265": ("x265-params", "log-level", "error")}
# Primaries / transfer that go with a matrix when the input leaves them unspecified.
_IMPLIED = {1: (1, 1), 5: (5, 6), 6: (6, 6), 9: (9, 14), 10: (9, 14)}
# Picture codecs whose YUV has one meaning and no tags (matrix, full range): JPEG (JFIF) is BT.601 in full range,
# WebP's VP8 BT.601 in limited range. Their decoders ignore tags, so the engine's usual choice (BT.709 from 720
# lines up, the input's range) would shift hue and contrast.
_FIXED_YUV = {"mjpeg": (5, True), "libwebp": (5, False), "libwebp_anim": (5, False)}

# Decoded audio in these formats can hold NaN / infinite samples; beyond _LOUDEST (60 dB over full scale) a
# sample is damage too, not sound.
_FLOAT_SAMPLES = {"flt", "fltp", "dbl", "dblp"}
_LOUDEST = 1000.0
# ISO media containers, where HEVC is tagged hvc1 rather than FFmpeg's default hev1.
_ISO_MEDIA = {"mp4", "mov", "ipod", "3gp", "3g2"}
# What some muxers refuse only when the header is written (the stream is accepted when added), so that a
# default command would fail at the end with "invalid argument". Ogg holds Theora / VP8 video, not H.264, and
# y4m raw pictures.
_NO_H264 = {"ogg", "ogv", "yuv4mpegpipe"}
# Audio codecs a container holds, and the encoder to re-encode others with (MPEG-PS: MPEG audio, AC-3, DTS,
# LPCM; Ogg: Vorbis, Opus, FLAC, Speex; FLAC because FFmpeg's own Vorbis encoder is experimental).
_MPEG_PS_AUDIO = ({"mp1", "mp2", "mp3", "ac3", "dts", "pcm_dvd"}, "mp2")
_OGG_AUDIO = ({"vorbis", "opus", "flac", "speex"}, "flac")
_CONTAINER_AUDIO = {"mpeg": _MPEG_PS_AUDIO, "vob": _MPEG_PS_AUDIO, "dvd": _MPEG_PS_AUDIO, "svcd": _MPEG_PS_AUDIO,
                    "vcd": _MPEG_PS_AUDIO, "ogg": _OGG_AUDIO, "ogv": _OGG_AUDIO}
# MPEG-TS and PS carry bitmap subtitles (DVB, DVD) but not text ones; FFmpeg's Ogg muxer no subtitles at all.
_NO_TEXT_SUBTITLES = {"mpegts", "mpeg", "vob", "dvd", "svcd", "vcd"}
_NO_SUBTITLES = {"ogg", "ogv"}


@dataclass(frozen=True)
class EncodeSettings:
    encoder: str | None = None  # None: libx264, or the container's own codec where it cannot hold H.264
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    threads: int | None = None  # encoder threads; None lets FFmpeg choose
    audio: str = "copy"  # "copy" where the container holds it (else re-encode), "reencode" or "drop"


AUDIO_MODES = ("copy", "reencode", "drop")


def encoder_options(settings: EncodeSettings, encoder: str) -> dict[str, str]:
    """FFmpeg options for `encoder`: quality (CRF / CQ; vidsr's default for the encoder when unset), preset, extras."""
    options = {}
    crf = settings.crf if settings.crf is not None else DEFAULT_CRF.get(encoder)
    if crf is not None:
        if encoder not in _QUALITY_OPTION:
            raise EncodeError(f"encoder {encoder} has no CRF/CQ quality setting; leave out --crf")
        low, high = _CRF_RANGE[encoder]
        if not low <= crf <= high:
            raise EncodeError(f"--crf {crf} is outside {encoder}'s range ({low}-{high}; lower is better quality)")
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


def choose_pix_fmt(codec: av.Codec, source_format: str, requested: str | None, input_format: str | None = None) -> str:
    """The encoder pix_fmt: the requested one, else the source's planar format when the encoder takes it
    (10-bit in -> 10-bit out), else grey + alpha for such an input (`input_format`) where the encoder takes it,
    else the encoder's format that keeps the most of the source: its colour first, then its depth, its alpha
    (or lack of it), its chroma sampling and its colour model."""
    supported = [f.name for f in codec.video_formats or ()]
    if requested:
        if supported and requested not in supported:
            raise EncodeError(f"encoder {codec.name} does not support pix_fmt {requested} "
                              f"(it takes: {', '.join(supported)})")
        working_format(requested)  # refuses formats the engine cannot produce
        return requested
    if not supported or source_format in supported:
        return source_format
    if input_format in GREY_WITH_ALPHA:
        depth = av.VideoFormat(input_format).components[0].bits
        grey = [name for name in supported if name in GREY_WITH_ALPHA]
        same = [name for name in grey if av.VideoFormat(name).components[0].bits == depth]
        if same:
            return same[0]
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


# Hardware encoders and the driver libraries each one loads at start (FFmpeg then reports only a generic
# error). QSV's dispatchers (libvpl, libmfx) load anywhere, PyAV even bundles libvpl: the runtimes behind them
# are what a machine without the GPU lacks.
_HARDWARE_DRIVERS = {
    "_nvenc": ("the NVIDIA driver's encoder", ("libnvidia-encode.so.1", "nvEncodeAPI64.dll")),
    "_qsv": ("the Intel oneVPL / Media SDK runtime", ("libmfx-gen.so.1.2", "libmfxhw64.so.1", "libmfx64-gen.dll",
                                                      "libmfxhw64.dll")),
    "_vaapi": ("the VA-API driver", ("libva.so.2",)),
    "_amf": ("the AMD AMF runtime", ("libamfrt64.so.1", "amfrt64.dll")),
    "_videotoolbox": ("macOS VideoToolbox", ("/System/Library/Frameworks/VideoToolbox.framework/VideoToolbox",)),
}
_RENDER_NODE_ENCODERS = ("_qsv", "_vaapi")  # on Linux these open a GPU's render node


def add_video_stream(output: av.container.OutputContainer, encoder: str | None,
                     rate: Fraction) -> tuple[av.Codec, av.VideoStream]:
    """The chosen encoder's stream; without a choice libx264, or the container's own codec where it cannot hold
    H.264 (WebM: VP9)."""
    default = output.default_video_codec
    names = [encoder] if encoder else [default] if output.format.name in _NO_H264 else ["libx264", default]
    for name in names:
        codec = encoder_codec(name)
        try:  # FFmpeg knows which codecs a container refuses (its list of accepted ones is incomplete)
            return codec, output.add_stream(codec.name, rate=rate)
        except ValueError:
            continue
    raise EncodeError(f"the {output.format.name} container cannot hold {names[0]} video; "
                      "choose another encoder (-c) or output suffix")


def chunk_encoding(suffix: str, encoder: str | None) -> tuple[str, bool] | None:
    """For a chunked job into a `suffix` file: the encoder a single run would use (the chunks are encoded
    apart from the output's container, so they must be told) and whether the output's muxer takes codec
    headers (SPS / PPS) out of band, as MP4 and Matroska do and MPEG-TS does not (the chunks' encoder must
    write them the same way). None when the codec's packets cannot be kept in chunk files (y4m's frames)."""
    with tempfile.TemporaryDirectory(prefix="vidsr-") as folder:
        try:
            output = av.open(str(Path(folder) / f"probe{suffix}"), "w")
        except ValueError:
            raise EncodeError(f"no output format is known for '{suffix}' files; use a suffix such as .mp4, "
                              ".mkv or .png") from None
        with output:
            codec, _ = add_video_stream(output, encoder, Fraction(25))
            if codec.name == "wrapped_avframe":  # pointers to decoded frames, not data
                return None
            return codec.name, bool(output.format.flags & _AVFMT_GLOBALHEADER)


_AVFMT_GLOBALHEADER = 0x0040
_AVFMT_NOTIMESTAMPS = 0x0080


def _missing_driver(encoder: str) -> str | None:
    """What keeps a hardware encoder from starting: its driver when none of its libraries loads, or a missing
    GPU render node; None when both are there (or the encoder is not a hardware one)."""
    for suffix, (driver, libraries) in _HARDWARE_DRIVERS.items():
        if encoder.endswith(suffix):
            if not any(_loads(name) for name in libraries):
                return f"{driver} is missing (or finds no device for it)"
            if suffix in _RENDER_NODE_ENCODERS and sys.platform == "linux":
                nodes = glob.glob("/dev/dri/renderD*")
                if not nodes:
                    return "this machine has no GPU render device (/dev/dri/renderD*)"
                if not any(os.access(node, os.R_OK | os.W_OK) for node in nodes):
                    return (f"this user may not open the GPU render device ({nodes[0]}): join its group "
                            "(usually 'render'), or pass the device into the container")
    return None


def _loads(library: str) -> bool:
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def _warn_of_losses(source_format: str, chosen: str, encoder: str) -> None:
    """Say what the encoder's pixel format loses of the source's: bit depth, alpha, chroma resolution."""
    source, fmt = av.VideoFormat(source_format), av.VideoFormat(chosen)
    losses = []
    if fmt.components[0].bits < source.components[0].bits:
        losses.append(f"{source.components[0].bits}-bit samples become {fmt.components[0].bits}-bit")
    if _has_alpha(source) and not _has_alpha(fmt):
        losses.append("the alpha channel is dropped")
    if fmt.chroma_width(64) * fmt.chroma_height(64) < source.chroma_width(64) * source.chroma_height(64):
        losses.append(f"chroma is subsampled ({_sampling(source)} -> {_sampling(fmt)})")
    if losses:
        log.warning("%s takes no %s: %s (-c ffv1 into .mkv keeps everything; --pix-fmt to choose)",
                    encoder, source_format, "; ".join(losses))


def _sampling(fmt: av.VideoFormat) -> str:
    return {(64, 64): "4:4:4", (32, 64): "4:2:2", (32, 32): "4:2:0"}.get(
        (fmt.chroma_width(64), fmt.chroma_height(64)), f"{fmt.chroma_width(64)}x{fmt.chroma_height(64)}/64")


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
    """Writes the output file: one encoded video stream plus the remuxed streams of `source`.

    Two variants serve chunked jobs. A chunk (`chunk_headers` set) holds the encoded video only, in NUT, its
    encoder writing global headers exactly when the final output's format wants them (`chunk_headers`), so
    the chunks' packets can be copied into it. The join (`copy_video`: a chunk's video stream) copies the
    video packets it is given instead of encoding frames, and remuxes the rest as for a single run.
    """

    def __init__(self, path: Path, container_format: str | None, source: av.container.InputContainer,
                 video: VideoInfo, width: int, height: int, settings: EncodeSettings, *,
                 chunk_headers: bool | None = None, copy_video: av.VideoStream | None = None,
                 skip_errors: bool = False) -> None:
        self.settings = settings
        self.skip_errors, self.lost, self.source_name = skip_errors, LostFrames(), Path(source.name).name
        self.chunk_headers, self.copy_video = chunk_headers, copy_video
        self.path, self.profile = path, None
        if settings.encoder and copy_video is None:
            encoder_codec(settings.encoder)  # an unknown encoder is reported before any file is created
        try:
            # image2 writes a single picture to a plain filename only with update=1
            self.pictures_left = 1 if container_format == "image2" else None  # a picture file holds one
            options = {"update": "1"} if self.pictures_left else {}
            if chunk_headers is not None:
                container_format, options = CHUNK_FORMAT, CHUNK_OPTIONS
            self.output = av.open(str(path), "w", format=container_format, options=options)
        except ValueError:  # FFmpeg knows no container for the suffix
            raise EncodeError(f"no output format is known for '{path.suffix}' files; use a suffix such as .mp4, "
                              ".mkv or .png") from None
        except av.FFmpegError as exc:
            raise EncodeError(f"cannot create the output file ({ffmpeg_reason(exc)})") from None
        if self.output.format.name == "image2" and not self.pictures_left and chunk_headers is None:
            self.abort()  # FFmpeg knows the suffix as a picture, but vidsr picks no encoder for it (it would be JPEG)
            raise EncodeError(f"vidsr writes no '{path.suffix}' pictures; use .png, .tif, .jpg, .webp or .dpx, "
                              "or a video suffix such as .mp4")
        try:
            self._set_up(source, video, width, height)
        except BaseException:
            self.abort()
            raise

    def _set_up(self, source: av.container.InputContainer, video: VideoInfo, width: int, height: int) -> None:
        self.turner: _Turner | None = None
        # Formats without timestamps (y4m, raw frames) hold one rate, taken from their time base: their frames
        # are numbered at the video's rate (y4m wrote the input's time base as its rate: F30000:1 for 29.97 fps).
        self._numbered = 1 / video.constant_rate if self.output.format.name == "yuv4mpegpipe" or \
            self.output.format.flags & _AVFMT_NOTIMESTAMPS else None
        self._frames_written = 0
        source_format = working_format(video.pix_fmt, alpha=not video.alpha_unused)
        if self.copy_video is None:
            codec, self.stream = self._add_video_stream(video)
            self.pix_fmt = choose_pix_fmt(codec, source_format, self.settings.pix_fmt, video.pix_fmt)
            self.width, self.height = _whole_chroma_size(width, height, self.pix_fmt)
            quarters = round(video.rotation / 90) % 4
            if self.pictures_left and quarters:
                if quarters % 2:  # the turned picture needs whole chroma samples as well
                    self.height, self.width = _whole_chroma_size(self.height, self.width, self.pix_fmt)
                self.turner = _Turner(quarters, self.width, self.height, self.pix_fmt, video.time_base)
        else:
            self.stream = copy_stream(self.output, self.copy_video)
            ctx = self.copy_video.codec_context
            self.pix_fmt, self.width, self.height = ctx.pix_fmt, ctx.width, ctx.height
        # a join's chunks were encoded by the encoder its settings name (`ChunkedJob.plan`)
        encoder = codec.name if self.copy_video is None else self.settings.encoder
        self.color = _output_color(video, av.VideoFormat(self.pix_fmt).is_rgb, encoder)
        if self.chunk_headers is None:  # said once per output, by a single run or a join, not by every chunk
            if not self.settings.pix_fmt:
                _warn_of_losses(source_format, self.pix_fmt, encoder)
            if video.icc_profile:
                self._keep_profile(Path(source.name), encoder)
        if self.copy_video is None:
            self._configure_video(codec, video)
        else:  # chunk files (NUT) do not carry these
            self._tag_video(self.stream.codec_context, video)
            self.stream.time_base = video.time_base
        if video.rotation and self.turner is None:
            self.stream.set_display_rotation(video.rotation)
        _copy_identity(source.streams.video[0], self.stream, _VIDEO_TAGS)
        self._resamplers: dict[int, av.AudioResampler] = {}  # input audio stream index -> for re-encoding
        self._audio_clocks: dict[int, _AudioClock] = {}
        self._copied: dict[int, str] = {}  # input stream index -> "audio aac", for the streams remuxed as they are
        self._started = False  # the header is written
        # in the time base of the packets it mends: a join's are the chunk files', which NUT may have changed
        self._encoder_dts = _EncoderDts(video.time_base if self.copy_video is None else self.copy_video.time_base,
                                        self.output.format.name, video.time_base)
        if self.chunk_headers is not None:
            self.stream_map: dict[int, av.stream.Stream] = {}
            return
        self.stream_map = self._add_passthrough_streams(source)
        self.output.metadata.update(source.metadata)
        self._copy_chapters(source)

    def _keep_profile(self, source: Path, encoder: str | None) -> None:
        """Read the input's ICC profile for writing into a PNG or JPEG picture (`close`), or say it is lost."""
        if self.pictures_left and encoder in ("png", "mjpeg"):
            self.profile = read_profile(source)
        if self.profile is None:
            log.warning("%s: its ICC colour profile is not carried into the output (PNG and JPEG pictures keep it)",
                        source.name)

    @property
    def passthrough_indices(self) -> set[int]:
        return set(self.stream_map)

    # --- set-up ------------------------------------------------------------------------------------------

    def _add_video_stream(self, video: VideoInfo) -> tuple[av.Codec, av.VideoStream]:
        return add_video_stream(self.output, self.settings.encoder, video.frame_rate or Fraction(25))

    def _configure_video(self, codec: av.Codec, video: VideoInfo) -> None:
        stream = self.stream
        ctx = stream.codec_context
        ctx.width, ctx.height = self.turner.size if self.turner else (self.width, self.height)
        ctx.pix_fmt = self.pix_fmt
        ctx.time_base = stream.time_base = self._numbered or video.time_base
        if self.chunk_headers is False:  # NUT asks for global headers; the output's format does not
            ctx.flags &= ~av.codec.context.Flags.global_header
        self._tag_video(ctx, video)
        options = encoder_options(self.settings, codec.name)
        ctx.options = options | _hdr10_options(codec.name, video, options)
        ctx.thread_type = "AUTO"
        if self.settings.threads is not None and "threads" not in self.settings.options:
            ctx.thread_count = self.settings.threads
        try:  # now, so that bad settings fail before any decoding, and as what they are
            ctx.open()
        except av.FFmpegError as exc:
            missing = _missing_driver(codec.name)
            if missing:
                raise EncodeError(f"{codec.name} cannot start: {missing}; use a software encoder such as -c libx264"
                                  ) from None
            raise EncodeError(f"{codec.name} does not start with these settings ({ffmpeg_reason(exc)}); check "
                              "--preset, --crf, --pix-fmt and --encoder-option") from None
        if ctx.options:  # what the encoder left unused: misspelt, or not one of its options
            raise EncodeError(f"{codec.name} has no option {', '.join(sorted(ctx.options))} (its options: "
                              f"`ffmpeg -h encoder={codec.name}`)")

    def _tag_video(self, ctx: av.VideoCodecContext, video: VideoInfo) -> None:
        """Colour tags, SAR, and the codec tag MP4 / MOV players want."""
        if video.sar != 1 or video.sar_tagged:
            ctx.sample_aspect_ratio = video.sar
        if ctx.codec.canonical_name == "hevc" and self.output.format.name in _ISO_MEDIA:
            ctx.codec_tag = "hvc1"  # parameter sets in the sample description, as Apple's players require
        ctx.colorspace, ctx.color_primaries = self.color.matrix, self.color.primaries
        ctx.color_trc = self.color.transfer
        ctx.color_range = 2 if self.color.full_range else 1

    def _add_passthrough_streams(self, source: av.container.InputContainer) -> dict[int, av.stream.Stream]:
        mapping: dict[int, av.stream.Stream] = {}
        upscaled = source.streams.video[0].index
        for stream in source.streams:
            if stream.index == upscaled:
                continue
            if stream.type == "attachment":
                self._copy_attachment(stream)
            elif stream.type == "audio" and (self.settings.audio != "copy" or not self._holds_audio(stream)):
                if self.settings.audio != "drop":
                    self._add_audio_reencode(stream, mapping)
            elif self._holds(stream):
                try:
                    mapping[stream.index] = self.output.add_stream_from_template(stream)
                    _copy_identity(stream, mapping[stream.index])
                    self._copied[stream.index] = f"{stream.type} {codec_name(stream)}"
                except (av.FFmpegError, ValueError):
                    if stream.type == "audio":
                        self._add_audio_reencode(stream, mapping)
                    else:
                        self._drop(stream)
            else:
                self._drop(stream)
        return mapping

    def _holds_audio(self, stream: av.AudioStream) -> bool:
        accepted = _CONTAINER_AUDIO.get(self.output.format.name)
        return accepted is None or codec_name(stream) in accepted[0]

    def _holds(self, stream: av.stream.Stream) -> bool:
        """False for subtitles the container refuses only once its header is written."""
        if stream.type != "subtitle":
            return True
        container = self.output.format.name
        return container not in _NO_SUBTITLES and not (stream.codec_context.codec.text_sub
                                                       and container in _NO_TEXT_SUBTITLES)

    def _drop(self, stream: av.stream.Stream) -> None:
        log.warning("stream %d (%s %s): the %s container cannot hold it; dropped (use .mkv to keep it)",
                    stream.index, stream.type, codec_name(stream), self.output.format.name)

    def _copy_attachment(self, stream: av.stream.Stream) -> None:
        """Attachments (an ASS subtitle's fonts) have no packets: Matroska stores them whole."""
        if self.output.format.name != "matroska":
            log.warning("stream %d (attachment %s): the %s container cannot hold it; dropped (use .mkv to keep it)",
                        stream.index, stream.name, self.output.format.name)
            return
        self.output.add_attachment(name=stream.name, mimetype=stream.mimetype, data=bytes(stream.data))

    def _add_audio_reencode(self, stream: av.AudioStream, mapping: dict[int, av.stream.Stream]) -> None:
        codec = _CONTAINER_AUDIO.get(self.output.format.name, ((), self.output.default_audio_codec))[1]
        if codec == "none":  # the container holds no audio at all (y4m, ivf)
            log.warning("stream %d (audio %s): the %s container holds no audio; dropped (use .mkv to keep it)",
                        stream.index, codec_name(stream), self.output.format.name)
            return
        if not self._audio_decoder_opens(stream):
            return
        if self.settings.audio != "reencode":
            log.warning("stream %d (audio %s): not allowed in %s; re-encoding to %s",
                        stream.index, codec_name(stream), self.output.format.name, codec)
        out = self.output.add_stream(codec, rate=stream.codec_context.sample_rate)
        out.layout = stream.codec_context.layout
        _copy_identity(stream, out)
        ctx = out.codec_context
        self._resamplers[stream.index] = av.AudioResampler(format=ctx.format, layout=ctx.layout, rate=ctx.sample_rate)
        mapping[stream.index] = out

    def _audio_decoder_opens(self, stream: av.AudioStream) -> bool:
        """Open the decoder of audio to re-encode now: one whose set-up data is damaged does not open, and PyAV
        then fails each of its packets (a traceback). The run stops in one line, or under --skip-errors goes
        on without the stream."""
        codec = codec_name(stream)  # a context that failed to open has lost its codec
        try:
            stream.codec_context.open()
        except av.FFmpegError as exc:
            problem = f"stream {stream.index} (audio {codec}) does not decode ({ffmpeg_reason(exc)})"
            if not self.skip_errors:
                raise DecodeError(f"{self.source_name}: {problem}; use --audio drop, or --skip-errors to leave it "
                                  "out") from None
            log.warning("%s: %s; left out", self.source_name, problem)
            return False
        return True

    def _copy_chapters(self, source: av.container.InputContainer) -> None:
        chapters = source.chapters()
        if chapters:
            self.output.set_chapters(chapters)

    # --- writing -----------------------------------------------------------------------------------------

    def write_frame(self, frame: av.VideoFrame, pts: int, time_base: Fraction) -> None:
        if self.pictures_left is not None:
            if not self.pictures_left:  # image2 would overwrite the picture with each frame, keeping the last
                raise EncodeError(f"{self.source_name} has more than one frame (an animation or a video), and a "
                                  f"{Path(self.output.name).suffix} file holds one picture; write a "
                                  "video (.mp4, .mkv)")
            self.pictures_left -= 1
        if frame.format.name != self.pix_fmt:
            frame = frame.reformat(format=self.pix_fmt)
        frame.pts, frame.time_base = (self._frames_written, self._numbered) if self._numbered else (pts, time_base)
        self._frames_written += 1
        if self.turner:
            frame = self.turner.turn(frame)
        frame.colorspace, frame.color_range = self.color.matrix, 2 if self.color.full_range else 1
        frame.chroma_location = self.color.chroma_location
        self._mux(self._encoder_dts.fix(self._encode(self.stream, frame)))

    def write_video_packet(self, packet: av.Packet) -> None:
        """A packet of the stream `copy_video` (the join of a chunked job), its dts mended as an encoder's."""
        packet.stream = self.stream
        self._mux(self._encoder_dts.fix([packet]))

    def write_packet(self, packet: av.Packet) -> None:
        out = self.stream_map[packet.stream.index]
        if packet.stream.type == "audio" and not self._time_audio(packet):
            return
        resampler = self._resamplers.get(packet.stream.index)
        if resampler is None:
            self._copy(packet, out)
            return
        for frame in self._decode_audio(packet):
            for resampled in resampler.resample(self._silence_garbage(frame, packet.stream.index)):
                self._mux(self._encode(out, resampled))

    def _time_audio(self, packet: av.Packet) -> bool:
        """Mend the audio packet's timestamps if they repeat or go back; False if it is to be left out: they
        need rebuilding from its samples and the stream does not decode. The run then stops in one line, or
        under --skip-errors goes on without the stream's packets, reported with their times."""
        clock = self._audio_clocks.get(packet.stream.index)
        if clock is None:
            clock = self._audio_clocks[packet.stream.index] = _AudioClock(packet.stream)
        if clock.undecodable is None:
            try:
                clock.fix(packet)
                return True
            except _UndecodableAudio as exc:
                clock.undecodable = f"stream {packet.stream.index} (audio {clock.codec}) {exc}"
                if not self.skip_errors:
                    raise DecodeError(f"{self.source_name}: {clock.undecodable}; use --audio drop, or "
                                      "--skip-errors to leave it out") from None
        self.lost.add(f"packet(s) left out: {clock.undecodable}", _seconds(packet))
        return False

    def _copy(self, packet: av.Packet, out: av.stream.Stream) -> None:
        """Remux a packet of another stream. A damaged one can fail the muxer's bitstream filter (ADTS AAC from
        MPEG-TS into MP4 / Matroska): the run stops in one line, or under --skip-errors drops it with a notice."""
        index, at = packet.stream.index, _seconds(packet)
        packet.stream = out
        self._start()
        try:
            self.output.mux([packet])
        except av.InvalidDataError as exc:
            if not self.skip_errors:
                drop = ", or --audio drop" if self._copied[index].startswith("audio") else ""
                raise DecodeError(f"{self.source_name}: stream {index} ({self._copied[index]}) has a damaged packet "
                                  f"at {at:.2f} s ({ffmpeg_reason(exc)}); use --skip-errors to drop it{drop}") from None
            self.lost.add(f"damaged packet(s) of stream {index} ({self._copied[index]}) dropped", at)
        except av.FFmpegError as exc:
            raise EncodeError(f"writing the output failed ({ffmpeg_reason(exc)})") from None

    def _decode_audio(self, packet: av.Packet) -> list[av.AudioFrame]:
        """The packet's audio, for re-encoding; a packet that does not decode fails the run in one line, or
        under --skip-errors leaves a silent gap and a notice."""
        try:
            return packet.decode()
        except av.FFmpegError as exc:
            at = _seconds(packet)
            if not self.skip_errors:
                raise DecodeError(f"{self.source_name}: audio stream {packet.stream.index} does not decode at "
                                  f"{at:.2f} s ({ffmpeg_reason(exc)}); use --skip-errors to leave a silent gap "
                                  "there, or --audio drop") from None
            self.lost.add(f"undecodable audio packet(s) of stream {packet.stream.index} skipped (silent there)", at)
            return []

    def _silence_garbage(self, frame: av.AudioFrame, index: int) -> av.AudioFrame:
        """The frame with NaN, infinite and absurdly loud float samples made silent: damaged audio decodes to
        them, and FFmpeg's AAC encoder refuses them (EINVAL) where the container needs audio re-encoded."""
        if frame.format.name not in _FLOAT_SAMPLES:
            return frame
        samples = frame.to_ndarray()
        garbage = ~(np.abs(samples) <= _LOUDEST)  # NaN compares false
        if not garbage.any():
            return frame
        at = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else 0.0
        self.lost.add(f"audio frame(s) of stream {index} with samples that are not finite or far beyond full "
                      "scale (made silent there)", at)
        clean = av.AudioFrame.from_ndarray(np.where(garbage, 0, samples).astype(samples.dtype),
                                           format=frame.format.name, layout=frame.layout.name)
        clean.sample_rate, clean.pts, clean.time_base = frame.sample_rate, frame.pts, frame.time_base
        return clean

    @staticmethod
    def _encode(stream: av.stream.Stream, frame: av.VideoFrame | av.AudioFrame | None) -> list[av.Packet]:
        try:
            return stream.encode(frame)
        except av.FFmpegError as exc:
            at = (f"at {float(frame.pts * frame.time_base):.2f} s" if frame is not None and frame.pts is not None
                  and frame.time_base else "while finishing")
            raise EncodeError(f"the {stream.codec_context.name} encoder of output stream {stream.index} failed {at} "
                              f"({ffmpeg_reason(exc)})") from None

    def _start(self) -> None:
        """Write the header before the first packet. A format may refuse a stream's set-up data there (MPEG-TS
        parses AAC's to write ADTS headers): that is not a damaged packet, and PyAV crashes on the next one."""
        if self._started:
            return
        try:
            self.output.start_encoding()
        except av.FFmpegError as exc:
            streams = ", ".join(f"stream {index}: {what}" for index, what in self._copied.items())
            copied = f"; of the streams copied as they are ({streams}), one may be damaged or " \
                     f"not fit {self.output.format.name}: --audio drop or another container" if self._copied else ""
            raise EncodeError(f"writing the output's header failed ({ffmpeg_reason(exc)}){copied}") from None
        self._started = True

    def _mux(self, packets: list[av.Packet]) -> None:
        self._start()
        try:
            self.output.mux(packets)
        except av.FFmpegError as exc:
            raise EncodeError(f"writing the output failed ({ffmpeg_reason(exc)})") from None

    def close(self) -> None:
        """Flush encoders and finish the file."""
        try:
            if self.copy_video is None:
                self._mux(self._encoder_dts.fix(self._encode(self.stream, None)))
            for index in self._resamplers:
                self._mux(self._encode(self.stream_map[index], None))
            self._start()  # the header, even of a file without packets (a chunk that lost all)
        finally:
            self.output.close()
        if self.profile:
            embed_profile(self.path, self.profile)
        self.lost.report(self.source_name)

    def abort(self) -> None:
        # The file is deleted next; a failing close must not hide the original error.
        with contextlib.suppress(Exception):
            self.output.close()


class _EncoderDts:
    """Decoding timestamps of the video encoder's packets, mended where the encoder left them undefined.

    libx265 gives a clip shorter than its B-frame delay (two frames) dts values read from uninitialised memory
    (-2.2e15 one run, -1.4e14 the next); Matroska ignores them, MP4 / MOV refuse the packet. A dts later than
    its pts, not after the previous one, or a minute or more before its pts is replaced by the smallest dts
    that keeps the stream valid."""

    def __init__(self, time_base: Fraction, container: str = "", track_time_base: Fraction | None = None) -> None:
        self.time_base, self.container = time_base, container
        self.max_reorder = int(60 / time_base)  # no encoder reorders frames a minute apart
        self.longest = _longest_frame(container, track_time_base or time_base)
        self.last_dts: int | None = None
        self.latest_pts: int | None = None

    def fix(self, packets: list[av.Packet]) -> list[av.Packet]:
        for packet in packets:
            if packet.pts is not None and not self._plausible(packet.dts, packet.pts):
                packet.dts = packet.pts if self.last_dts is None else min(packet.pts, self.last_dts + 1)
            if packet.dts is not None:
                self.last_dts = packet.dts
            if packet.pts is not None:
                self._check_leap(packet.pts)
        return packets

    def _check_leap(self, pts: int) -> None:
        """MP4 / MOV store a frame's duration and its dts-to-pts offset in 32 bits of the track's timescale: a
        leap in the timestamps beyond that failed the run as "invalid argument" or "not yet implemented"."""
        latest = self.latest_pts
        self.latest_pts = pts if latest is None else max(latest, pts)
        if self.longest is None or latest is None:
            return
        leap = (pts - latest) * self.time_base
        if leap > self.longest:
            leap, at = float(leap), float(latest * self.time_base)
            raise EncodeError(f"the video's timestamps leap {leap / 3600:.1f} h after {at:.2f} s, longer than one "
                              f"frame can last in {self.container.upper()}; write .mkv")

    def _plausible(self, dts: int | None, pts: int) -> bool:
        return (dts is not None and dts <= pts and pts - dts < self.max_reorder
                and (self.last_dts is None or dts > self.last_dts))


def _longest_frame(container: str, track_time_base: Fraction) -> Fraction | None:
    """The longest frame, in seconds, that the container stores (None: none too long). FFmpeg's MP4 / MOV muxer
    takes the stream's time base as the track's timescale, doubled until it is at least 10000, and stores
    durations in 32 bits."""
    if container not in _ISO_MEDIA:
        return None
    timescale = track_time_base.denominator
    while timescale < 10000:
        timescale *= 2
    return Fraction(2**31 - 1, timescale)


def _seconds(packet: av.Packet) -> float:
    """Where a packet is, in seconds, for messages (0 when it has no timestamp)."""
    return float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else 0.0


class _UndecodableAudio(Exception):
    """Audio whose timestamps need rebuilding from its samples does not decode."""


class _AudioClock:
    """An audio stream's timestamps, rebuilt from its sample count once the container's repeat or go back
    (OpenCV-written AVIs give every AAC packet pts = dts = 0): muxers refuse such packets. Packets are decoded
    only then: one whose stream does not decode is copied as it is while its timestamps hold."""

    def __init__(self, stream: av.AudioStream) -> None:
        self.stream = stream
        self.codec = codec_name(stream)  # before any decoding: a context that fails to open loses its codec
        self.undecodable: str | None = None  # why the timestamps cannot be rebuilt, once known
        self.last_dts: int | None = None
        self.last_duration = 0  # the last packet's, or an estimate: the gap before it
        self.rebuilt = 0

    def fix(self, packet: av.Packet) -> None:
        broken = packet.dts is None or (self.last_dts is not None and packet.dts <= self.last_dts)
        if broken or self.rebuilt:
            duration = self._duration(packet)
            if not self.rebuilt:
                log.warning("stream %d (audio): its timestamps repeat or go back; rebuilt from the sample count "
                            "(--audio drop leaves the audio out)", self.stream.index)
            self.rebuilt += 1
            dts = 0 if self.last_dts is None else self.last_dts + (self.last_duration or duration)
            packet.pts = packet.dts = dts
            self.last_duration = duration
        else:
            gap = 0 if self.last_dts is None else packet.dts - self.last_dts
            self.last_duration = packet.duration or gap
        self.last_dts = packet.dts

    def _duration(self, packet: av.Packet) -> int:
        """The packet's duration in its time base: as stored, else from the samples it decodes to."""
        if packet.duration:
            return packet.duration
        ctx = self.stream.codec_context
        if not ctx.is_open:
            try:
                ctx.open()
            except av.FFmpegError as exc:  # damaged set-up data; the context must not be touched again
                raise _UndecodableAudio(f"has timestamps that repeat or go back, and does not decode "
                                        f"({ffmpeg_reason(exc)}) to rebuild them from its samples") from None
        try:  # a fixed frame size (AAC 1024, MP3 1152) once known, else what it decodes to: decoding twice in
            # the one context, here and for re-encoding, would disturb a stateful decoder's output
            seconds = (Fraction(ctx.frame_size, ctx.sample_rate) if ctx.frame_size and ctx.sample_rate else
                       sum(Fraction(f.samples, f.sample_rate) for f in ctx.decode(packet) if f.sample_rate))
        except av.FFmpegError:  # a damaged packet: as long as the one before, as good a guess as any
            return self.last_duration
        return round(seconds / packet.time_base) or self.last_duration


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


def _whole_chroma_size(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """Encoders reject subsampled pictures with a partial chroma sample (odd sizes in 4:2:0): crop to whole ones."""
    fmt = av.VideoFormat(pix_fmt)
    step_w, step_h = 64 // fmt.chroma_width(64), 64 // fmt.chroma_height(64)
    cropped = (width - width % step_w, height - height % step_h)
    if cropped != (width, height):
        log.info("output cropped from %dx%d to %dx%d for %s", width, height, *cropped, pix_fmt)
    return cropped


class _Turner:
    """Turns a picture upright. Picture files keep no display rotation (FFmpeg's JPEG, PNG and WebP writers drop
    it, and a phone photo's EXIF orientation with it), so the pixels are turned instead, as the input is seen."""

    _FILTERS = {1: [("transpose", "cclock")], 2: [("hflip", None), ("vflip", None)], 3: [("transpose", "clock")]}

    def __init__(self, quarters: int, width: int, height: int, pix_fmt: str, time_base: Fraction) -> None:
        """`quarters`: the display matrix's angle in quarter turns, counter-clockwise."""
        self.size = (height, width) if quarters % 2 else (width, height)
        self.turn = filter_chain(dict(width=width, height=height, format=pix_fmt, time_base=time_base),
                                 self._FILTERS[quarters])


def _output_color(video: VideoInfo, rgb_output: bool, encoder: str | None = None) -> ColorInfo:
    """Tags for the output: the input's, with the matrix the engine used (and what it implies) filled in,
    so players don't re-guess from the new, larger frame size. An encoder whose YUV has one fixed meaning gets
    that meaning."""
    matrix = 0 if rgb_output else video.color.resolved_matrix(video.height)
    full_range = video.color.full_range
    if not rgb_output and encoder in _FIXED_YUV:
        matrix, full_range = _FIXED_YUV[encoder]
    implied_primaries, implied_transfer = _IMPLIED.get(matrix, (UNSPECIFIED, UNSPECIFIED))
    return ColorInfo(
        matrix=matrix,
        primaries=video.color.primaries if video.color.primaries != UNSPECIFIED else implied_primaries,
        transfer=video.color.transfer if video.color.transfer != UNSPECIFIED else implied_transfer,
        full_range=full_range,
        chroma_location=video.color.chroma_location,
    )
