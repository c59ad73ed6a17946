"""Shared fixtures: a small random-weight model file, and factories for generated clips and textured images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidsr.models.archs import create_model
from vidsr.models.checkpoint import save_checkpoint
from vidsr.tools.sample import ClipSpec, write_clip


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


def write_textured_images(folder: Path, count: int, side: int) -> Path:
    """`count` square RGB images of coloured sine gratings with noise: texture at every scale, in `folder`."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for index in range(count):
        base = np.stack([np.sin(2 * np.pi * (xx * (c + 3 + index) + 2 * yy)) for c in range(3)], axis=-1)
        img = 127 + 80 * base + rng.normal(0, 12, base.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{index}.png")
    return folder


@pytest.fixture(scope="module")
def textured_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, int], Path]:
    """A factory: a new folder of `write_textured_images(count, side)`."""
    return lambda count, side: write_textured_images(tmp_path_factory.mktemp("textured"), count, side)
