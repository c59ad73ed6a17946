"""Third-party checkpoints through spandrel: vidsr's output equals spandrel's own forward for every architecture
in tests/third_party.py, saved the ways people publish them; size requirements, 1x / grey / RGBA models, chains,
a real video, refusals, inspection and ONNX export."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import vidsr
from tests.third_party import (
    PADDING_ONLY,
    TINY_MODELS,
    WRAPPERS,
    random_state_dict,
    save_third_party,
    spandrel_forward,
)
from vidsr.compute.tiling import tile_for_budget
from vidsr.compute.upscaler import Upscaler, resolve_precision
from vidsr.errors import ModelError
from vidsr.media.frames import frame_to_planes, plane_layout
from vidsr.media.info import probe
from vidsr.models.archs import ModelDescriptor, create_model, model_from_state_dict
from vidsr.models.checkpoint import save_checkpoint
from vidsr.quality.metrics import psnr

FRAME = (29, 37)  # odd height and width: every size requirement needs padding


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny model saved once, cycling through the wrappers, every third one as safetensors."""
    folder = tmp_path_factory.mktemp("third_party")
    wrappers = list(WRAPPERS)
    paths = {}
    for i, name in enumerate(TINY_MODELS):
        suffix = ".safetensors" if i % 3 == 2 else ".pth"
        paths[name] = save_third_party(folder / f"{name}{suffix}", random_state_dict(name), wrappers[i % len(wrappers)])
    return paths


def image(channels: int, seed: int = 0) -> np.ndarray:
    """A smooth test picture with texture (random noise would be far from what models see)."""
    rng = np.random.default_rng(seed)
    height, width = FRAME
    ramp = np.linspace(0, 1, width)[None, :] * np.linspace(0.3, 1, height)[:, None]
    planes = [np.clip(ramp * (0.6 + 0.2 * c) + rng.normal(0, 0.05, FRAME), 0, 1) for c in range(channels)]
    return (np.stack(planes, axis=2) * 255).round().astype(np.uint8)


def eight_bit(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().numpy().astype(np.float64) / 255


@pytest.mark.parametrize("name", TINY_MODELS)
def test_engine_output_equals_spandrels_own_forward(checkpoints: dict[str, Path], name: str) -> None:
    upscaler = Upscaler(checkpoints[name], device="cpu", precision="fp32")
    descriptor = upscaler.descriptor
    grey = descriptor.in_channels == 1
    picture = image(1 if grey else 3)
    ours = upscaler.upscale_image(picture[..., 0] if grey else picture)
    x = torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 255
    if descriptor.in_channels == 4:
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # RGBA models run opaque
    theirs = spandrel_forward(random_state_dict(name), x)[0, :3].permute(1, 2, 0)
    ours = ours.astype(np.float64) / 255
    assert ours.shape[:2] == (FRAME[0] * descriptor.scale, FRAME[1] * descriptor.scale)
    assert psnr(ours.reshape(theirs.shape), eight_bit(theirs)) > 50


@pytest.mark.parametrize("name", ["safmn_x2", "realesrgan_x2plus", "drct_x2", *PADDING_ONLY])
def test_padding_gives_the_architectures_own_picture_at_odd_sizes(name: str) -> None:
    """spandrel's size multiple is stricter than these networks need (SAFMN: 8 for none, x2plus: 4 for 2, DRCT:
    16 for a window of 4, ...): padded that far, the pictures differ from their authors' inference."""
    descriptor = model_from_state_dict(random_state_dict(name))
    for height, width in ((29, 37), (34, 23)):
        x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            ours = descriptor.run(x).clamp(0, 1)
        assert torch.allclose(ours, spandrel_forward(random_state_dict(name), x), atol=1e-5)


def weights_state(model: torch.nn.Module) -> list[tuple[str, int, int]]:
    """Every parameter and buffer by name, storage and version: what a forward pass must leave as it was."""
    return [(key, tensor.data_ptr(), tensor._version)
            for key, tensor in itertools.chain(model.named_parameters(), model.named_buffers())]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_no_network_writes_its_weights_in_a_forward_pass(name: str) -> None:
    """SPAN's forward re-folded its convolutions into its own weights on every call: threads sharing the model
    read them half-written. vidsr folds once at load; every architecture's forward must then leave them alone."""
    descriptor = model_from_state_dict(random_state_dict(name))
    x = torch.rand(1, descriptor.run_channels, 29, 37)
    with torch.no_grad():
        descriptor.run(x)  # a first pass may set things up (SwinIR casts its mean to the input's type)
        before = weights_state(descriptor.model)
        descriptor.run(x)
    assert weights_state(descriptor.model) == before


def test_a_network_that_writes_its_weights_gets_a_copy_per_thread(checkpoints) -> None:
    from spandrel import ModelLoader

    unfolded = ModelLoader().load_from_state_dict(random_state_dict("span_x2"))  # spandrel's own SPAN
    descriptor = ModelDescriptor(model=unfolded.model.eval(), arch="SPAN", scale=2, in_channels=3, out_channels=3,
                                 color="rgb")
    writes = Upscaler(descriptor, device="cpu", precision="fp32")
    assert writes.replica().model is not writes.model
    folded = Upscaler(checkpoints["span_x2"], device="cpu", precision="fp32")
    assert folded.replica().model is folded.model  # the weights stay shared where nothing writes them


def test_a_blended_span_is_folded_from_the_blended_weights() -> None:
    """Folding is not linear in the weights: a blend of two folded SPANs must fold the blended convolutions again,
    as spandrel's own forward does on every call."""
    from vidsr.models.blend import blend_models, blend_state_dicts

    first, second = random_state_dict("span_x2", seed=1), random_state_dict("span_x2", seed=2)
    blended = blend_models(model_from_state_dict(first), model_from_state_dict(second), 0.5)
    x = torch.rand(1, 3, 29, 37, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = blended.run(x).clamp(0, 1)
    assert torch.allclose(ours, spandrel_forward(blend_state_dicts(first, second, 0.5), x), atol=1e-5)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_video_through_two_threads_in_batches_and_tiles_equals_each_frame_alone(checkpoints, make_clip, tmp_path,
                                                                               name) -> None:
    """A clip (odd size, batches of 2, the CPU runner's two compute threads, tiles) gives each frame what the
    model gives that frame on its own, as the frame on its own is the architecture's own forward
    (test_engine_output_equals_spandrels_own_forward; whole frames of a video: test_video_keeps_timestamps...)."""
    grey = vidsr.load_model(checkpoints[name]).in_channels == 1
    pix_fmt = "gray" if grey else "yuv444p"  # FFV1: lossless in and out, so that no difference is hidden
    src = make_clip("in.mkv", width=53, height=41, frames=4, codec="ffv1", pix_fmt=pix_fmt, options=())
    color = probe(src).video.color
    out = vidsr.upscale_video(src, tmp_path / "out.mkv", model=checkpoints[name], device="cpu", precision="fp32",
                              batch_size=2, tile=32, tile_pad=4, encoder="ffv1", pix_fmt=pix_fmt)
    alone = Upscaler(checkpoints[name], device="cpu", precision="fp32", tile=32, tile_pad=4)
    with av.open(str(src)) as source, av.open(str(out)) as result:
        pairs = list(zip(source.decode(video=0), result.decode(video=0), strict=True))
        for frame, upscaled in pairs:
            planes = [torch.from_numpy(plane)[None] for plane in frame_to_planes(frame)]
            expected = alone.upscale_planes(planes, plane_layout(pix_fmt), color)
            for plane, reference in zip(frame_to_planes(upscaled), expected, strict=True):
                # oneDNN picks kernels by batch size: float rounding may flip a level, rarely
                assert np.abs(plane.astype(int) - reference[0].numpy().astype(int)).max() <= 1
    assert len(pairs) == 4


def test_descriptor_carries_what_the_engine_needs(checkpoints: dict[str, Path]) -> None:
    facts = {name: vidsr.load_model(path) for name, path in checkpoints.items()}
    assert {name: d.scale for name, d in facts.items() if d.scale != 2} == {
        "esrgan_x4": 4, "compact_x8": 8, "plksr_x3": 3, "dncnn_grey_x1": 1}
    assert (facts["dncnn_grey_x1"].purpose, facts["dncnn_grey_x1"].color) == ("Restoration", "y")
    assert facts["compact_rgba_x2"].in_channels == 4
    assert facts["swinir_x2"].size_min > 0 and facts["ditn_x2"].size_multiple == 8
    assert facts["swinir_x2"].tiling == "discouraged" and "fp16" not in facts["swinir_x2"].precisions
    assert all(d.source == "spandrel" and d.luma_range == "full" for d in facts.values())


def test_vidsr_rrdbnet_weights_without_header_load_through_spandrel_identically() -> None:
    """The hand-written ESRGAN key mapping is gone: a headerless BasicSR-layout RRDBNet is spandrel's ESRGAN."""
    torch.manual_seed(3)
    own = create_model("rrdbnet", scale=4, features=8, growth=32, blocks=1)  # ESRGAN files have gc 32
    third_party = model_from_state_dict(own.model.state_dict())
    assert (third_party.arch, third_party.source, third_party.scale) == ("ESRGAN", "spandrel", 4)
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        assert torch.allclose(own.model.eval()(x), third_party.model(x), atol=1e-5)


def test_auto_precision_falls_back_to_fp32_with_a_notice(checkpoints, caplog) -> None:
    swinir = vidsr.load_model(checkpoints["swinir_x2"])
    assert resolve_precision("auto", torch.device("cuda"), swinir) == torch.float32
    assert "SwinIR does not support fp16: running in fp32" in caplog.text
    with pytest.raises(vidsr.VidsrError, match="does not support fp16"):
        resolve_precision("fp16", torch.device("cuda"), swinir)


def test_tiles_meet_size_requirements_and_tile_automatically_when_memory_is_short(checkpoints, monkeypatch,
                                                                                  caplog) -> None:
    whole = Upscaler(checkpoints["ditn_x2"], device="cpu", precision="fp32").upscale_image(image(3))
    tiled = Upscaler(checkpoints["ditn_x2"], device="cpu", precision="fp32", tile=33)
    assert tiled.tile == 40  # rounded up to DITN's multiple of 8
    assert tiled.upscale_image(image(3)).shape == whole.shape
    assert tile_for_budget(100.0, 10**9, 1080, 1920) is None
    assert tile_for_budget(1000.0, 10**8, 1080, 1920) == 316
    monkeypatch.setattr("vidsr.compute.upscaler.memory_budget", lambda device: 40_000)
    auto = Upscaler(checkpoints["ditn_x2"], device="cpu", precision="fp32")
    out = auto.upscale_image(image(3))
    assert auto.tile is not None and auto.tile % 8 == 0 and "px tiles" in caplog.text
    assert psnr(out / 255.0, whole / 255.0) > 25  # tiles are blended: close to the whole frame, not equal
    monkeypatch.setattr("vidsr.compute.upscaler.memory_budget", lambda device: 10**12)
    roomy = Upscaler(checkpoints["swinir_x2"], device="cpu", precision="fp32")
    roomy.upscale_image(image(3))
    assert roomy.tile is None  # the whole frame fits: no tiles
    monkeypatch.setattr("vidsr.compute.upscaler.memory_budget", lambda device: 40_000)
    tight = Upscaler(checkpoints["swinir_x2"], device="cpu", precision="fp32")
    tight.upscale_image(image(3))
    assert tight.tile is not None and "advise against tiles" in caplog.text  # SwinIR: tiling discouraged


def test_chain_of_y_and_rgb_models_scales_by_the_product(checkpoints, random_espcn) -> None:
    upscaler = Upscaler([checkpoints["dncnn_grey_x1"], checkpoints["compact_x2"], random_espcn], device="cpu",
                        precision="fp32")
    assert (upscaler.scale, upscaler.descriptor.color, upscaler.descriptor.arch) == (
        4, "rgb", "DnCNN+RealESRGAN Compact+espcn")
    assert upscaler.upscale_image(image(3)).shape == (FRAME[0] * 4, FRAME[1] * 4, 3)
    # an RGB chain of RGB models is exactly the models one after the other
    first, second = (Upscaler(checkpoints[n], device="cpu", precision="fp32") for n in ("compact_x2", "span_x2"))
    chained = Upscaler(f"{checkpoints['compact_x2']},{checkpoints['span_x2']}", device="cpu", precision="fp32")
    x = torch.from_numpy(image(3)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = second.run_model(first.run_model(x))
        assert torch.allclose(chained.run_model(x), expected, atol=1e-5)


def test_chain_of_a_grey_restoration_model_on_luma(checkpoints) -> None:
    """A Y chain: DnCNN (full-range grey) then a grey ESRGAN, as the engine runs Y models on YUV video."""
    chained = Upscaler([checkpoints["dncnn_grey_x1"], checkpoints["esrgan_grey_x2"]], device="cpu", precision="fp32")
    assert (chained.descriptor.color, chained.scale) == ("y", 2)
    grey = image(1)[..., 0]
    step = Upscaler(checkpoints["esrgan_grey_x2"], device="cpu", precision="fp32").upscale_image(
        Upscaler(checkpoints["dncnn_grey_x1"], device="cpu", precision="fp32").upscale_image(grey))
    assert np.abs(chained.upscale_image(grey).astype(int) - step.astype(int)).max() <= 1  # rounding between


def decoded_times(path: Path) -> list:
    with av.open(str(path)) as container:
        return [frame.pts * frame.time_base for frame in container.decode(video=0)]


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(audio=0) if packet.size]


def vfr_clip_with_audio(make_clip) -> Path:
    return make_clip("in.mkv", width=40, height=30, frames=5, vfr=True, audio=True, codec="ffv1", options=(),
                     matrix=1, primaries=1, transfer=1)


@pytest.mark.parametrize("name", ["span_x2", "swinir_x2"])
def test_video_keeps_timestamps_audio_and_colour_tags(checkpoints, make_clip, tmp_path, name) -> None:
    src = vfr_clip_with_audio(make_clip)
    out = vidsr.upscale_video(src, tmp_path / "out.mkv", model=checkpoints[name], device="cpu", batch_size=2)
    info, source_info = probe(out), probe(src)
    assert (info.video.width, info.video.height) == (80, 60)
    times, audio = [decoded_times(path) for path in (src, out)], [audio_packets(path) for path in (src, out)]
    assert times[0] == times[1] and len(times[1]) == 5
    assert len({later - earlier for earlier, later in zip(times[0], times[0][1:], strict=False)}) > 1  # VFR
    assert audio[0] == audio[1] and audio[0]
    tags = [(c.matrix, c.primaries, c.transfer, c.full_range) for c in (info.video.color, source_info.video.color)]
    assert tags[0] == tags[1] == (1, 1, 1, False)  # BT.709 kept


def constant_noise_dncnn(path: Path, noise: float) -> Path:
    """A DnCNN that predicts the same noise everywhere, so it darkens by exactly `noise` (in its own levels)."""
    weights = {key: torch.zeros_like(value) for key, value in random_state_dict("dncnn_grey_x1").items()}
    weights.update({key: torch.ones_like(value) for key, value in weights.items() if key.endswith("running_var")})
    last = max((key for key in weights if key.endswith(".bias")), key=lambda key: int(key.split(".")[1]))
    weights[last] = torch.full_like(weights[last], noise)
    return save_third_party(path, weights)


def test_grey_model_sees_full_range_luma_on_video(make_clip, tmp_path) -> None:
    """Grey third-party models were trained on full-range grey: a 0.1 step is 21.9 codes of limited-range video
    (219 * 0.1), not the 25.5 that vidsr's own studio-range Y models would give."""
    src = make_clip("in.mkv", width=40, height=30, frames=2, codec="ffv1", options=())
    path = constant_noise_dncnn(tmp_path / "dncnn.pth", 0.1)
    out = vidsr.upscale_video(src, tmp_path / "out.mkv", model=path, device="cpu")
    with av.open(str(src)) as a, av.open(str(out)) as b:
        first, second = (next(c.decode(video=0)).planes[0] for c in (a, b))
        first, second = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :40].astype(int)
                         for p in (first, second))
    darker = first - second
    assert np.median(darker[first > 60]) == pytest.approx(21.9, abs=0.6)


def test_eval_feeds_grey_models_full_range_luma(tmp_path) -> None:
    from vidsr.quality.evaluate import model_predictor

    predict = model_predictor(vidsr.load_model(constant_noise_dncnn(tmp_path / "dncnn.pth", 0.1)))
    # studio Y 100 is grey 0.3836; minus 0.1 is studio 78.1 (the wrong levels would give 74.5)
    assert np.all(predict(np.full((8, 9), 100, np.uint8)) == 78)


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /nonexistent-vidsr-marker",))


def test_bad_files_are_one_clear_line(tmp_path, checkpoints) -> None:
    def error(data: bytes, name: str = "m.pth") -> str:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ModelError) as info:
            vidsr.load_model(path)
        assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)
        return str(info.value)

    assert "empty or truncated" in error(b"")
    assert "HTML page" in error(b"<!DOCTYPE html><html>")
    assert "not a PyTorch checkpoint" in error(b"\x00\x01garbage bytes")
    assert "truncated" in error(checkpoints["span_x2"].read_bytes()[:200])
    assert "truncated" in error(checkpoints["compact_x8"].read_bytes()[:100], "m.safetensors")
    evil = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(1), "payload": Exploit()}, evil)
    with pytest.raises(ModelError, match=r"would call (posix|os)\.system"):
        vidsr.load_model(evil)
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 1)), scripted)
    with pytest.raises(ModelError, match="TorchScript"):
        vidsr.load_model(scripted)


def test_face_and_inpainting_models_are_refused() -> None:
    from types import SimpleNamespace

    from vidsr.models.archs.external import _refuse_unusable

    for purpose, words in (("FaceSR", "face-restoration"), ("Inpainting", "inpainting model")):
        with pytest.raises(ModelError, match=words):
            _refuse_unusable(SimpleNamespace(purpose=purpose, scale=1, input_channels=3, output_channels=3), "X")


@pytest.mark.parametrize(("in_nc", "out_nc"), [(3, 1), (1, 3)])
def test_models_that_mix_grey_and_colour_are_refused_in_one_line(tmp_path, in_nc, out_nc) -> None:
    """A 3 -> 1 model returned HxWx1 from an RGB image; 1 -> 3 failed deep inside the engine."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    torch.save(ESRGAN(in_nc=in_nc, out_nc=out_nc, num_filters=8, num_blocks=1, scale=2).state_dict(),
               tmp_path / "mixed.pth")
    with pytest.raises(ModelError, match=f"maps {in_nc} to {out_nc} channels \\(grey and colour mixed\\)"):
        vidsr.load_model(tmp_path / "mixed.pth")


def test_own_checkpoint_with_header_still_loads_own_module(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "own.safetensors", create_model("srvgg", scale=2, features=8, convs=1))
    loaded = vidsr.load_model(path)
    assert (loaded.arch, loaded.source) == ("srvgg", "vidsr")




def scunet_that_fails_on_its_first_frame(path: Path) -> Path:
    """A SCUNet whose width (24) is no multiple of its heads' (32): spandrel builds it, its forward then fails in
    einops."""
    from spandrel.architectures.SCUNet import SCUNet

    torch.manual_seed(0)
    torch.save(SCUNet(in_nc=3, config=[1] * 7, dim=24).state_dict(), path)
    return path


def test_a_network_that_fails_on_its_first_frame_is_one_line_and_leaves_nothing(checkpoints, make_clip, tmp_path,
                                                                                capsys) -> None:
    from vidsr.cli import main

    bad = scunet_that_fails_on_its_first_frame(tmp_path / "bad.pth")
    src = make_clip("in.mp4", width=48, height=40, frames=12, options=(("g", "4"),))
    before = sorted(tmp_path.iterdir())
    out = tmp_path / "out.mkv"
    for models in (["-m", str(bad)], ["-m", str(checkpoints["compact_x2"]), "-m", str(bad)],
                   ["-m", str(bad), "--chunk-seconds", "0.2"]):
        assert main(["upscale", str(src), "-o", str(out), *models, "--device", "cpu", "-q"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("vidsr: error: bad (SCUNet) failed on a ")
        assert "can't divide axis of length" in err
        assert sorted(tmp_path.iterdir()) == before  # no output, no work folder, no lock
    assert main(["models", "--inspect", str(bad)]) == 0
    text = capsys.readouterr().out
    assert "SCUNet (built by spandrel)" in text and "parameters:" in text
    assert "not measured: bad (SCUNet) failed on a " in text


def test_missing_and_misshaped_tensors_are_named_as_the_file_names_them(tmp_path) -> None:
    """spandrel reads RRDBNet files through ESRGAN's old layout: its key names are not the file's."""
    torch.manual_seed(0)
    weights = create_model("rrdbnet", scale=4, features=8, growth=32, blocks=2).model.state_dict()

    def error(changed: dict[str, torch.Tensor]) -> str:
        with pytest.raises(ModelError) as info:
            vidsr.load_model(save_third_party(tmp_path / "esrgan.pth", changed))
        assert "\n" not in str(info.value) and "model.1.sub" not in str(info.value)
        return str(info.value)

    missing = {key: value for key, value in weights.items() if key != "body.1.rdb2.conv3.weight"}
    assert error(missing) == ("esrgan: spandrel recognised the weights as ESRGAN but they do not fit it: "
                              "missing: body.1.rdb2.conv3.weight")
    misshaped = {**weights, "body.0.rdb1.conv1.weight": torch.zeros(32, 8, 1, 1)}
    assert error(misshaped).endswith("wrong shape: body.0.rdb1.conv1.weight (32x8x1x1 in the file, the network "
                                     "needs 32x8x3x3)")
    compact = random_state_dict("compact_x2")
    last = max((key for key in compact if key.endswith(".bias")), key=lambda key: int(key.split(".")[1]))
    del compact[last]
    with pytest.raises(ModelError, match=f"RealESRGAN Compact but they do not fit it: missing: {last}$"):
        vidsr.load_model(save_third_party(tmp_path / "compact.pth", compact))


def test_stderr_holds_vidsr_lines_only_with_window_transformers(checkpoints, make_clip, tmp_path) -> None:
    """SwinIR, HAT and DRCT call torch.meshgrid without `indexing`: torch's UserWarning was printed on every run."""
    import subprocess
    import sys

    src = make_clip("in.mp4", width=20, height=16, frames=2)
    models = [arg for name in ("swinir_x2", "hat_x2", "drct_x2") for arg in ("-m", str(checkpoints[name]))]
    run = subprocess.run([sys.executable, "-m", "vidsr.cli", "upscale", str(src), "-o", str(tmp_path / "out.mkv"),
                          *models, "--device", "cpu", "-q"], capture_output=True, text=True, timeout=300)
    assert (run.returncode, run.stderr) == (0, "")


# --- frontends ---------------------------------------------------------------------------------------------

def test_cli_chains_repeated_models(checkpoints, make_clip, tmp_path) -> None:
    from vidsr.cli import main

    src = make_clip("in.mp4", width=24, height=16, frames=2)
    out = tmp_path / "out.mkv"
    assert main(["upscale", str(src), "-o", str(out), "-m", str(checkpoints["dncnn_grey_x1"]),
                 "-m", str(checkpoints["compact_x2"]), "-m", str(checkpoints["span_x2"]), "--device", "cpu",
                 "-q"]) == 0
    assert (probe(out).video.width, probe(out).video.height) == (96, 64)


def test_vapoursynth_takes_a_chain_as_one_string(checkpoints) -> None:
    vs = pytest.importorskip("vapoursynth")
    import vsvidsr as sr

    clip = vs.core.std.BlankClip(width=20, height=14, format=vs.RGBS, length=2, color=[0.2, 0.5, 0.7])
    out = sr.upscale(clip, model=f"{checkpoints['compact_x2']},{checkpoints['plksr_x3']}", device="cpu")
    assert (out.width, out.height, out.num_frames) == (120, 84, 2)
    frame = out.get_frame(0)
    assert np.isfinite(np.asarray(frame[0])).all()


def test_web_offers_the_models_folder(checkpoints, tmp_path) -> None:
    import argparse

    from vidsr.models.zoo import model_files
    from web.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    folder = checkpoints["span_x2"].parent
    assert parser.parse_args(["--models-dir", str(folder)]).models_dir == folder
    offered = model_files(folder)
    assert set(offered) == set(TINY_MODELS) and offered["span_x2"] == checkpoints["span_x2"]
    with pytest.raises(ModelError, match="models folder not found"):
        model_files(tmp_path / "missing")


def test_models_inspect_describes_a_third_party_file(checkpoints, capsys) -> None:
    from vidsr.cli import main

    assert main(["models", "--inspect", str(checkpoints["swinir_x2"])]) == 0
    text = capsys.readouterr().out
    for expected in ("SwinIR (built by spandrel)", "super-resolution", "x2", "3 -> 3 (RGB)", "fp32, bf16",
                     "at least 16 px", "discouraged"):
        assert expected in text
    gmacs = float(text.split("GMACs per 1080p output frame:")[1].split()[0])
    assert gmacs > 0


def test_readme_architecture_table_is_the_generated_one(capsys) -> None:
    from vidsr.cli import main

    assert main(["models", "--architectures", "--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start, end = "<!-- architectures: vidsr models --architectures --markdown -->", "<!-- /architectures -->"
    assert readme.split(start)[1].split(end)[0].strip() == table
    assert "| SPAN | spandrel |" in table and "| espcn | vidsr" in table


# --- ONNX export ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("models", [["espcn-x2"], ["compact_x2"], ["compact_x2", "span_x2"]],
                         ids=["bundled", "spandrel", "chain"])
def test_export_round_trips_through_onnxruntime_at_another_size(checkpoints, tmp_path, models) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    from vidsr.models.export import export_onnx

    specs = [checkpoints.get(name, name) for name in models]
    result = export_onnx(specs, tmp_path / "model.onnx", size=(24, 16))
    assert result.dynamic_size and result.max_difference < 1e-4
    # a third size and batch, against the engine's own model call
    upscaler = Upscaler(specs, device="cpu", precision="fp32")
    x = torch.rand(3, result.channels, 21, 30)
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    ours = session.run(["output"], {"input": x.numpy()})[0]
    assert ours.shape == (3, result.channels, 21 * upscaler.scale, 30 * upscaler.scale)
    assert np.abs(ours - upscaler.run_model(x).clamp(0, 1).numpy()).max() < 1e-4


class _SquareOnly(torch.nn.Module):
    """A 1x model that, like Uformer, runs on square inputs only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError("square inputs only")
        return self.conv(x)


def test_export_checks_a_square_only_model_at_a_square_size(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from vidsr.models.archs import ModelDescriptor
    from vidsr.models.export import export_onnx

    model = ModelDescriptor(model=_SquareOnly().eval(), arch="square-only", scale=1, in_channels=3, out_channels=3,
                            color="rgb", size_square=True)
    result = export_onnx(model, tmp_path / "square.onnx", size=(24, 16))
    assert result.dynamic_size and result.max_difference < 1e-4


def test_export_command_writes_fp16_and_says_what_it_wrote(checkpoints, tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from vidsr.cli import main

    out = tmp_path / "span.onnx"
    assert main(["export", str(checkpoints["span_x2"]), str(out), "--fp16", "--opset", "17", "--size", "32x24"]) == 0
    assert "input (N,3,H,W) -> output x2, dynamic batch, height and width" in capsys.readouterr().out
    import onnx

    graph = onnx.load(str(out)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
