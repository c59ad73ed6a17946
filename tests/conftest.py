"""Shared fixtures: a small random-weight model file and a factory for generated clips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from vidsr.archs import create_model
from vidsr.checkpoint import save_checkpoint
from vidsr.sample import ClipSpec, write_clip


@pytest.fixture(scope="session")
def random_espcn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ESPCN x2 Y-channel model with seeded random weights, saved as a project safetensors file."""
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("models") / "espcn_x2_random.safetensors",
                           create_model("espcn", scale=2))


@pytest.fixture(scope="session")
def random_rgb_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RGB model (3-channel ESPCN x2, random weights): exercises the YUV -> RGB -> YUV path."""
    torch.manual_seed(1)
    return save_checkpoint(tmp_path_factory.mktemp("models") / "espcn_rgb_x2_random.safetensors",
                           create_model("espcn", scale=2, channels=3))


@pytest.fixture
def make_clip(tmp_path: Path) -> Callable[..., Path]:
    """make_clip(name, **ClipSpec fields) -> path of a clip written with PyAV into the test's tmp dir."""

    def make(name: str, **fields) -> Path:
        return write_clip(tmp_path / name, ClipSpec(**fields))

    return make
