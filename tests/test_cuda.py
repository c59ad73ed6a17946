"""The CUDA path on a real GPU: pinned double-buffered engine vs the CPU, half precision, the memory cap with
tile shrinking, NVENC and a training step. Skipped where no CUDA GPU is present (CI); run on a GPU machine with
`pytest tests/test_cuda.py`."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import vidsr
from vidsr.compute.upscaler import Upscaler
from vidsr.media.frames import frame_to_planes
from vidsr.models.archs import create_model
from vidsr.models.checkpoint import save_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def decoded_planes(path: Path) -> list[list[np.ndarray]]:
    with av.open(str(path)) as c:
        return [frame_to_planes(f) for f in c.decode(video=0)]


def plane_psnr(a: list[list[np.ndarray]], b: list[list[np.ndarray]], peak: float) -> float:
    """PSNR over every plane of every frame of two decoded clips of the same shape."""
    assert len(a) == len(b) and len(a) > 0
    diff = np.concatenate([(x.astype(np.float64) - y).ravel() for fa, fb in zip(a, b, strict=True)
                           for x, y in zip(fa, fb, strict=True)])
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


@pytest.fixture(scope="module")
def small_rrdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RRDBNet x4 with 2 blocks: wide enough (64 features, dense 192-channel concatenations) to hit a memory cap."""
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("models") / "rrdb2.safetensors",
                           create_model("rrdbnet", scale=4, blocks=2))


@pytest.mark.parametrize(("model_fixture", "pix_fmt", "peak"), [
    ("random_espcn", "yuv420p10le", 1023), ("random_rgb_model", "yuv420p", 255)])
def test_cuda_engine_matches_the_cpu(make_clip, tmp_path, request, model_fixture, pix_fmt, peak):
    model = request.getfixturevalue(model_fixture)
    src = make_clip("in.mkv", width=321, height=241, frames=7, vfr=True, pix_fmt=pix_fmt, codec="ffv1", options=())
    outputs = {}
    for device in ("cpu", "cuda:0"):
        outputs[device] = vidsr.upscale_video(src, tmp_path / f"{device[:4]}.mkv", model=model, device=device,
                                              precision="fp32", batch_size=3, encoder="ffv1")
    cpu, gpu = decoded_planes(outputs["cpu"]), decoded_planes(outputs["cuda:0"])
    assert len(gpu) == 7 and gpu[0][0].shape == (482, 642)
    assert plane_psnr(cpu, gpu, peak) > 50  # TF32 convolutions differ from the CPU by rounding only


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_stays_close_to_fp32(make_clip, random_rgb_model, tmp_path, precision):
    src = make_clip("in.mkv", width=160, height=96, frames=4, codec="ffv1", options=())
    full = vidsr.upscale_video(src, tmp_path / "fp32.mkv", model=random_rgb_model, device="cuda",
                               precision="fp32", encoder="ffv1")
    half = vidsr.upscale_video(src, tmp_path / f"{precision}.mkv", model=random_rgb_model, device="cuda",
                               precision=precision, encoder="ffv1")
    assert plane_psnr(decoded_planes(full), decoded_planes(half), 255) > 38


def test_memory_cap_shrinks_tiles_instead_of_failing(small_rrdb):
    frame = torch.rand(1, 3, 768, 1024)
    reference = Upscaler(small_rrdb, device="cuda", precision="fp32").upscale_rgb(frame).cpu()
    # pad 72 covers the 2-block network's receptive radius twice over, so tiles must reproduce the whole frame
    capped = Upscaler(small_rrdb, device="cuda", precision="fp32", max_memory=1.0, tile_pad=72)
    try:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        out = capped.upscale_rgb(frame).cpu()
        peak = torch.cuda.max_memory_allocated()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert capped.tile is not None and capped.tile < 1024  # whole frame (> 3 GB of features) ran out and halved
    assert peak < 2**30
    mse = torch.mean((out - reference) ** 2).item()
    assert mse == 0 or 10 * np.log10(1 / mse) > 50  # no seams: the tiles blend into the whole-frame result


def test_batches_in_flight_give_the_same_frames_as_one_by_one(make_clip, random_rgb_model, tmp_path):
    src = make_clip("in.mkv", width=200, height=120, frames=9, codec="ffv1", options=())
    batched = vidsr.upscale_video(src, tmp_path / "b8.mkv", model=random_rgb_model, device="cuda",
                                  precision="fp32", batch_size=4, encoder="ffv1")
    single = vidsr.upscale_video(src, tmp_path / "b1.mkv", model=random_rgb_model, device="cuda",
                                 precision="fp32", batch_size=1, encoder="ffv1")
    assert plane_psnr(decoded_planes(batched), decoded_planes(single), 255) > 50


def nvenc_available() -> bool:
    try:
        codec = av.codec.Codec("h264_nvenc", "w")
        ctx = av.codec.CodecContext.create(codec)
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        ctx.time_base = Fraction(1, 24)
        ctx.open()
        return True
    except Exception:  # no NVENC in the FFmpeg build or no encoder in the driver
        return False


def test_nvenc_output_keeps_every_frame(make_clip, random_espcn, tmp_path):
    if not nvenc_available():
        pytest.skip("h264_nvenc cannot open here (FFmpeg build or driver without NVENC)")
    src = make_clip("in.mp4", width=320, height=180, frames=12)
    out = vidsr.upscale_video(src, tmp_path / "out.mp4", model=random_espcn, device="cuda", encoder="h264_nvenc")
    planes = decoded_planes(out)
    assert len(planes) == 12 and planes[0][0].shape == (360, 640)


def test_training_steps_on_cuda_reduce_the_loss(tmp_path):
    from PIL import Image

    from vidsr.quality.resize import imresize_np
    from vidsr.train.config import TrainConfig
    from vidsr.train.trainer import Trainer

    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(imresize_np(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), 8)).save(tmp_path / f"{i}.png")
    config = TrainConfig(arch="srvgg", scale=2, hyperparams={"channels": 3, "features": 16, "convs": 4},
                         train_dirs=[str(tmp_path)], out_dir=str(tmp_path / "run"), patch_size=16, batch_size=8,
                         iterations=80, lr=2e-3, ema_decay=0, device="cuda")
    trainer = Trainer(config)
    losses = [trainer.step() for _ in range(80)]
    assert next(trainer.model.parameters()).is_cuda
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])


def test_auto_batch_size_fills_memory_and_keeps_the_frames(make_clip, random_rgb_model, tmp_path):
    from vidsr.media.frames import plane_layout
    from vidsr.media.info import ColorInfo

    upscaler = Upscaler(random_rgb_model, device="cuda", precision="fp32")
    assert upscaler.auto_batch_size(plane_layout("yuv420p"), ColorInfo(), 320, 180) > 1  # small frames, big GPU
    src = make_clip("in.mkv", width=200, height=120, frames=9, codec="ffv1", options=())
    auto = vidsr.upscale_video(src, tmp_path / "auto.mkv", upscaler=upscaler, batch_size="auto", encoder="ffv1")
    single = vidsr.upscale_video(src, tmp_path / "b1.mkv", upscaler=upscaler, batch_size=1, encoder="ffv1")
    assert plane_psnr(decoded_planes(auto), decoded_planes(single), 255) > 50
