"""Upscaler, tiling and the double-buffered batch runner (run on the CPU)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from torch import nn

from vidsr.compute import upscaler
from vidsr.compute.runner import Batch, BatchRunner
from vidsr.compute.upscaler import Upscaler, cpu_runs_bf16
from vidsr.errors import InputError, VidsrError
from vidsr.media.frames import plane_layout
from vidsr.media.info import ColorInfo
from vidsr.models.archs import create_model
from vidsr.quality.metrics import psnr


@pytest.fixture
def espcn() -> Upscaler:
    torch.manual_seed(0)
    return Upscaler(create_model("espcn", scale=2), device="cpu", precision="fp32")  # exact comparisons


def test_tiles_match_whole_frame_exactly_when_context_covers_receptive_field(espcn):
    x = torch.rand(2, 1, 75, 61)
    whole = espcn.run_model(x)
    espcn.tile, espcn.tile_pad = 32, 8  # ESPCN sees 4 pixels each way; pad/2 = 4
    assert torch.allclose(espcn.run_model(x), whole, atol=1e-5)


def test_deep_model_tiles_blend_without_seams():
    """A model that sees further than the tile context still blends smoothly (no step at tile borders)."""
    torch.manual_seed(0)
    upscaler = Upscaler(create_model("vdsr", scale=2, depth=10, features=16), device="cpu")
    x = torch.rand(1, 1, 40, 40) * 0.5 + torch.linspace(0, 0.5, 40)
    whole = upscaler.run_model(x)
    upscaler.tile, upscaler.tile_pad = 20, 4
    tiled = upscaler.run_model(x)
    assert psnr(whole.numpy(), tiled.numpy()) > 40
    # The error at a tile border is no worse than the error one feather-width inside a tile.
    err = (tiled - whole).abs()[0, 0]
    border_rows = err[38:42].mean()  # output rows around input row 20
    assert border_rows < 5 * err[10:30].mean() + 1e-3


def test_out_of_memory_halves_the_tile_and_retries(espcn, monkeypatch):
    real_forward = espcn.model.forward
    espcn.tile_pad = 8
    seen = []

    def limited_forward(x):
        seen.append(x.shape[-1])
        if x.shape[-1] * x.shape[-2] > 70 * 70:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(x)

    monkeypatch.setattr(espcn.model, "forward", limited_forward)
    monkeypatch.setattr(espcn, "device", torch.device("cuda"))  # OOM recovery only applies on CUDA
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    x = torch.rand(2, 1, 128, 128)
    whole = real_forward(x)
    result = espcn.run_model(x)
    # batch of 2 fails, then each frame whole, then 64px tiles, then 32px tiles fit
    assert seen[:2] == [128, 128] and espcn.tile == 32
    assert torch.allclose(result, whole, atol=1e-5)


def test_out_of_memory_below_minimum_tile_is_a_clear_error(espcn, monkeypatch):
    def always_oom(x):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(espcn.model, "forward", always_oom)
    monkeypatch.setattr(espcn, "device", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with pytest.raises(VidsrError, match="out of GPU memory"):
        espcn.run_model(torch.rand(1, 1, 64, 64))


def test_size_multiple_is_padded_and_cropped():
    torch.manual_seed(0)
    upscaler = Upscaler(create_model("rrdbnet", scale=2, blocks=1, features=8, growth=4), device="cpu")
    assert upscaler.descriptor.size_multiple == 2  # pixel-unshuffle x2 variant
    out = upscaler.upscale_rgb(torch.rand(1, 3, 15, 21))
    assert out.shape == (1, 3, 30, 42)


def test_upscale_image_keeps_dtype(espcn):
    for image in (np.zeros((9, 11, 3), np.uint8), np.zeros((9, 11, 3), np.uint16), np.zeros((9, 11, 3), np.float32)):
        out = espcn.upscale_image(image)
        assert out.shape == (18, 22, 3) and out.dtype == image.dtype


def test_upscale_image_keeps_alpha(espcn):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    alpha = np.linspace(0, 255, 9 * 11).reshape(9, 11).round().astype(np.uint8)  # smooth: resampled, not modelled
    out = espcn.upscale_image(np.dstack([rgb, alpha]))
    assert out.shape == (18, 22, 4) and out.dtype == np.uint8
    assert np.array_equal(out[..., :3], espcn.upscale_image(rgb))
    expected = np.linspace(0, 255, 9 * 11).reshape(9, 11).repeat(2, 0).repeat(2, 1)
    assert psnr(expected[2:-2, 2:-2], out[2:-2, 2:-2, 3].astype(np.float64)) > 30


def test_bad_device_and_precision_are_clear(espcn):
    with pytest.raises(VidsrError, match="no CUDA GPU|does not exist"):
        Upscaler(espcn.descriptor, device="cuda:0") if not torch.cuda.is_available() else Upscaler(
            espcn.descriptor, device="cuda:99")
    with pytest.raises(VidsrError, match="unknown precision"):
        Upscaler(espcn.descriptor, device="cpu", precision="fp8")


@pytest.mark.parametrize(("batch_size", "static_shapes"), [(1, False), (3, False), (4, False), (3, True)])
def test_batch_runner_matches_frame_by_frame_in_order(espcn, batch_size, static_shapes):
    espcn.static_shapes = static_shapes  # as with --compile: the partial last batch runs at full size
    layout, color = plane_layout("yuv420p10le"), ColorInfo(matrix=1)
    rng = np.random.default_rng(0)
    frames = [[rng.integers(64, 940, (24, 31)).astype(np.uint16),
               rng.integers(64, 960, (12, 16)).astype(np.uint16),
               rng.integers(64, 960, (12, 16)).astype(np.uint16)] for _ in range(7)]
    batches = [Batch(frames[i:i + batch_size], list(range(i, min(i + batch_size, 7))))
               for i in range(0, 7, batch_size)]
    runner = BatchRunner(espcn, layout, color, layout, color, batch_size)
    got = [(item, [p.copy() for p in planes]) for items, out in runner.run(batches)
           for item, planes in zip(items, out, strict=True)]
    assert [item for item, _ in got] == list(range(7))
    for index, planes in got:
        expected = espcn.upscale_planes([torch.from_numpy(p)[None] for p in frames[index]], layout, color)
        for plane, ref in zip(planes, expected, strict=True):
            # oneDNN picks kernels by batch size, so float rounding may flip a code by one, rarely.
            diff = np.abs(plane.astype(np.int32) - ref[0].numpy().astype(np.int32))
            assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_cpu_runner_computes_two_batches_at_once(espcn, monkeypatch):
    """On the CPU two threads compute, each slot on its own replica sharing the weights: calls meet at a barrier,
    which one thread at a time could never pass, and no more than two run at once (a third slot waits, ready)."""
    layout, color = plane_layout("gray"), ColorInfo(matrix=1)
    meeting = threading.Barrier(2, timeout=20)
    callers, running, most = set(), [0], [0]
    lock = threading.Lock()
    real = Upscaler.upscale_planes

    def meet_then_compute(self, *args):
        with lock:
            callers.add(id(self))
            running[0] += 1
            most[0] = max(most[0], running[0])
        meeting.wait()
        try:
            return real(self, *args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(Upscaler, "upscale_planes", meet_then_compute)
    frames = [[np.full((8, 9), 16 * i, np.uint8)] for i in range(6)]
    runner = BatchRunner(espcn, layout, color, layout, color, 1)
    out = [planes[0][0].copy() for _, planes in runner.run(Batch([f], [i]) for i, f in enumerate(frames))]
    assert len(out) == 6 and len(callers) == 3 and most[0] == 2
    assert all(a.mean() < b.mean() for a, b in itertools.pairwise(out))  # in order
    assert espcn.replica().descriptor.model is espcn.descriptor.model


@pytest.fixture
def threads_seen(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """torch's thread count in every `Upscaler.upscale_planes` call from here on."""
    seen: list[int] = []
    real = Upscaler.upscale_planes

    def record(self, *args):
        seen.append(torch.get_num_threads())
        return real(self, *args)

    monkeypatch.setattr(Upscaler, "upscale_planes", record)
    return seen


@pytest.mark.parametrize(("caller", "each"), [(4, 2), (3, 1), (1, 1)])
def test_cpu_compute_threads_share_the_callers_torch_threads(espcn, threads_seen, caller, each):
    """Two compute threads split the caller's torch thread count instead of each taking all of it (twice the
    threads the cores hold), and the caller gets its count back, for itself and for threads started later."""
    layout, color = plane_layout("gray"), ColorInfo(matrix=1)
    before = torch.get_num_threads()
    torch.set_num_threads(caller)
    try:
        runner = BatchRunner(espcn, layout, color, layout, color, 1)
        assert len(list(runner.run(Batch([[np.zeros((8, 9), np.uint8)]], [i]) for i in range(5)))) == 5
        later = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert set(threads_seen) == {each} and torch.get_num_threads() == caller and later == [caller]
    finally:
        torch.set_num_threads(before)


def test_a_single_picture_is_computed_with_all_the_callers_threads(random_espcn, tmp_path, threads_seen):
    """A picture is one model call: split between two compute threads, half the cores would idle (x4plus on one
    320x180 frame ran at half its model-only rate)."""
    from PIL import Image

    import vidsr

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        Image.new("RGB", (32, 24), (200, 30, 30)).save(tmp_path / "in.png")
        vidsr.upscale_video(tmp_path / "in.png", tmp_path / "out.png", model=random_espcn, device="cpu")
        assert threads_seen == [2]
    finally:
        torch.set_num_threads(before)


def test_cpu_runner_computes_one_batch_at_a_time_when_two_would_not_fit(espcn, monkeypatch):
    layout, color = plane_layout("gray"), ColorInfo(matrix=1)
    callers, threads = set(), set()
    real = Upscaler.upscale_planes

    def record(self, *args):
        callers.add(id(self))
        threads.add(threading.current_thread().name)
        return real(self, *args)

    monkeypatch.setattr(Upscaler, "upscale_planes", record)
    monkeypatch.setattr("vidsr.compute.upscaler.memory_budget", lambda device: 1024)  # bytes
    runner = BatchRunner(espcn, layout, color, layout, color, 1)
    assert len(list(runner.run(Batch([[np.zeros((40, 50), np.uint8)]], [i]) for i in range(4)))) == 4
    assert callers == {id(espcn)} and len(threads) == 1


def test_the_memory_cap_bounds_what_fits(espcn, monkeypatch):
    """--max-memory (a CUDA cap; simulated here) bounds the activations the engine plans for, not only the free
    memory: the automatic tiles and the second batch in flight both ask `fits_twice`'s budget."""
    assert espcn.fits_twice(1, 360, 640)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    espcn.memory_cap = 2**20  # 1 MiB: far less than two 640x360 frames of ESPCN activations
    assert not espcn.fits_twice(1, 360, 640)


def test_cpu_runner_passes_a_compute_error_on_and_stops_its_threads(espcn, monkeypatch):
    layout, color = plane_layout("gray"), ColorInfo(matrix=1)

    def broken(self, *args):
        raise RuntimeError("model failed")

    monkeypatch.setattr(Upscaler, "upscale_planes", broken)
    runner = BatchRunner(espcn, layout, color, layout, color, 1)
    with pytest.raises(RuntimeError, match="model failed"):
        list(runner.run(Batch([[np.zeros((8, 8), np.uint8)]], [i]) for i in range(3)))
    assert not any(t.name.startswith("vidsr-model") for t in threading.enumerate())


def test_rgb_model_on_yuv_planes_keeps_geometry():
    torch.manual_seed(0)
    upscaler = Upscaler(nn_identity_x2(), device="cpu")
    layout, color = plane_layout("yuv420p"), ColorInfo(matrix=1)
    y = torch.randint(16, 235, (1, 20, 30), dtype=torch.uint8)
    c = torch.full((1, 10, 15), 128, dtype=torch.uint8)
    out = upscaler.upscale_planes([y, c, c.clone()], layout, color)
    assert [tuple(p.shape) for p in out] == [(1, 40, 60), (1, 20, 30), (1, 20, 30)]
    # A nearest-neighbour "model" keeps grey grey and each luma value in its 2x2 block.
    assert (out[1].int() - 128).abs().max() <= 1
    assert (out[0][0, ::2, ::2].int() - y[0].int()).abs().max() <= 1


def nn_identity_x2():
    """An RGB 'model' that upscales by pixel repetition (a pixel shuffle of copies)."""
    model = create_model("espcn", scale=2, channels=3)
    model.model = nn.Upsample(scale_factor=2, mode="nearest")
    return model


def test_auto_batch_size_fits_free_memory_within_limits(espcn):
    from vidsr.compute.upscaler import AUTO_BATCH_LIMIT, CPU_BATCH, batch_for_memory

    assert batch_for_memory(per_frame=100, free=1000) == 5  # half of the free memory, two batches in flight
    assert batch_for_memory(per_frame=100, free=10**9) == AUTO_BATCH_LIMIT
    assert batch_for_memory(per_frame=10**9, free=100) == 1  # never zero: one frame then tiles if it must
    layout = plane_layout("yuv420p")
    assert espcn.auto_batch_size(layout, ColorInfo(), 64, 48) == CPU_BATCH


@pytest.mark.slow
@pytest.mark.skipif(not cpu_runs_bf16(), reason="this CPU has no bf16 convolutions (AVX2 only)")
def test_compiled_cpu_model_matches_eager_and_leaves_inductor_config_alone(espcn):
    """`compile=True` on the CPU freezes the weights for inductor (fused oneDNN convolutions) around each
    call only: same frames as eager, across a new input shape too, and the process-wide config untouched."""
    import torch._inductor.config as inductor_config

    frozen_before = inductor_config.freezing
    compiled = Upscaler(espcn.descriptor, device="cpu", precision="bf16", compile=True)
    eager = Upscaler(espcn.descriptor, device="cpu", precision="bf16")
    for shape in ((2, 1, 40, 56), (1, 1, 33, 47)):
        x = torch.rand(shape)
        got, want = (up.run_model(x).numpy() * 255 for up in (compiled, eager))
        assert psnr(got, want) > 40  # bf16 rounds differently where the activation is fused
    assert inductor_config.freezing == frozen_before


def test_compile_without_a_cpp_compiler_is_a_clear_error(espcn, monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("no-such-c++",))
    with pytest.raises(VidsrError, match="needs a C\\+\\+ compiler"):
        Upscaler(espcn.descriptor, device="cpu", compile=True)


@pytest.mark.parametrize(("preset", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_vidsr_makes_openmp_threads_wait_passively_unless_told(preset, expected):
    """Spinning OpenMP threads starve the decoder and encoder threads; the user's own setting wins."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = "import os, vidsr; print(os.environ['OMP_WAIT_POLICY'])"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == expected


def test_an_upscaler_leaves_the_callers_model_as_it_was(espcn):
    """A descriptor passed in was cast and fused in place: an earlier fp32 Upscaler then ran bf16 weights."""
    import vidsr

    descriptor = vidsr.load_model("espcn-x2")
    image = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    first = Upscaler(descriptor, device="cpu", precision="fp32")
    before = first.upscale_image(image)
    Upscaler(descriptor, device="cpu", precision="bf16" if cpu_runs_bf16() else "fp32")
    assert next(descriptor.model.parameters()).dtype == torch.float32
    np.testing.assert_array_equal(first.upscale_image(image), before)


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((4, 4, 3), np.int16), "uint8, uint16 or float image, got int16"),
    (np.full((4, 4, 3), 200.0, np.float32), "float images are expected in 0..1, this one spans 200..200"),
    (np.array([[0.5, np.nan]], np.float32), "NaN or infinite"),
    (np.zeros((0, 4, 3), np.uint8), "got shape \\(0, 4, 3\\)"),
    (np.zeros((4, 4, 2), np.uint8), "got shape \\(4, 4, 2\\)"),
    (torch.zeros(4, 4, 3), "tensors go to upscale_rgb"),
])
def test_upscale_image_refuses_what_it_would_garble_in_one_line(espcn, image, message):
    with pytest.raises(InputError, match=message):
        espcn.upscale_image(image)


def test_upscale_image_takes_hxwx1_and_upscale_rgb_checks_its_shape(espcn):
    assert espcn.upscale_image(np.zeros((4, 5, 1), np.uint8)).shape == (8, 10, 1)
    with pytest.raises(InputError, match="expected an \\(N,3,H,W\\) float RGB tensor"):
        espcn.upscale_rgb(torch.zeros(3, 4, 4))


@pytest.mark.parametrize("settings", [{"tile": 40.5}, {"tile_pad": 2.5}, {"tile": True}])
def test_tile_settings_must_be_whole_pixels(settings):
    with pytest.raises(VidsrError, match="must be a whole number of pixels"):
        Upscaler("espcn-x2", device="cpu", **settings)


def test_bf16_on_a_cpu_without_bf16_convolutions_is_one_clear_error(espcn, monkeypatch):
    """On an AVX2-only CPU torch's bf16 convolution raises deep inside oneDNN: refuse before the run instead."""
    monkeypatch.setattr(upscaler, "_cpu_flags", lambda: "flags : fpu sse2 avx avx2 fma")
    with pytest.raises(VidsrError, match="no bf16 convolutions"):
        Upscaler(espcn.descriptor, device="cpu", precision="bf16")
    assert Upscaler(espcn.descriptor, device="cpu").dtype == torch.float32  # auto picks fp32 there
