"""The `vidsr` command line: bad input gives one clear line and exit 1, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest

from vidsr.cli import main
from vidsr.media.info import probe


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, fragment: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("vidsr: error: ") and fragment in lines[0]
    assert "Traceback" not in err


def test_upscale_writes_output_and_reports_progress(capsys, make_clip, random_espcn, tmp_path):
    src = make_clip("in.mkv", width=64, height=48, frames=5, codec="ffv1", options=())
    code, out, err = run_cli(capsys, "upscale", src, "--model", random_espcn, "-o", tmp_path / "out.mkv")
    assert code == 0 and out.strip() == str(tmp_path / "out.mkv")
    assert "frame/s" in err and "5/5" in err  # tqdm bar: count against the estimated total, with a rate
    assert probe(tmp_path / "out.mkv").video.width == 128


def test_auto_batch_size_runs_and_a_bad_one_is_refused(capsys, make_clip, random_espcn, tmp_path):
    src = make_clip("in.mkv", width=64, height=48, frames=6, codec="ffv1", options=())
    code, _, _ = run_cli(capsys, "upscale", src, "--model", random_espcn, "-b", "auto", "-q", "-o", tmp_path / "a.mkv")
    assert code == 0
    with av.open(str(tmp_path / "a.mkv")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(src), "-b", "many"])
    assert exit_info.value.code == 2 and "whole number of at least 1, or 'auto'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make_input", "fragment"),
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: (d / "notes.mp4").write_text("just text") and d / "notes.mp4", "not a readable media file"),
        (lambda d: d, "holds no video or image files"),
    ],
    ids=["nonexistent", "text-renamed-mp4", "empty-folder"],
)
def test_bad_inputs_give_one_line(capsys, tmp_path, make_input, fragment):
    folder = tmp_path / "in"
    folder.mkdir()
    code, _, err = run_cli(capsys, "upscale", make_input(folder))
    assert code == 1
    assert_one_line_error(err, fragment)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and p.name != "notes.mp4") == []


def test_bad_options_give_one_line(capsys, make_clip, random_espcn, tmp_path):
    src = make_clip("in.mp4", width=64, height=48, frames=2)
    cases = [
        (["-o", tmp_path / "nodir" / "o.mp4"], "output directory does not exist"),
        (["-o", src], "overwrite the input"),
        (["--pix-fmt", "yuv420p", "-c", "prores_ks", "-o", tmp_path / "o.mov"], "does not support pix_fmt"),
        (["-c", "prores_ks"], "the mp4 container cannot hold prores_ks video"),
        (["-o", tmp_path / "noext"], "no suffix to choose the output format by"),
        (["--preset", "nonsense"], "libx264 does not start with these settings (invalid argument)"),
        (["-o", tmp_path / "o.xyz"], "no output format is known for '.xyz' files"),
        (["--pix-fmt", "bogus"], "does not support pix_fmt"),
        (["--model", "no-such-model"], "no model named"),
        (["--device", "tpu"], "device"),
    ]
    for extra, fragment in cases:
        args = ["upscale", src, "--model", random_espcn, *extra]
        if "--model" in extra:
            args = ["upscale", src, *extra]
        code, _, err = run_cli(capsys, *args)
        assert code == 1, extra
        assert_one_line_error(err, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_unsupported_pixel_format_is_refused(capsys, tmp_path, random_espcn):
    src = tmp_path / "odd.nut"
    with av.open(str(src), "w") as c:
        s = c.add_stream("rawvideo", rate=10)
        s.width, s.height, s.pix_fmt = 16, 16, "rgb565le"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24").reformat(format="rgb565le")
        frame.pts = 0
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    code, _, err = run_cli(capsys, "upscale", src, "--model", random_espcn, "-o", tmp_path / "o.mkv")
    assert code == 1
    assert_one_line_error(err, "unsupported pixel format 'rgb565le'")
    assert not (tmp_path / "o.mkv").exists()


def test_debug_shows_the_traceback(capsys, tmp_path):
    with pytest.raises(Exception, match="no such file"):
        main(["upscale", str(tmp_path / "missing.mp4"), "--debug"])


def test_probe_prints_stream_facts(capsys, make_clip):
    src = make_clip("in.mkv", width=64, height=48, frames=3, audio=True, subtitles=True, matrix=6, primaries=6,
                    transfer=6)
    code, out, _ = run_cli(capsys, "probe", src)
    assert code == 0
    assert "64x48 yuv420p (8-bit)" in out and "matrix=smpte170m" in out and "frames unknown" in out
    assert "audio #1: aac" in out and "subtitle #2" in out


def _default_sigint() -> None:
    # A background job starts with SIGINT ignored, and Python then installs no KeyboardInterrupt handler: give
    # the child the default disposition so the test does not depend on how pytest was launched.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("sig", "code", "message"), [(signal.SIGINT, 130, "interrupted"),
                                                      (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_and_kill_stop_cleanly_and_leave_nothing(make_clip, random_espcn, tmp_path, sig, code, message):
    src = make_clip("long.mp4", width=320, height=240, frames=240)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "vidsr.cli", "upscale", str(src), "--model", str(random_espcn),
                             "-o", str(out), "-b", "1"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]


def test_a_closed_pipe_ends_quietly(make_clip):
    src = make_clip("in.mkv", width=64, height=48, frames=2, audio=True, subtitles=True)
    proc = subprocess.Popen([sys.executable, "-m", "vidsr.cli", "probe", str(src)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like `vidsr probe in.mkv | head -0`
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and err == ""


@pytest.mark.parametrize("encoder", ["libx265", "libsvtav1"])
def test_quiet_means_quiet_for_every_encoder(capfd, make_clip, random_espcn, tmp_path, encoder):
    """x265 and SVT-AV1 print banners from C unless vidsr tells them not to."""
    src = make_clip("in.mp4", width=64, height=48, frames=3)
    assert main(["upscale", str(src), "--model", str(random_espcn), "-c", encoder, "--quiet"]) == 0
    assert capfd.readouterr().err == "" and (tmp_path / "in_x2.mp4").exists()


def _torch_save(path, obj=None) -> None:
    """torch.save of `obj`, or of a plain state dict."""
    import torch

    torch.save({"w": torch.zeros(3)} if obj is None else obj, path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize(("write", "fragment"), [
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), "not a PyTorch checkpoint"),
    (lambda p: p.write_bytes(b""), "empty or truncated"),
    (lambda p: (_torch_save(p), p.write_bytes(p.read_bytes()[:200])), "damaged or truncated"),
    (lambda p: _torch_save(p, {"w": _RunsCode()}), "refused: it holds Python code or objects besides tensors"),
], ids=["random-bytes", "empty", "truncated", "pickle-with-code"])
def test_bad_checkpoints_are_one_line_that_says_what_the_file_is(capsys, make_clip, tmp_path, write, fragment):
    src = make_clip("in.mkv", width=64, height=48, frames=2, codec="ffv1", options=())
    model = tmp_path / "x.pth"
    write(model)
    code, _, err = run_cli(capsys, "upscale", src, "-m", model, "-o", tmp_path / "out.mkv")
    assert code == 1
    assert_one_line_error(err, f"x.pth: {fragment}")
    assert "weights_only" not in err


def test_names_with_control_characters_stay_on_one_line(random_espcn, tmp_path):
    """A newline or an escape sequence in a file name is written as an escape in notices and errors alike."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes\nand\x1b[31mred.txt").write_text("not media")
    (folder / "clip\nname.mp4").write_text("not a video either")
    result = subprocess.run([sys.executable, "-m", "vidsr.cli", "upscale", str(folder), "--model", str(random_espcn)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("vidsr: ") for line in lines), result.stderr
    assert "skipped 1 file(s) that are not video or images by their suffix: notes\\nand\\x1b[31mred.txt" in lines[0]
    assert "clip\\nname.mp4: not a readable media file" in lines[1]
    assert lines[2].startswith("vidsr: error: 1 of 1 files failed (clip\\nname.mp4)")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["upscale", "in.mp4", "--chunk-seconds", "-1"], "--chunk-seconds: expected a number of at least 0, got '-1'"),
    (["upscale", "in.mp4", "--chunk-seconds", "nan"], "--chunk-seconds: expected a number of at least 0, got 'nan'"),
    (["upscale", "in.mp4", "--max-memory", "-1"], "--max-memory: expected a number above 0"),
    (["upscale", "in.mp4", "--workers", "0"], "--workers: expected a whole number of at least 1"),
    (["upscale", "in.mp4", "--gpus-per-worker", "2"], "--gpus-per-worker: expected a number above 0 and at most 1"),
    (["upscale", "in.mp4", "--tile-pad", "-8"], "--tile-pad: expected a whole number of at least 0"),
    (["upscale", "in.mp4", "--strength", "inf"], "--strength: expected a number from 0 to 1"),
    (["upscale", "in.mp4", "--crf", "-1"], "--crf: expected a whole number of at least 0"),
    (["upscale", "in.mp4", "-b", "0"], "--batch-size: expected a whole number of at least 1, or 'auto'"),
    (["bench", "--frames", "0"], "--frames: expected a whole number of at least 1"),
    (["bench", "--size", "0x360"], "--size: expected WxH"),
    (["eval", "--threads", "-2"], "--threads: expected a whole number of at least 1"),
    (["export", "m", "o.onnx", "--opset", "-5"], "--opset: expected a whole number of at least 1"),
    (["blend", "a", "b", "-o", "o.safetensors", "--alpha", "nan"], "--alpha: expected a number from 0 to 1"),
    (["train", "--lr", "nan"], "--lr: expected a number above 0"),
    (["train", "--ema-decay", "1"], "--ema-decay: expected a number of at least 0 and below 1"),
    (["train", "--iterations", "1e3"], "--iterations: expected a whole number of at least 1"),
])
def test_out_of_range_numbers_are_refused_by_every_command(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and fragment in capsys.readouterr().err


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"chunk_seconds": -1}, "chunk_seconds must be a number of at least 0, got -1"),
    ({"chunk_seconds": float("nan")}, "chunk_seconds must be a number of at least 0, got nan"),
    ({"max_memory": -1.0}, "max_memory must be a number above 0, got -1.0"),
    ({"workers": 0}, "workers must be a whole number of at least 1, got 0"),
    ({"gpus_per_worker": float("inf"), "workers": 1}, "gpus_per_worker must be a number above 0 and at most 1"),
])
def test_out_of_range_numbers_are_refused_by_the_api(make_clip, random_espcn, tmp_path, settings, fragment):
    from vidsr.errors import VidsrError
    from vidsr.jobs.batch import upscale_path

    src = make_clip("in.mkv", width=64, height=48, frames=2, codec="ffv1", options=())
    with pytest.raises(VidsrError, match=fragment):
        upscale_path(src, tmp_path / "out.mkv", model=random_espcn, device="cpu", **settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


def test_export_refuses_an_opset_it_cannot_write_and_an_existing_file(capsys, random_espcn, tmp_path):
    out = tmp_path / "model.onnx"
    code, _, err = run_cli(capsys, "export", random_espcn, out, "--opset", "5")
    assert code == 1 and not out.exists()
    assert_one_line_error(err, "opset must be a whole number from 7 to 20, got 5")
    out.write_bytes(b"an earlier export")
    code, _, err = run_cli(capsys, "export", random_espcn, out)
    assert code == 1 and out.read_bytes() == b"an earlier export"
    assert_one_line_error(err, "model.onnx: already exists (use --overwrite to replace it)")
    code, printed, _ = run_cli(capsys, "export", random_espcn, out, "--overwrite")
    assert code == 0 and printed.startswith(f"{out}: input (N,1,H,W) -> output x2")


_TRAIN_CONFIG = """arch = "espcn"
scale = 2
hyperparams = { channels = 1 }
train_dirs = ["images"]
out_dir = "run"
patch_size = 24
batch_size = 4
iterations = 10
lr = 1e-3
ema_decay = 0.999
schedule = "step"
checkpoint_minutes = 5.0

[gan]
discriminator = "unet"
pixel_weight = 1.0
perceptual_weight = 0.0
vgg_layers = { conv5_4 = 1.0 }
degradation = { preset = "video", noise_prob = 0.5 }
teachers = ["espcn-x2"]
teacher_alpha = 0.5
"""
_TOML_VALUES = ["-1", "0", "nan", "inf", "-inf", "1e308", "2.5", '"x"', '""', "true", "[]", '[1, "a"]', "{}",
                "{ a = 1 }", "1979-05-27", "[[1]]"]


def _mutate_toml(rng, text: str) -> str:
    """One line's value replaced by another TOML value (of any type or range), a line removed, an unknown key
    added, or the text cut or garbled."""
    lines = text.splitlines()
    at = rng.randrange(len(lines))
    kind = rng.choice(["value", "value", "value", "remove", "unknown", "cut", "garble"])
    if kind == "value" and " = " in lines[at]:
        lines[at] = lines[at].split(" = ")[0] + " = " + rng.choice(_TOML_VALUES)
    elif kind == "remove":
        del lines[at]
    elif kind == "unknown":
        lines.insert(at, f"surprise_{at} = 1")
    elif kind == "cut":
        return text[: rng.randrange(len(text))]
    else:
        lines[at] = lines[at][: rng.randrange(len(lines[at]) + 1)] + chr(rng.randrange(1, 0x2FF))
    return "\n".join(lines) + "\n"


def test_fuzzed_training_configs_load_or_fail_in_one_line(capsys, tmp_path):
    """Seeded and bounded: a damaged config either loads, with every value of the type and range its key takes,
    or `vidsr train` says what is wrong in one line (exit 1, no traceback), before it creates anything."""
    import dataclasses
    import random

    from vidsr.errors import InputError
    from vidsr.train.config import RANGES
    from vidsr.train.gan import load_gan_config

    rng = random.Random(30)
    path = tmp_path / "config.toml"
    refused = 0
    for case in range(150):
        path.write_text(_mutate_toml(rng, _TRAIN_CONFIG))
        try:
            config, gan = load_gan_config(path)
        except InputError:
            refused += 1
            code, out, err = run_cli(capsys, "train", "--config", path)
            assert code == 1 and out == "", case
            assert_one_line_error(err, "")
            continue
        for settings in (config, gan):
            for key, value in (dataclasses.asdict(settings) if settings else {}).items():
                assert key not in RANGES or value is None or RANGES[key].holds(value), (case, key, value)
    assert 50 < refused < 150  # both outcomes were exercised
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


_PSNR_CONFIG = _TRAIN_CONFIG.split("\n[gan]")[0]  # the same run without its GAN stage


@pytest.mark.parametrize("first_line", ["", 'init_from = "bad.safetensors"\n'], ids=["no images", "bad init_from"])
def test_a_config_that_loads_but_cannot_train_leaves_no_run_folder(capsys, tmp_path, monkeypatch, first_line):
    """The run folder is made once the model and the data are known to be good, not before."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "bad.safetensors").write_text("not a weight file")
    (tmp_path / "config.toml").write_text(first_line + _PSNR_CONFIG)
    code, out, err = run_cli(capsys, "train", "--config", "config.toml")
    assert code == 1 and out == ""
    assert_one_line_error(err, "")
    assert not (tmp_path / "run").exists()
