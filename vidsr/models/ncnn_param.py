"""ncnn's `.param` graph format, read without torch: the layers, and the facts `vidsr models` lists (channels,
scale, parameters, cost) derived from them.

A `.param` file starts with the magic number 7767517, then the layer and blob counts, then one layer a line:
type, name, input count, output count, the input and output blob names, and `key=value` parameters. A key of
-23300 - k holds the array parameter k (`-23310=1,0.2` is parameter 10 = [0.2]). Binary `.param.bin` files
(ncnn2mem) are not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from vidsr.errors import ModelError

PARAM_MAGIC = 7767517
ARRAY_KEY_BASE = -23300
Value = int | float | list[int | float]
CONVOLUTIONS = {"Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise"}


@dataclass
class Layer:
    """One line of a `.param` file."""

    kind: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, Value] = field(default_factory=dict)

    def int(self, key: int, default: int = 0) -> int:
        value = self.params.get(key, default)
        return int(value[0] if isinstance(value, list) else value)

    def float(self, key: int, default: float = 0.0) -> float:
        value = self.params.get(key, default)
        return float(value[0] if isinstance(value, list) else value)

    def floats(self, key: int) -> list[float]:
        value = self.params.get(key, [])
        return [float(v) for v in value] if isinstance(value, list) else [float(value)]


def _number(text: str) -> int | float:
    return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)


def _parameter(item: str) -> tuple[int, Value]:
    key_text, value = item.split("=", 1)
    key = int(key_text)
    if key > ARRAY_KEY_BASE:
        return key, _number(value)
    count, *values = value.split(",")
    if len(values) != int(count):
        raise ValueError(f"array of {count} with {len(values)} values")
    return ARRAY_KEY_BASE - key, [_number(v) for v in values]


def _layer(words: list[str]) -> Layer:
    n_in, n_out = int(words[2]), int(words[3])
    blobs = words[4 : 4 + n_in + n_out]
    if len(blobs) != n_in + n_out or n_in < 0 or n_out < 0:
        raise ValueError("fewer blob names than the counts say")
    params = dict(_parameter(item) for item in words[4 + n_in + n_out :])
    return Layer(words[0], words[1], blobs[:n_in], blobs[n_in:], params)


def parse_param(text: str, name: str = "model.param") -> list[Layer]:
    """The layers of a text `.param` file, in file order (the order of their weights in the `.bin`)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(PARAM_MAGIC)]:
        raise ModelError(f"{name} is not an ncnn .param file (its first line is not {PARAM_MAGIC})")
    try:
        layer_count = int(lines[1][0])
    except (IndexError, ValueError):
        raise ModelError(f"{name}: the second line must give the layer and blob counts") from None
    layers = []
    for number, words in enumerate(lines[2:], start=3):
        try:
            layers.append(_layer(words))
        except (IndexError, ValueError):
            raise ModelError(f"{name} line {number} is not an ncnn layer: {' '.join(words)[:100]!r}") from None
    if len(layers) != layer_count:
        raise ModelError(f"{name} declares {layer_count} layers but holds {len(layers)}")
    return layers


def read_param(path: str | Path) -> list[Layer]:
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise ModelError(f"{path.name} is a binary .param file (ncnn2mem's); vidsr reads text ones") from None
    return parse_param(text, path.name)


def input_blob(layers: list[Layer]) -> str:
    inputs = [layer for layer in layers if layer.kind == "Input"]
    if len(inputs) != 1:
        raise ModelError(f"an ncnn graph with {len(inputs)} inputs: vidsr runs models with one input")
    return inputs[0].outputs[0]


def output_blob(layers: list[Layer]) -> str:
    consumed = {blob for layer in layers for blob in layer.inputs}
    ends = [blob for layer in layers for blob in layer.outputs if blob not in consumed]
    if len(ends) != 1:
        raise ModelError(f"an ncnn graph with {len(ends)} outputs ({', '.join(ends[:4])}): vidsr runs one")
    return ends[0]


def kernel_shape(layer: Layer) -> tuple[int, int, int, int]:
    """(output channels, input channels per group, kernel height, kernel width) of a convolution layer, the
    input channels derived from the weight count as ncnn does."""
    out_channels, kernel_w = layer.int(0), layer.int(1)
    kernel_h = layer.int(11, kernel_w)
    per_group = layer.int(6) // max(1, out_channels * kernel_h * kernel_w)
    if min(out_channels, kernel_w, per_group) <= 0 or layer.int(6) != out_channels * kernel_h * kernel_w * per_group:
        raise ModelError(f"ncnn layer {layer.name}: weight count {layer.int(6)} does not fit {out_channels} outputs "
                         f"of {kernel_w}x{kernel_h}")
    return out_channels, per_group, kernel_h, kernel_w


@dataclass(frozen=True)
class GraphFacts:
    """What a graph's parameters say, without running it."""

    in_channels: int
    out_channels: int
    scale: float  # output side / input side
    params: int
    macs_per_input_pixel: float
    final_resize: float | None  # a resize by this factor after the last convolution (e.g. an x4 network made x2)


def _blob_scale(layer: Layer, scale: float) -> float:
    """The spatial scale of a layer's output, relative to the graph's input, given its input's."""
    if layer.kind == "Interp":
        if layer.int(3) or layer.int(4):  # a fixed output size has no scale
            raise ModelError(f"ncnn layer {layer.name} resizes to a fixed size: vidsr runs any frame size")
        return scale * layer.float(2, 1.0)
    if layer.kind == "PixelShuffle":
        return scale * layer.int(0, 1)
    if layer.kind in CONVOLUTIONS:
        stride = layer.int(3, 1)
        return scale * stride if layer.kind.startswith("Deconvolution") else scale / stride
    return scale


def _channels(layer: Layer, given: list[int | None]) -> int | None:
    """A layer's output channels from its inputs' (None: not yet known, e.g. the graph input before a convolution
    has read it)."""
    if layer.kind in CONVOLUTIONS:
        return layer.int(0)
    if layer.kind == "PixelShuffle":
        return given[0] // layer.int(0, 1) ** 2 if given[0] else None
    if layer.kind == "Concat":
        return sum(given) if all(given) else None  # type: ignore[arg-type]
    return given[0] if given else None


def graph_facts(layers: list[Layer]) -> GraphFacts:
    first = input_blob(layers)
    scales: dict[str, float] = {first: 1.0}
    channels: dict[str, int | None] = {first: None}
    in_channels, params, macs = None, 0, 0.0
    for layer in layers:
        if layer.kind == "Input":
            continue
        out_scale = _blob_scale(layer, scales.get(layer.inputs[0], 1.0) if layer.inputs else 1.0)
        if layer.kind in CONVOLUTIONS:
            out_channels, in_per_group, _, _ = kernel_shape(layer)
            params += layer.int(6) + out_channels * bool(layer.int(5))
            macs += layer.int(6) * out_scale**2
            if in_channels is None:  # the first convolution reads the input (directly or through a Split)
                groups = layer.int(7, 1) if layer.kind.endswith("DepthWise") else 1
                in_channels = in_per_group * groups
                channels[first] = in_channels
        elif layer.kind == "PReLU":
            params += max(1, layer.int(0, 1))
        out_channels = _channels(layer, [channels.get(blob) for blob in layer.inputs])
        scales.update(dict.fromkeys(layer.outputs, out_scale))
        channels.update(dict.fromkeys(layer.outputs, out_channels))
    if in_channels is None:
        raise ModelError("an ncnn graph without convolutions: not a super-resolution network")
    output = output_blob(layers)
    last = next(layer for layer in layers if output in layer.outputs)
    final_resize = last.float(2, 1.0) if last.kind == "Interp" else None
    return GraphFacts(in_channels, channels[output] or in_channels, scales[output], params, macs, final_resize)
