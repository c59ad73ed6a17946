"""Hardening from a user's-eye review (issue #17): real mistakes and damaged files give the expected result or
one clear line, nothing is lost silently, and the quick commands start without loading torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
