"""Every training recipe in configs/ parses, builds its network and, where a GAN stage starts from a bundled
weight file, starts from the configured network: a typo found here costs seconds, found by `vidsr train` it can
cost a GPU lease."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidsr.models.archs import create_model
from vidsr.train.gan import check_stage_one, degradation_config, load_gan_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.toml"))


def test_there_are_configs() -> None:
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_builds(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # init_from paths are relative to the repository, as `vidsr train` is run there
    config, gan = load_gan_config(path)
    model = create_model(config.arch, scale=config.scale, **config.hyperparams)
    assert model.scale == config.scale
    if gan is not None and gan.degradation is not None:
        degradation_config(gan.degradation)
    if config.init_from and config.init_from.startswith("weights/"):
        assert Path(config.init_from).is_file()
        if gan is not None:  # a GAN or Real-ESRNet stage fine-tunes that very network (a PSNR stage copies what fits)
            check_stage_one(config, adversarial=gan.adversarial_weight > 0)
