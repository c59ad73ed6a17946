"""Hardening from a user's-eye review (issue #17): real mistakes and damaged files give the expected result or
one clear line, nothing is lost silently, and the quick commands start without loading torch."""

from __future__ import annotations

import itertools
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest

from vidsr.cli import main
from vidsr.zoo import bundled_weights, load_model, safetensors_metadata


def _modules_after(code: str) -> set[str]:
    """Which of torch / av / numpy a fresh interpreter has loaded after running `code`."""
    probe = f"import sys\n{code}\nprint(sorted(m for m in ('torch', 'av', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(eval(done.stdout.strip().splitlines()[-1]))


def test_help_and_models_do_not_load_torch_av_or_numpy():
    assert _modules_after("from vidsr.cli import build_parser; build_parser().format_help()") == set()
    assert _modules_after("from vidsr.cli import main; main(['models'])") == set()


def test_probe_loads_av_but_not_torch(make_clip):
    clip = make_clip("in.mkv", width=64, height=48, frames=2, codec="ffv1", options=())
    assert _modules_after(f"from vidsr.cli import main; main(['probe', {str(clip)!r}])") == {"av"}


@pytest.mark.parametrize("name", sorted(bundled_weights()))
def test_bundled_weight_headers_hold_the_real_cost(name):
    descriptor = load_model(name)
    header = safetensors_metadata(bundled_weights()[name])
    assert header["params"] == descriptor.params
    assert header["gmacs_1080p"] == pytest.approx(descriptor.gmacs(), rel=1e-6)
    assert (header["arch"], header["scale"], header["color"]) == (descriptor.arch, descriptor.scale, descriptor.color)


# --- helpers for the media tests -----------------------------------------------------------------------------


@pytest.fixture
def upscale(capsys, caplog):
    """upscale(*args): run `vidsr upscale` in-process; returns the exit code and what it told the user (stderr
    and the notices it logged)."""

    def run(*args: object) -> tuple[int, str]:
        caplog.clear()
        code = main(["upscale", *map(str, args), "--device", "cpu"])
        return code, capsys.readouterr().err + caplog.text

    return run


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vidsr: error: ") and "Traceback" not in err, err
    return lines[0]


def packet_times(path: Path, kind: str) -> list[int]:
    with av.open(str(path)) as container:
        return [p.dts for p in container.demux(**{kind: 0}) if p.size]


def opencv_style_avi(make_clip) -> Path:
    """An H.264 + AAC AVI whose audio timestamps repeat, as in AVIs written by OpenCV: its audio header
    declares a sample size, which makes FFmpeg's AVI demuxer count the AAC packets' bytes in huge samples."""
    path = make_clip("cam.avi", width=64, height=48, frames=8, audio=True, time_base=Fraction(1, 24))
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.find(b"auds") + 44, 1 << 28)  # strh.dwSampleSize
    path.write_bytes(data)
    return path


# --- 1: broken audio timestamps ------------------------------------------------------------------------------


def test_avi_with_repeating_audio_timestamps_upscales_with_the_audio(upscale, make_clip, random_espcn, tmp_path):
    src = opencv_style_avi(make_clip)
    times = packet_times(src, "audio")
    assert any(b <= a for a, b in itertools.pairwise(times))  # the input really is broken
    code, err = upscale(src, "-m", random_espcn, "-o", tmp_path / "out.mp4")
    assert code == 0, err
    assert "rebuilt from the sample count" in err
    out = packet_times(tmp_path / "out.mp4", "audio")
    assert len(out) == len(times) and all(b > a for a, b in itertools.pairwise(out))


@pytest.mark.parametrize(("mode", "codecs"), [("drop", []), ("reencode", ["mp3"])])
def test_audio_option_drops_or_reencodes(upscale, make_clip, random_espcn, tmp_path, mode, codecs):
    src = make_clip("in.mkv", width=64, height=48, frames=4, audio=True)
    code, err = upscale(src, "-m", random_espcn, "--audio", mode, "-o", tmp_path / "out.avi")
    assert code == 0, err
    with av.open(str(tmp_path / "out.avi")) as container:
        assert [s.codec_context.codec.canonical_name for s in container.streams.audio] == codecs
