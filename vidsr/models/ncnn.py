"""ncnn models (`.param` + `.bin`) as PyTorch modules, converted at load time.

ncnn is the format of Real-ESRGAN's official `*-ncnn-vulkan` releases and of Upscayl's and video2x's model
folders. The `.param` graph (`vidsr.models.ncnn_param`) becomes an `NcnnNetwork` that runs it with torch
operations, so the engine's tiling, batching, precisions and exports apply as to any other model. The `.bin`
holds the layers' weights in graph order, as ncnn's ModelBin reads them: a convolution's weights behind a 4-byte
tag that says how they are stored (fp16, fp32, or 8-bit indices into a table), then its fp32 bias untagged. Only
the layer types of image-to-image networks are known; any other is refused, naming it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidsr.errors import ModelError
from vidsr.models.archs.base import ModelDescriptor, color_of
from vidsr.models.ncnn_param import Layer, graph_facts, input_blob, kernel_shape, output_blob, read_param

FP16_TAG = 0x01306B47
INT8_TAG = 0x000D4B38
RAW_WITH_SCALE_TAG = 0x0002C056


class WeightReader:
    """A `.bin` file read front to back, as the graph's layers ask for their weights."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.offset, self.name = data, 0, name

    def _take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise ModelError(f"{self.name} is shorter than its .param file needs (truncated, or another model's)")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def raw(self, count: int) -> torch.Tensor:
        """`count` float32 values with no tag (biases, slopes)."""
        return torch.from_numpy(np.frombuffer(self._take(4 * count), dtype="<f4").copy())

    def tagged(self, count: int) -> torch.Tensor:
        """`count` values behind the tag that says how they are stored."""
        tag = struct.unpack("<I", self._take(4))[0]
        if tag == FP16_TAG:
            values = np.frombuffer(self._take(2 * count), dtype="<f2").astype(np.float32)
            self._take((-2 * count) % 4)  # fp16 blobs are padded to 4 bytes
            return torch.from_numpy(values)
        if tag == INT8_TAG:
            raise ModelError(f"{self.name} holds int8-quantised weights, which vidsr does not read")
        if tag in (0, RAW_WITH_SCALE_TAG):
            return self.raw(count)
        table = self.raw(256)  # any other non-zero tag: 8-bit indices into a table of 256 floats
        indices = np.frombuffer(self._take(count), dtype=np.uint8)
        self._take((-count) % 4)
        return table[torch.from_numpy(indices.astype(np.int64))]

    def check_end(self) -> None:
        if self.offset != len(self.data):
            raise ModelError(f"{self.name} has {len(self.data) - self.offset} bytes more than its .param file reads")


def _activation(layer: Layer) -> nn.Module:
    """A convolution's fused activation (parameters 9 and 10)."""
    kind, values = layer.int(9), layer.floats(10)
    makers: dict[int, Callable[[], nn.Module]] = {
        0: nn.Identity, 1: nn.ReLU, 2: lambda: nn.LeakyReLU(values[0] if values else 0.0),
        3: lambda: nn.Hardtanh(values[0], values[1]), 4: nn.Sigmoid, 5: nn.Mish, 6: nn.Hardswish,
    }
    if kind not in makers:
        raise ModelError(f"ncnn layer {layer.name}: fused activation type {kind} is not supported")
    return makers[kind]()


class Pad(nn.Module):
    """Explicit (left, right, top, bottom) padding; negative amounts crop."""

    def __init__(self, amounts: tuple[int, int, int, int], mode: str = "constant", value: float = 0.0) -> None:
        super().__init__()
        self.amounts, self.mode, self.value = amounts, mode, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not any(self.amounts):
            return x
        if self.mode == "constant":
            return F.pad(x, self.amounts, value=self.value)
        return F.pad(x, self.amounts, mode=self.mode)


def _padding_amounts(layer: Layer) -> tuple[int, int, int, int]:
    left = layer.int(4)
    if left < 0:
        raise ModelError(f"ncnn layer {layer.name}: automatic ('same') padding {left} is not supported")
    top = layer.int(14, left)
    return left, layer.int(15, left), top, layer.int(16, top)


def _geometry(layer: Layer) -> dict[str, tuple[int, int]]:
    stride_w, dilation_w = layer.int(3, 1), layer.int(2, 1)
    return {"stride": (layer.int(13, stride_w), stride_w), "dilation": (layer.int(12, dilation_w), dilation_w)}


def _convolution(layer: Layer, weights: WeightReader) -> nn.Module:
    out_channels, in_per_group, kernel_h, kernel_w = kernel_shape(layer)
    groups = layer.int(7, 1) if layer.kind == "ConvolutionDepthWise" else 1
    if layer.int(8):
        raise ModelError(f"ncnn layer {layer.name} is int8-quantised, which vidsr does not read")
    amounts, value = _padding_amounts(layer), layer.float(18)
    # Zero padding on opposite sides alike is the convolution's own: a separate pad is a copy of its input.
    inside = value == 0 and amounts[0] == amounts[1] and amounts[2] == amounts[3]
    conv = nn.Conv2d(in_per_group * groups, out_channels, (kernel_h, kernel_w), groups=groups,
                     bias=bool(layer.int(5)), padding=(amounts[2], amounts[0]) if inside else 0, **_geometry(layer))
    conv.weight.data = weights.tagged(layer.int(6)).reshape(conv.weight.shape)
    if conv.bias is not None:
        conv.bias.data = weights.raw(out_channels)
    return nn.Sequential(Pad((0, 0, 0, 0) if inside else amounts, value=value), conv, _activation(layer))


def _deconvolution(layer: Layer, weights: WeightReader) -> nn.Module:
    out_channels, in_per_group, kernel_h, kernel_w = kernel_shape(layer)
    groups = layer.int(7, 1) if layer.kind == "DeconvolutionDepthWise" else 1
    in_channels = in_per_group * groups
    deconv = nn.ConvTranspose2d(in_channels, out_channels, (kernel_h, kernel_w), groups=groups,
                                bias=bool(layer.int(5)), **_geometry(layer))
    # ncnn stores (groups, out / groups, in / groups, kh, kw); torch wants (in, out / groups, kh, kw)
    stored = weights.tagged(layer.int(6)).reshape(groups, out_channels // groups, in_channels // groups,
                                                  kernel_h, kernel_w)
    deconv.weight.data = stored.transpose(1, 2).reshape(deconv.weight.shape).contiguous()
    if deconv.bias is not None:
        deconv.bias.data = weights.raw(out_channels)
    left, right, top, bottom = _padding_amounts(layer)
    extra_right, extra_bottom = layer.int(18), layer.int(19)  # output padding
    crop = Pad((-left, extra_right - right, -top, extra_bottom - bottom))
    return nn.Sequential(deconv, crop, _activation(layer))


class Interp(nn.Module):
    """Nearest, bilinear or bicubic resizing by a factor (fixed output sizes are refused by the graph check)."""

    MODES = {1: "nearest", 2: "bilinear", 3: "bicubic"}

    def __init__(self, layer: Layer) -> None:
        super().__init__()
        if layer.int(0) not in self.MODES:
            raise ModelError(f"ncnn layer {layer.name}: resize type {layer.int(0)} is not supported")
        self.mode = self.MODES[layer.int(0)]
        self.factors = (layer.float(1, 1.0), layer.float(2, 1.0))
        self.align_corners = None if self.mode == "nearest" else bool(layer.int(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2] * self.factors[0]), int(x.shape[-1] * self.factors[1]))
        return F.interpolate(x, size=size, mode=self.mode, align_corners=self.align_corners)


class PReLU(nn.Module):
    def __init__(self, slopes: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(slopes.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.weight.to(x.dtype).view(-1))  # one pass; torch.where took three


BINARY_OPS: dict[int, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    0: torch.add, 1: torch.sub, 2: torch.mul, 3: torch.div, 4: torch.maximum, 5: torch.minimum, 6: torch.pow,
    7: lambda a, b: b - a, 8: lambda a, b: b / a,
}


class BinaryOp(nn.Module):
    def __init__(self, layer: Layer) -> None:
        super().__init__()
        if layer.int(0) not in BINARY_OPS:
            raise ModelError(f"ncnn layer {layer.name}: BinaryOp operation {layer.int(0)} is not supported")
        self.op = BINARY_OPS[layer.int(0)]
        self.scalar = layer.float(2) if layer.int(1) else None

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return self.op(a, torch.full((), self.scalar, dtype=a.dtype, device=a.device) if b is None else b)


class Eltwise(nn.Module):
    """Product (0), weighted sum (1) or maximum (2) of its inputs."""

    def __init__(self, layer: Layer) -> None:
        super().__init__()
        self.op = layer.int(0, 1)
        if self.op not in (0, 1, 2):
            raise ModelError(f"ncnn layer {layer.name}: Eltwise operation {self.op} is not supported")
        self.coeffs = layer.floats(1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.op == 1:
            return self._weighted_sum(inputs, self.coeffs or [1.0] * len(inputs))
        combine = {0: torch.mul, 2: torch.maximum}[self.op]
        result = inputs[0]
        for x in inputs[1:]:
            result = combine(result, x)
        return result

    @staticmethod
    def _weighted_sum(inputs: tuple[torch.Tensor, ...], coeffs: list[float]) -> torch.Tensor:
        """One pass per input after the first, which leads if its coefficient is 1 (RRDB's 0.2 x + skip: one
        pass, not a scaling pass and an addition)."""
        terms = sorted(zip(inputs, coeffs, strict=True), key=lambda term: term[1] != 1)
        first, scale = terms[0]
        result = first if scale == 1 else first * scale
        for x, c in terms[1:]:
            result = torch.add(result, x, alpha=c)
        return result


class Concat(nn.Module):
    def __init__(self, layer: Layer) -> None:
        super().__init__()
        if layer.int(0) not in (0, -3):
            raise ModelError(f"ncnn layer {layer.name}: Concat along axis {layer.int(0)} (only channels)")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=1)


class PixelShuffle(nn.Module):
    """Mode 0 is torch's channel order; mode 1 TensorFlow's depth_to_space."""

    def __init__(self, layer: Layer) -> None:
        super().__init__()
        self.factor, self.mode = layer.int(0, 1), layer.int(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == 0:
            return F.pixel_shuffle(x, self.factor)
        n, c, h, w = x.shape
        r = self.factor
        return x.view(n, r, r, c // (r * r), h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c // (r * r), h * r, w * r)


TO_THE_END = -233  # ncnn's size meaning "the rest, less the offsets at both ends"


class Crop(nn.Module):
    """A crop of fixed offsets, in either of ncnn's forms: per dimension an offset with a size (or the rest, less
    an offset from the end; keys 0-8, as Caffe's converter writes them), or ONNX Slice's starts / ends / axes
    (keys 9-11, as onnx2ncnn and pnnx write them). Axes count over (channels, height, width)."""

    def __init__(self, layer: Layer) -> None:
        super().__init__()
        self.slices = [slice(None)] * 4  # (N, C, H, W); Python's slices count negatives from the end and clamp
        if 9 in layer.params:
            for axis, start, stop in zip(layer.floats(11) or range(3), layer.floats(9), layer.floats(10), strict=False):
                self.slices[int(axis) % 3 + 1] = slice(int(start), int(stop))
            return
        for dim, (offset, size, back) in {1: (2, 5, 8), 2: (1, 4, 7), 3: (0, 3, 6)}.items():
            start, length, end = layer.int(offset), layer.int(size, TO_THE_END), layer.int(back)
            self.slices[dim] = slice(start, (-end or None) if length == TO_THE_END else start + length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[tuple(self.slices)]


def _padding_layer(layer: Layer) -> nn.Module:
    modes = {0: "constant", 1: "replicate", 2: "reflect"}
    if layer.int(4) not in modes or layer.int(7) or layer.int(8):
        raise ModelError(f"ncnn layer {layer.name}: padding type {layer.int(4)} or channel padding is not supported")
    top, bottom, left, right = (layer.int(key) for key in range(4))
    return Pad((left, right, top, bottom), modes[layer.int(4)], layer.float(5))


LAYERS: dict[str, Callable[[Layer, WeightReader], nn.Module]] = {
    "Convolution": _convolution,
    "ConvolutionDepthWise": _convolution,
    "Deconvolution": _deconvolution,
    "DeconvolutionDepthWise": _deconvolution,
    "PReLU": lambda layer, weights: PReLU(weights.raw(max(1, layer.int(0, 1)))),
    "ReLU": lambda layer, _: nn.LeakyReLU(layer.float(0)) if layer.float(0) else nn.ReLU(),
    "Sigmoid": lambda layer, _: nn.Sigmoid(),
    "TanH": lambda layer, _: nn.Tanh(),
    "Clip": lambda layer, _: nn.Hardtanh(layer.float(0, -3.4e38), layer.float(1, 3.4e38)),
    "Interp": lambda layer, _: Interp(layer),
    "BinaryOp": lambda layer, _: BinaryOp(layer),
    "Eltwise": lambda layer, _: Eltwise(layer),
    "Concat": lambda layer, _: Concat(layer),
    "PixelShuffle": lambda layer, _: PixelShuffle(layer),
    "Crop": lambda layer, _: Crop(layer),
    "Padding": lambda layer, _: _padding_layer(layer),
    "Dropout": lambda layer, _: nn.Identity(),
    "Noop": lambda layer, _: nn.Identity(),
}
SPLIT = "Split"  # one blob under several names: nothing to compute


class NcnnNetwork(nn.Module):
    """An ncnn graph run with torch: one input blob (N, C, H, W) in, one output blob out."""

    def __init__(self, layers: list[Layer], weights: WeightReader) -> None:
        super().__init__()
        self.input_blob, self.output_blob = input_blob(layers), output_blob(layers)
        self.blocks = nn.ModuleDict()
        self.steps: list[tuple[str | None, list[str], list[str]]] = []  # (block key, or None for a Split)
        for index, layer in enumerate(layers):
            if layer.kind == "Input":
                continue
            if layer.kind == SPLIT:
                self.steps.append((None, layer.inputs, layer.outputs))
                continue
            if layer.kind not in LAYERS:
                raise ModelError(f"ncnn layer type {layer.kind} ({layer.name}) is not supported; vidsr converts "
                                 f"{', '.join(sorted([*LAYERS, SPLIT]))}")
            self.blocks[f"layer{index}"] = LAYERS[layer.kind](layer, weights)
            self.steps.append((f"layer{index}", layer.inputs, layer.outputs))
        weights.check_end()
        last_reader = {blob: step for step, (_, inputs, _) in enumerate(self.steps) for blob in inputs}
        # a blob is dropped after its last reader, so memory holds what the graph needs now, not all it made
        self.freed: list[list[str]] = [[] for _ in self.steps]
        for blob, step in last_reader.items():
            self.freed[step].append(blob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blobs = {self.input_blob: x}
        for (key, inputs, outputs), freed in zip(self.steps, self.freed, strict=True):
            if key is None:
                blobs.update(dict.fromkeys(outputs, blobs[inputs[0]]))
            else:
                blobs[outputs[0]] = self.blocks[key](*[blobs[name] for name in inputs])
            for name in freed:
                del blobs[name]
        return blobs[self.output_blob]


def load_ncnn(param_path: str | Path, licence: str | None = None) -> ModelDescriptor:
    """An ncnn model (the `.bin` beside `param_path`) as a descriptor; its channels and scale read from the graph
    and checked by running it once on a small input, so a graph that fails does so here in one line."""
    param_path = Path(param_path)
    bin_path = param_path.with_suffix(".bin")
    if not bin_path.is_file():
        raise ModelError(f"{param_path.name} needs its weights beside it: {bin_path.name} not found")
    layers = read_param(param_path)
    facts = graph_facts(layers)
    network = NcnnNetwork(layers, WeightReader(bin_path.read_bytes(), bin_path.name)).eval().requires_grad_(False)
    scale = round(facts.scale)
    if scale != facts.scale or not 1 <= scale <= 8 or facts.in_channels not in (1, 3, 4):
        raise ModelError(f"{param_path.name} scales by {facts.scale:g} with {facts.in_channels} input channels: "
                         "vidsr runs whole scales 1 to 8 on grey, RGB or RGBA")
    probe = 8
    try:
        with torch.no_grad():
            out = network(torch.rand(1, facts.in_channels, probe, probe))
    except RuntimeError as exc:
        raise ModelError(f"{param_path.name}: the graph fails on a {probe}x{probe} input: "
                         f"{' '.join(str(exc).split())[:160]}") from None
    if tuple(out.shape[1:]) != (facts.out_channels, probe * scale, probe * scale):
        raise ModelError(f"{param_path.name} gives {tuple(out.shape[1:])} for a {probe}x{probe} input, not the "
                         f"x{scale} its graph says")
    metadata = {"name": param_path.stem, "format": "ncnn"}
    if facts.final_resize is not None:
        metadata["note"] = (f"an x{scale / facts.final_resize:g} network whose output is then resized by "
                            f"{facts.final_resize:g} (bicubic or bilinear), not an x{scale} network")
    return ModelDescriptor(
        model=network, arch="ncnn", scale=scale, in_channels=facts.in_channels, out_channels=facts.out_channels,
        color=color_of(facts.in_channels), source="ncnn", hyperparams={"param": param_path.name},
        metadata=metadata, licence=licence, luma_range="full",  # grey ncnn models were trained on plain grey
    )
