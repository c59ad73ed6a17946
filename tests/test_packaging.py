"""`pip install .` ships every package: each folder with an __init__.py is listed in pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_for_the_wheel():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    locations = {REPO / setuptools["package-dir"].get(name, name.replace(".", "/")) for name in listed}
    found = {init.parent for top in ("vidsr", "plugins", "web", "weights")
             for init in (REPO / top).rglob("__init__.py")}
    assert found == locations, f"unlisted: {sorted(map(str, found - locations))}"
    assert "*.safetensors" in setuptools["package-data"]["vidsr.weights"]


def test_package_data_patterns_match_files():
    """Every package-data pattern names files that are there (a moved data file moves its entry with it)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name, patterns in setuptools["package-data"].items():
        folder = REPO / setuptools["package-dir"].get(name, name.replace(".", "/"))
        for pattern in patterns:
            assert any(folder.glob(pattern)), f"{name}: nothing matches {pattern} in {folder}"
