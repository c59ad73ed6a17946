"""Community checkpoints for tests, built from random weights with spandrel's own architecture classes (tiny
hyper-parameters, so that each runs in milliseconds) and saved the ways people publish them: bare state dicts,
`params_ema` / `params` / `state_dict` wrappers, DataParallel `module.` prefixes, and safetensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file


def _tiny_models() -> dict[str, Callable[[], torch.nn.Module]]:
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.CRAFT import CRAFT
    from spandrel.architectures.DAT import DAT
    from spandrel.architectures.DITN import DITN
    from spandrel.architectures.DnCNN import DnCNN
    from spandrel.architectures.DRCT import DRCT
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.HAT import HAT
    from spandrel.architectures.OmniSR import OmniSR
    from spandrel.architectures.PLKSR import PLKSR, RealPLKSR
    from spandrel.architectures.RealCUGAN import UpCunet2x
    from spandrel.architectures.RetinexFormer import RetinexFormer
    from spandrel.architectures.SAFMN import SAFMN
    from spandrel.architectures.SAFMNBCIE import SAFMNBCIE
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    return {
        "esrgan_x4": lambda: ESRGAN(num_filters=8, num_blocks=1, scale=4),
        "esrgan_grey_x2": lambda: ESRGAN(in_nc=1, out_nc=1, num_filters=8, num_blocks=1, scale=2),
        # Real-ESRGAN x2plus: x4 RRDBNet after a 2x pixel-unshuffle
        "realesrgan_x2plus": lambda: ESRGAN(in_nc=12, out_nc=3, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2),
        "compact_x2": lambda: Compact(num_feat=8, num_conv=2, upscale=2),
        "compact_x8": lambda: Compact(num_feat=8, num_conv=1, upscale=8),
        "compact_rgba_x2": lambda: Compact(num_in_ch=4, num_out_ch=4, num_feat=8, num_conv=1, upscale=2),
        "span_x2": lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),
        "realplksr_x2": lambda: RealPLKSR(dim=16, n_blocks=1, upscaling_factor=2, kernel_size=7),
        "plksr_x3": lambda: PLKSR(dim=16, n_blocks=1, upscaling_factor=3, kernel_size=7),
        "omnisr_x2": lambda: OmniSR(num_feat=8, block_num=1, window_size=8, up_scale=2),
        "swinir_x2": lambda: SwinIR(embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
                                    upsampler="pixelshuffledirect", mlp_ratio=2.0),
        "hat_x2": lambda: HAT(embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, compress_ratio=3,
                              squeeze_factor=4, upscale=2, upsampler="pixelshuffle", mlp_ratio=2.0),
        "dat_x2": lambda: DAT(embed_dim=16, split_size=[2, 4], depth=[1], num_heads=[2], upscale=2,
                              upsampler="pixelshuffledirect", expansion_factor=2.0),
        "safmn_x2": lambda: SAFMN(dim=8, n_blocks=1, upscaling_factor=2),
        "safmnbcie_x1": lambda: SAFMNBCIE(dim=8, n_blocks=1, num_layers=1, upscaling_factor=2),
        "craft_x2": lambda: CRAFT(embed_dim=12, depths=(1,), num_heads=(2,), upscale=2),
        "retinexformer_x1": lambda: RetinexFormer(n_feat=8, stage=1, num_blocks=(1, 1, 1)),
        "ditn_x2": lambda: DITN(dim=12, ITL_blocks=1, SAL_blocks=1, patch_size=8, upscale=2),
        "realcugan_x2": lambda: UpCunet2x(),
        "drct_x2": lambda: DRCT(embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, upscale=2,
                                upsampler="pixelshuffle", gc=4, mlp_ratio=2.0),
        "dncnn_grey_x1": lambda: DnCNN(in_nc=1, out_nc=1, nc=8, nb=5),
    }


# Architectures whose padding is checked against their authors' (test_spandrel.py), kept out of the matrix of
# every other test: seconds each on two cores, where the others take a fraction of one.
PADDING_ONLY = ("craft_x2", "retinexformer_x1", "safmnbcie_x1")
TINY_MODELS = sorted(set(_tiny_models()) - set(PADDING_ONLY))
WRAPPERS: dict[str, Callable[[dict[str, torch.Tensor]], object]] = {
    "bare": lambda sd: sd,
    "params_ema": lambda sd: {"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}},
    "params": lambda sd: {"params": sd},
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "module": lambda sd: {f"module.{k}": v for k, v in sd.items()},
}


def random_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny model of `name` with seeded random weights (small, so that deep stacks stay in range)."""
    torch.manual_seed(seed)
    model = _tiny_models()[name]()
    return {key: value.clone() for key, value in model.state_dict().items()}


def save_third_party(path: Path, state_dict: dict[str, torch.Tensor], wrapper: str = "bare") -> Path:
    """Save as a third-party author would: `.safetensors` (bare tensors, no vidsr header) or torch.save."""
    if path.suffix == ".safetensors":
        save_file({key: value.contiguous() for key, value in state_dict.items()}, str(path))
    else:
        torch.save(WRAPPERS[wrapper](state_dict), path)
    return path


# How each architecture's authors pad at inference where spandrel's descriptor pads more (its size multiple is
# stricter than the network needs): the multiple their code reflect-pads to before the network.
AUTHORS_MULTIPLE: dict[str, Callable[[torch.nn.Module], int]] = {
    "SAFMN": lambda net: 1,  # the SAFMN repository's test runs the network on the picture as it is
    "SAFMNBCIE": lambda net: net.to_feat[0].downscale_factor,  # what its first pixel-unshuffle needs
    "CRAFT": lambda net: 1,  # inference_CRAFT.py's padding is in spandrel's forward
    "ESRGAN": lambda net: 1,  # RealESRGANer reflect-pads to the unshuffle factor: spandrel's forward does so itself
    "DRCT": lambda net: net.window_size,  # DRCTModel.pre_process: reflect to the window size
    "RetinexFormer": lambda net: 4,  # test_from_dataset.py: reflect to a multiple of 4
}


def spandrel_forward(state_dict: dict[str, torch.Tensor], rgb: torch.Tensor) -> torch.Tensor:
    """The architecture's own result for (N,C,H,W) in [0,1], clamped: spandrel's loader and calling convention,
    padded as its authors' inference pads (spandrel's own padding elsewhere)."""
    from spandrel import ModelLoader

    descriptor = ModelLoader().load_from_state_dict(state_dict).eval()
    authors = AUTHORS_MULTIPLE.get(descriptor.architecture.id)
    with torch.no_grad():
        if authors is None:
            return descriptor(rgb)
        height, width = rgb.shape[-2:]
        multiple = authors(descriptor.model)
        padded = F.pad(rgb, (0, -width % multiple, 0, -height % multiple), mode="reflect")
        out = descriptor._call_fn(descriptor.model, padded)
        return out[..., : height * descriptor.scale, : width * descriptor.scale].clamp(0, 1)
