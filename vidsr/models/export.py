"""ONNX export: a model (vidsr's, a third-party one, or a chain) as an ONNX graph for TensorRT, OpenVINO, ncnn or
vs-mlrt pipelines. Batch, height and width are dynamic where the graph allows; the file is checked against
onnxruntime at a second size before it is kept, and exported at a fixed size (said so) when dynamic sizes do not
survive tracing (window-attention transformers)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidsr.errors import ModelError, NumberRange, OutputError
from vidsr.models.archs import ModelDescriptor
from vidsr.models.chain import ModelSpec, load_models

log = logging.getLogger("vidsr")

DEFAULT_OPSET = 17
DEFAULT_SIZE = (64, 64)  # width, height of the example input the graph is traced with
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 2e-2


@dataclass(frozen=True)
class ExportResult:
    path: Path
    dynamic_size: bool
    max_difference: float  # largest |onnxruntime - PyTorch| on a random frame, at a size other than the traced one
    channels: int
    scale: int


class _Network(torch.nn.Module):
    """The model's network, RGBA models given opaque alpha, outputs clamped to [0, 1] as vidsr runs them."""

    def __init__(self, descriptor: ModelDescriptor) -> None:
        super().__init__()
        self.model = descriptor.model
        self.rgba = descriptor.in_channels == 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rgba:
            x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        return self.model(x)[:, :3].clamp(0, 1)


def export_onnx(models: ModelSpec | Sequence[ModelSpec], output: str | Path, fp16: bool = False,
                opset: int = DEFAULT_OPSET, size: tuple[int, int] = DEFAULT_SIZE) -> ExportResult:
    """Write `models` (one, or a chain) to `output` as ONNX with input "input" and output "output", (N,C,H,W)
    float in [0, 1]; C is 1 for luma models (vidsr's own see studio-range luma, 16-235 / 255), else 3."""
    supported_opsets().check("opset", opset)  # the exporter writes others that onnxruntime cannot load
    descriptor = load_models(models)
    output = Path(output)
    if not output.parent.is_dir():
        raise OutputError(f"{output.parent}: no such folder")
    width, height = (side + pad for side, pad in zip(size, descriptor.padding(*size), strict=True))
    dtype = torch.float16 if fp16 else torch.float32
    if fp16 and not descriptor.supports_fp16:
        raise ModelError(f"{descriptor.arch} does not support fp16: export it in fp32")
    network = _Network(descriptor).eval().to(dtype)
    channels = min(descriptor.in_channels, 3)
    example = torch.rand(1, channels, height, width, dtype=dtype)
    step = _step(descriptor)  # a second size, square for models that take only squares
    check = torch.rand(2, channels, height + 2 * step, width + (2 if descriptor.size_square else 1) * step,
                       dtype=dtype)
    for dynamic in (True, False):
        _trace(network, example, output, opset, dynamic)
        difference = _max_difference(network, output, check if dynamic else example)
        if difference is not None and difference <= (FP16_TOLERANCE if fp16 else FP32_TOLERANCE):
            return ExportResult(output, dynamic, difference, channels, descriptor.scale)
        if dynamic:
            log.warning("%s: the graph does not run at other sizes once exported: exporting at a fixed %dx%d",
                        descriptor.arch, width, height)
    output.unlink(missing_ok=True)
    raise ModelError(f"{descriptor.arch}: the exported graph does not reproduce the model "
                     f"(largest difference {difference}); it cannot be exported with this opset")


def supported_opsets() -> NumberRange:
    """The opsets torch's TorchScript exporter (the one used here) writes: it says so for these, and below
    them it writes graphs onnxruntime refuses as invalid (opset 5)."""
    from torch.onnx import _constants  # no public name holds the range

    return NumberRange(_constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET, whole=True)


def _step(descriptor: ModelDescriptor) -> int:
    """A size change that keeps the model's size requirements (its multiple, at least 8)."""
    return descriptor.size_multiple * max(1, 8 // descriptor.size_multiple)


def _trace(network: torch.nn.Module, example: torch.Tensor, output: Path, opset: int, dynamic: bool) -> None:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints in shapes: checked below instead
            torch.onnx.export(network, (example,), str(output), input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": axes, "output": axes}, opset_version=opset, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways on unsupported operators
        raise ModelError(f"ONNX export failed: {' '.join(str(exc).split())[:300]}") from None


def _max_difference(network: torch.nn.Module, path: Path, x: torch.Tensor) -> float | None:
    """Largest |onnxruntime - PyTorch| on `x`, or None when onnxruntime cannot run the graph on it."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("checking the export needs onnxruntime: pip install 'vidsr[onnx]'") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    try:
        ours = session.run(["output"], {"input": x.numpy()})[0]
    except Exception:  # noqa: BLE001 - onnxruntime raises its own exception types for shape errors
        return None
    with torch.no_grad():
        expected = network(x).numpy()
    if ours.shape != expected.shape:
        return None
    return float(np.abs(ours.astype(np.float64) - expected.astype(np.float64)).max())
