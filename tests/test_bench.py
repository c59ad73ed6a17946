"""`vidsr bench` runs every stage on the CPU and reports consistent figures (no timing assertions); the CPU's
convolution peak is measured once and cached; the model's GMAC/s are its MACs times its model-only fps."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from vidsr.cli import main
from vidsr.compute.upscaler import Upscaler, cpu_runs_bf16
from vidsr.tools import bench


@pytest.fixture(autouse=True)
def short_peak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of the test's own, and a peak benchmark of a small convolution for a moment, not 1.5 s."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(bench, "PEAK_CONV", (64, 64, 3, 32, 32))
    monkeypatch.setattr(bench, "PEAK_SECONDS", 0.05)
    return tmp_path / "cache" / "vidsr" / "cpu_conv_peak.json"


def test_bench_json_reports_every_stage(capsys, random_espcn, short_peak: Path):
    assert main(["bench", "--model", str(random_espcn), "--size", "64x48", "--frames", "6", "-b", "2",
                 "--device", "cpu", "--preset", "ultrafast", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_size"] == "64x48" and result["output_size"] == "128x96"
    assert result["frames"] == 6 and result["device"] == "cpu"
    assert result["encoder_options"] == {"crf": "18", "preset": "ultrafast"}  # vidsr's CRF, the given preset
    for key in ("decode_fps", "model_fps", "encode_fps", "end_to_end_fps", "steady_fps", "naive_fps", "peak_tflops",
                "model_gmacs_per_s", "peak_gmacs_per_s"):
        assert result[key] > 0, key
    assert result["upload_fps"] is None and result["peak_gpu_memory_mb"] is None  # CPU: no bus, no GPU memory
    # the share of the peak follows from the two rates; its size is a timing, which a loaded host can push past 1
    assert result["roofline_fraction"] == pytest.approx(result["model_gmacs_per_s"] / result["peak_gmacs_per_s"])
    assert "convolution" in result["peak_kind"]  # the CPU's peak is the convolution benchmark, not a matmul
    assert result["cpu_conv_peaks"][result["precision"]] == result["peak_gmacs_per_s"]  # the model's precision's
    assert set(result["cpu_conv_peaks"]) == ({"float32", "bfloat16"} if cpu_runs_bf16() else {"float32"})
    assert sorted(json.loads(short_peak.read_text()).values()) == sorted(result["cpu_conv_peaks"].values())


def test_the_cpu_peak_is_measured_once_then_read_from_the_cache(short_peak: Path, monkeypatch):
    calls = []

    def counted(dtype: torch.dtype) -> float:
        calls.append(dtype)
        return bench.measure_cpu_conv_gmacs(dtype)

    first = bench.cpu_conv_peak(torch.float32, counted)
    assert calls == [torch.float32] and first > 0 and short_peak.is_file()
    assert bench.cpu_conv_peak(torch.float32, counted) == first and len(calls) == 1  # read back, not measured
    key = next(iter(json.loads(short_peak.read_text())))
    assert bench.cpu_name() in key and torch.__version__ in key and f"{torch.get_num_threads()} threads" in key
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:  # another thread count is another peak
        bench.cpu_conv_peak(torch.float32, counted)
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2 and len(json.loads(short_peak.read_text())) == 2
    bench.cpu_conv_peak(torch.float32, counted, refresh=True)  # --remeasure-peak
    assert len(calls) == 3
    short_peak.write_text("not json")  # a damaged cache is measured afresh, not an error
    assert bench.cpu_conv_peak(torch.float32, counted) > 0 and len(calls) == 4


def test_gmacs_per_second_are_the_models_macs_times_its_model_only_fps(random_espcn, monkeypatch):
    """With a timer that says every timed stretch took 0.8 s, the figures follow from the model's MACs alone."""
    ticks = itertools.count(step=0.8)
    monkeypatch.setattr(bench, "clock", lambda: next(ticks))  # each _timed reads it twice: 0.8 s a stretch
    result = bench.run_bench(str(random_espcn), 64, 48, frames=8, batch_size=2, device="cpu", preset="ultrafast")
    assert result.model_fps == pytest.approx(2 / 0.8)  # 8 frames in batches of 2: one timed call of 2 frames
    macs_per_frame = Upscaler(str(random_espcn), device="cpu").descriptor.gmacs(128, 96)
    assert result.model_gmacs_per_s == pytest.approx(macs_per_frame * result.model_fps)
    cin, cout, k, h, w = bench.PEAK_CONV
    assert result.peak_gmacs_per_s == pytest.approx(h * w * cin * cout * k * k / 0.8 / 1e9)  # the faked peak too
    assert result.roofline_fraction == pytest.approx(result.model_gmacs_per_s / result.peak_gmacs_per_s)
    assert result.model_tflops == pytest.approx(2 * result.model_gmacs_per_s / 1000)  # 2 FLOPs per MAC
