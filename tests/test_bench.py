"""`vidsr bench` runs every stage on the CPU and reports consistent figures (no timing assertions)."""

from __future__ import annotations

import json

from vidsr.cli import main


def test_bench_json_reports_every_stage(capsys, random_espcn):
    assert main(["bench", "--model", str(random_espcn), "--size", "64x48", "--frames", "6", "-b", "2",
                 "--device", "cpu", "--preset", "ultrafast", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_size"] == "64x48" and result["output_size"] == "128x96"
    assert result["frames"] == 6 and result["device"] == "cpu"
    assert result["encoder_options"] == {"crf": "18", "preset": "ultrafast"}  # vidsr's CRF, the given preset
    for key in ("decode_fps", "model_fps", "encode_fps", "end_to_end_fps", "steady_fps", "naive_fps", "peak_tflops"):
        assert result[key] > 0, key
    assert result["upload_fps"] is None and result["peak_gpu_memory_mb"] is None  # CPU: no bus, no GPU memory
    assert 0 < result["roofline_fraction"] < 1
