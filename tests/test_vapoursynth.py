"""VapourSynth filter (`sr.upscale`) and PyAV source (`sr.source`), driven through the real vspipe."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import vapoursynth as vs

import vsvidsr as sr
from vidsr import upscale_video
from vidsr.compute.upscaler import Upscaler, cpu_has_native_fp16
from vidsr.media.frames import frame_to_planes, planes_to_frame
from vidsr.models.archs import create_model
from vidsr.models.checkpoint import save_checkpoint
from vidsr.quality.metrics import psnr
from vsvidsr.batching import Worker

WIDTH, HEIGHT = 64, 48
CFR_MS = [40 * i for i in range(10)]
VFR_MS = [0, 40, 80, 120, 200, 280, 290, 300, 400, 500]
# the wheel's vspipe beside this Python (a venv), else on PATH (a `pip install --target` tree)
VSPIPE = Path(sys.executable).with_name("vspipe")
VSPIPE = VSPIPE if VSPIPE.exists() else Path(shutil.which("vspipe") or VSPIPE)
EXAMPLES = Path(__file__).resolve().parents[1] / "plugins" / "examples"

SCRIPT = """
import vapoursynth as vs
import vsvidsr as sr

clip = sr.source(path)
if model:
    clip = sr.upscale(clip, model=model, batch_size=int(batch_size), num_streams=int(num_streams),
                       device=device, precision="fp32")
clip.set_output()
"""


# --- media and models -------------------------------------------------------------------------------------

def write_clip(path: Path, codec: str, pix_fmt: str, timestamps_ms: list[int], options: dict[str, str]) -> Path:
    """Noise frames (every frame distinct) with BT.709 limited-range tags at the given timestamps."""
    rng = np.random.default_rng(len(timestamps_ms))
    depth_max = 1023 if "10" in pix_fmt else 255
    dtype = np.uint16 if depth_max > 255 else np.uint8
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.options = options
        ctx = stream.codec_context
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = ctx.color_range = 1
        chroma = [] if pix_fmt.startswith("gray") else [(HEIGHT // 2, WIDTH // 2)] * 2
        shapes = [(HEIGHT, WIDTH), *chroma]
        for ts in timestamps_ms:
            planes = [rng.integers(depth_max // 8, depth_max * 7 // 8, shape, dtype=dtype) for shape in shapes]
            frame = planes_to_frame(planes, pix_fmt)
            frame.pts, frame.time_base = ts, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vs_media")
    gop = {"g": "4", "bf": "2", "preset": "ultrafast"}  # short GOPs with B-frames: seeking matters
    return {
        "h264": write_clip(root / "cfr.mp4", "libx264", "yuv420p", CFR_MS, gop),
        "vfr": write_clip(root / "vfr.mkv", "libx264", "yuv420p", VFR_MS, gop),
        "10bit": write_clip(root / "ten.mkv", "ffv1", "yuv420p10le", CFR_MS, {}),
        "gray": write_clip(root / "gray.mkv", "ffv1", "gray10le", CFR_MS, {}),
        # MPEG-TS seeks by dts and loosely; open GOPs start with pictures that need the previous GOP
        "ts": write_clip(root / "opengop.ts", "libx264", "yuv420p", CFR_MS,
                         {"bf": "2", "preset": "ultrafast", "x264-params": "open-gop=1:keyint=4:scenecut=0"}),
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny random-weight ESPCNs: a Y-channel x2 and an RGB x3 one."""
    root = tmp_path_factory.mktemp("vs_models")
    torch.manual_seed(0)
    y_model = create_model("espcn", scale=2, channels=1, features=8, mid_features=8)
    rgb_model = create_model("espcn", scale=3, channels=3, features=8, mid_features=8)
    return {"y": str(save_checkpoint(root / "espcn_y_x2.safetensors", y_model)),
            "rgb": str(save_checkpoint(root / "espcn_rgb_x3.safetensors", rgb_model))}


# --- vspipe ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_vspipe(tmp_path_factory: pytest.TempPathFactory):
    """vspipe with a private VapourSynth config (what `vapoursynth config` writes for this Python)."""
    root = tmp_path_factory.mktemp("vs_pipe")
    env = {**os.environ, "XDG_CONFIG_HOME": str(root / "config")}
    subprocess.run([sys.executable, "-m", "vapoursynth", "config"], env=env, check=True, capture_output=True)
    script = root / "script.vpy"
    script.write_text(SCRIPT)

    def run(path: Path, *options: str, script: Path = script, output: str = "-", **args: object
            ) -> subprocess.CompletedProcess:
        args = {"path": path, "model": "", "batch_size": 1, "num_streams": 1, "device": "cpu"} | args
        command = [str(VSPIPE), *options, *(f for k, v in args.items() for f in ("-a", f"{k}={v}")),
                   str(script), output]
        return subprocess.run(command, env=env, capture_output=True, timeout=60)

    return run


def read_y4m(data: bytes) -> tuple[dict[str, str], list[bytes]]:
    """Header fields and frame payloads; fails unless the bytes are exactly one y4m stream."""
    header, _, body = data.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 "), data[:80]
    fields = {item[:1].decode(): item[1:].decode() for item in header.split()[1:]}
    width, height = int(fields["W"]), int(fields["H"])
    sample_bytes = 2 if "p10" in fields["C"] else 1
    frame_size = width * height * 3 // 2 * sample_bytes  # 4:2:0
    frames = []
    while body:
        marker, _, body = body.partition(b"\n")
        assert marker == b"FRAME", marker[:40]
        assert len(body) >= frame_size
        frames.append(body[:frame_size])
        body = body[frame_size:]
    return fields, frames


def y4m_planes(payload: bytes, width: int, height: int, dtype: type) -> list[np.ndarray]:
    samples = np.frombuffer(payload, dtype=dtype)
    luma, chroma = width * height, (width // 2) * (height // 2)
    return [samples[:luma].reshape(height, width),
            samples[luma:luma + chroma].reshape(height // 2, width // 2),
            samples[luma + chroma:].reshape(height // 2, width // 2)]


def info_fields(stdout: bytes) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.decode().splitlines() if ": " in line)


# --- references: linear decoding and the CLI ------------------------------------------------------

def decode_linear(path: Path) -> list[list[np.ndarray]]:
    with av.open(str(path)) as container:
        return [[plane.copy() for plane in frame_to_planes(frame)] for frame in container.decode(video=0)]


def cli_upscale(path: Path, model: str, output: Path) -> list[list[np.ndarray]]:
    """What the CLI makes of the file (`vidsr upscale -c ffv1`, lossless), decoded back to planes."""
    return decode_linear(upscale_video(path, output, model=model, device="cpu", encoder="ffv1", progress=False))


def planes_psnr(a: list[np.ndarray], b: list[np.ndarray], peak: int) -> float:
    return psnr(np.concatenate([p.ravel() for p in a]) * (255 / peak),
                np.concatenate([p.ravel() for p in b]) * (255 / peak))


# --- tests through vspipe ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_vspipe_info_reports_upscaled_clip(media, run_vspipe):
    result = run_vspipe(media["h264"], "--info", model="espcn-x2")  # the bundled default, by name
    assert result.returncode == 0, result.stderr.decode()
    info = info_fields(result.stdout)
    assert (info["Width"], info["Height"], info["Frames"]) == ("128", "96", "10")
    assert info["Format Name"] == "YUV420P8"
    assert info["FPS"].startswith("25/1")


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize(("clip", "model", "scale", "peak", "timestamps_ms"),
                         [("vfr", "y", 2, 255, VFR_MS), ("10bit", "rgb", 3, 1023, CFR_MS)])
def test_y4m_matches_engine(media, models, run_vspipe, tmp_path, clip, model, scale, peak, timestamps_ms, device):
    """vspipe's y4m (parallel requests, 2 streams, batches of 2; CPU threads or CUDA streams) == the CLI's
    lossless output on the CPU; stdout carries nothing but the y4m stream; the frame timestamps (from the
    durations) are the source's."""
    timecodes = tmp_path / "timecodes.txt"
    result = run_vspipe(media[clip], "-c", "y4m", "-r", "4", "-t", str(timecodes), model=models[model],
                        batch_size=2, num_streams=2, device=device)
    assert result.returncode == 0, result.stderr.decode()
    fields, payloads = read_y4m(result.stdout)
    assert (int(fields["W"]), int(fields["H"])) == (WIDTH * scale, HEIGHT * scale)
    assert fields["C"].startswith("420p10" if peak == 1023 else "420")
    assert len(payloads) == 10
    dtype = np.uint16 if peak == 1023 else np.uint8
    expected = cli_upscale(media[clip], models[model], tmp_path / "cli.mkv")
    for got, want in zip(payloads, expected, strict=True):
        planes = y4m_planes(got, WIDTH * scale, HEIGHT * scale, dtype)
        assert max(int(p.max()) for p in planes) <= peak
        assert planes_psnr(planes, want, peak) > 50
    lines = [line for line in timecodes.read_text().splitlines() if not line.startswith("#")]
    assert [round(float(line)) for line in lines] == timestamps_ms


@pytest.mark.slow
@pytest.mark.parametrize(("example", "size"), [("upscale_encode", (128, 96)), ("upscale_region", (64, 48)),
                                               ("compare_bicubic", (256, 96))])
def test_examples_run(media, models, run_vspipe, example, size):
    result = run_vspipe(media["h264"], "-c", "y4m", "-e", "1", script=EXAMPLES / f"{example}.vpy",
                        model=models["y"])
    assert result.returncode == 0, result.stderr.decode()
    fields, payloads = read_y4m(result.stdout)
    assert ((int(fields["W"]), int(fields["H"])), len(payloads)) == (size, 2)


@pytest.mark.slow
def test_bad_model_is_a_clear_error(media, run_vspipe):
    result = run_vspipe(media["h264"], "-c", "y4m", model="no-such-model")
    assert result.returncode != 0
    assert result.stdout == b""
    assert "vsvidsr.upscale: no model named or found at 'no-such-model'" in result.stderr.decode()


# --- tests in process ----------------------------------------------------------------------------------------

def plane_arrays(frame: vs.VideoFrame) -> list[np.ndarray]:
    return [np.asarray(frame[p]).copy() for p in range(frame.format.num_planes)]


@pytest.mark.parametrize("clip", ["h264", "vfr", "10bit", "gray", "ts"])
def test_source_random_access_equals_linear_decode(media, clip):
    linear = decode_linear(media[clip])
    source = sr.source(media[clip], cache_size=2)
    assert source.num_frames == len(linear)
    order = list(range(len(linear)))
    random.Random(4).shuffle(order)
    for n in order:
        for got, want in zip(plane_arrays(source.get_frame(n)), linear[n], strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"frame {n}")


def test_source_format_and_props(media):
    clip = sr.source(media["10bit"])
    assert clip.format.id == vs.YUV420P10
    assert (clip.width, clip.height, clip.fps) == (WIDTH, HEIGHT, Fraction(25))
    props = clip.get_frame(3).props
    assert (props["_Matrix"], props["_Primaries"], props["_Transfer"]) == (1, 1, 1)
    assert props["_Range"] == vs.RANGE_LIMITED
    assert (props["_SARNum"], props["_SARDen"]) == (1, 1)
    assert (props["_DurationNum"], props["_DurationDen"]) == (1, 25)


def test_vfr_source_durations(media):
    clip = sr.source(media["vfr"])
    durations = [Fraction(f.props["_DurationNum"], f.props["_DurationDen"]) for f in clip.frames()]
    gaps = [Fraction(b - a, 1000) for a, b in zip(VFR_MS, VFR_MS[1:], strict=False)]
    assert durations[:-1] == gaps


def test_upscale_keeps_props_and_length(media, models):
    clip = sr.source(media["vfr"])
    out = sr.upscale(clip, model=models["rgb"], device="cpu")
    assert (out.num_frames, out.fps, out.format.id) == (clip.num_frames, clip.fps, clip.format.id)
    assert (out.width, out.height) == (3 * WIDTH, 3 * HEIGHT)
    assert dict(out.get_frame(5).props) == dict(clip.get_frame(5).props)


def test_rgbs_equals_engine_and_request_order(models):
    """Float RGB goes through Upscaler.upscale_rgb unchanged; batches do not depend on request order."""
    rng = np.random.default_rng(1)
    data = rng.random((5, 3, HEIGHT, WIDTH), dtype=np.float32)
    blank = vs.core.std.BlankClip(width=WIDTH, height=HEIGHT, format=vs.RGBS, length=5, keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), data[n, p])
        return out

    clip = vs.core.std.ModifyFrame(blank, blank, fill)
    expected = Upscaler(models["rgb"], device="cpu").upscale_rgb(torch.from_numpy(data)).numpy()
    out = sr.upscale(clip, model=models["rgb"], batch_size=2, num_streams=2, device="cpu")
    for n in (4, 1, 3, 0, 2):
        np.testing.assert_allclose(np.stack(plane_arrays(out.get_frame(n))), expected[n], atol=1e-6)


def test_bad_model_and_variable_format_raise_vs_error(media, models):
    clip = sr.source(media["h264"])
    with pytest.raises(vs.Error, match="no model named or found"):
        sr.upscale(clip, model="no-such-model")
    mixed = vs.core.std.Splice([clip, vs.core.resize.Point(clip, format=vs.YUV444P8)], mismatch=True)
    with pytest.raises(vs.Error, match="variable-format or variable-size"):
        sr.upscale(mixed, model=models["y"])
    resized = vs.core.std.Splice([clip, vs.core.resize.Point(clip, width=2 * WIDTH)], mismatch=True)
    with pytest.raises(vs.Error, match="variable-format or variable-size"):
        sr.upscale(resized, model=models["y"])


def test_strength_blends_a_model_pair_or_is_a_vs_error(models, tmp_path):
    clip = vs.core.std.BlankClip(width=WIDTH, height=HEIGHT, format=vs.RGBS, length=1, color=[0.2, 0.5, 0.8])
    torch.manual_seed(1)
    gan = str(save_checkpoint(tmp_path / "gan.safetensors", create_model("espcn", scale=3, channels=3, features=8,
                                                                          mid_features=8), psnr_model=models["rgb"]))
    frame = torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1).expand(1, 3, HEIGHT, WIDTH)
    expected = {strength: Upscaler(gan, device="cpu", strength=strength).upscale_rgb(frame)[0].numpy()
                for strength in (0.5, 1.0)}
    assert not np.allclose(expected[0.5], expected[1.0])
    out = sr.upscale(clip, model=gan, strength=0.5, device="cpu")
    np.testing.assert_allclose(np.stack(plane_arrays(out.get_frame(0))), expected[0.5], atol=1e-6)
    with pytest.raises(vs.Error, match="no PSNR model to interpolate with"):
        sr.upscale(clip, model=models["rgb"], strength=0.5)
    with pytest.raises(vs.Error, match="strength must be a number from 0 to 1, not '0.5'"):
        sr.upscale(clip, model=gan, strength="0.5")  # what vspipe -a passes


def test_an_untagged_clip_keeps_its_matrix_at_720_lines_out_and_its_chroma_siting():
    """An RGB model re-encoded untagged 360-line YUV as BT.709 (resolved at the output's 720 lines), unlike
    the CLI; and _ChromaLocation was ignored."""
    red = vs.core.std.BlankClip(width=32, height=360, format=vs.YUV420P8, color=[81, 90, 240], length=1)
    frame = sr.upscale(red, model="srvgg-x2", device="cpu", precision="fp32").get_frame(0)
    assert [int(np.asarray(frame[p])[frame[p].shape[0] // 2, frame[p].shape[1] // 2]) for p in range(3)] == \
        pytest.approx([81, 90, 240], abs=2)
    props = {"_ChromaLocation": 2, "_Matrix": 9, "_Range": vs.RANGE_LIMITED}  # top-left, as BT.2020 sources
    assert sr.filter.color_info(props).chroma_location == 3  # FFmpeg's AVCHROMA_LOC_TOPLEFT


def test_streams_run_batches_at_the_same_time(models, monkeypatch):
    """With num_streams=2, two frames requested together are computed together (each waits for the other)."""
    meeting = threading.Barrier(2, timeout=10)
    run = Worker.run
    monkeypatch.setattr(Worker, "run", lambda self, frames: (meeting.wait(), run(self, frames))[1])
    monkeypatch.setattr(vs.core, "num_threads", max(vs.core.num_threads, 2))
    clip = vs.core.std.BlankClip(width=WIDTH, height=HEIGHT, format=vs.YUV420P8, length=4)
    # its frames are all alike: held frames reused would leave a stream waiting for the other alone
    out = sr.upscale(clip, model=models["y"], num_streams=2, device="cpu", reuse_held=False)
    assert len(list(out.frames(prefetch=2))) == 4


@pytest.mark.parametrize(("clip_format", "arguments", "fragment"), [
    (vs.YUV420P8, {"model": None}, "model must be a model name or a file path, not NoneType"),
    (vs.YUV420P8, {"num_streams": "2"}, "num_streams must be a whole number, not '2'"),
    (vs.YUV420P8, {"batch_size": 2.5}, "batch_size must be a whole number, not 2.5"),
    (vs.YUV420P8, {"tile_pad": -1}, "tile_pad must be at least 0"),
    (vs.GRAY32, {}, "Gray32 has 32-bit integer samples"),
    (vs.YUV420P8, {"model": "weights/x.safetensors"}, "relative paths are read from the script's folder"),
])
def test_wrong_arguments_and_formats_are_vs_errors(models, clip_format, arguments, fragment):
    clip = vs.core.std.BlankClip(width=WIDTH, height=HEIGHT, format=clip_format, length=2)
    with pytest.raises(vs.Error, match=re.escape(fragment)):
        sr.upscale(clip, **{"model": models["y"], "device": "cpu", **arguments})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_gpu_index_without_a_gpu_is_refused(models):
    clip = vs.core.std.BlankClip(width=WIDTH, height=HEIGHT, format=vs.YUV420P8, length=2)
    with pytest.raises(vs.Error, match="device_index=5 but there is no CUDA GPU"):
        sr.upscale(clip, model=models["y"], device_index=5)


@pytest.mark.skipif(cpu_has_native_fp16(), reason="this CPU computes fp16 natively")
def test_fp16_on_a_cpu_without_fp16_is_refused(models):
    clip = vs.core.std.BlankClip(width=WIDTH, height=HEIGHT, format=vs.YUV420P8, length=2)
    with pytest.raises(vs.Error, match="this CPU has no native fp16 arithmetic"):
        sr.upscale(clip, model=models["y"], device="cpu", precision="fp16")
