"""`vidsr eval`: Y-PSNR / SSIM of models (or the bicubic baseline) with the standard SR protocol."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidsr.commands import add_command, number_arg
from vidsr.errors import POSITIVE_WHOLE, InputError

if TYPE_CHECKING:
    from vidsr.quality.evaluate import EvalResult, LumaPredictor

DATA_ENV = "VIDSR_EVAL_DATA"  # folder holding Set5/, Set14/ ...


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "eval", "measure Y-PSNR/SSIM (standard SR protocol) of models or bicubic", run)
    parser.add_argument("models", nargs="*", help="bundled model names or weight files (default: all bundled)")
    parser.add_argument("--bicubic", action="store_true", help="evaluate the MATLAB-bicubic baseline")
    parser.add_argument("--scale", type=number_arg(POSITIVE_WHOLE), nargs="+", default=[2, 3, 4],
                        help="scales for --bicubic")
    parser.add_argument("--dataset", nargs="+", help=f"folders of HR images (default: ${DATA_ENV}/Set5 and Set14)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--threads", type=number_arg(POSITIVE_WHOLE),
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--per-image", action="store_true", help="also print every image's figures")
    parser.add_argument("--realworld", action="store_true",
                        help="also the real-world protocol (blur + noise + libx264 on the LR): NIQE, PSNR/SSIM "
                        "against the clean HR, mean luma change and contrast ratio against the input, and "
                        "overshoot (haloes: levels beyond the clean image's local range next to its edges)")
    parser.add_argument("--flicker", action="store_true",
                        help="also temporal stability on clips made from each image (still top, panning bottom): "
                        "mean luma change between output frames beyond the ground truth's, overall and static")
    parser.add_argument("--record", action="store_true",
                        help="store the measured figures in each (safetensors) weight file's metadata")


def dataset_dirs(args: argparse.Namespace) -> list[Path]:
    if args.dataset:
        dirs = [Path(d) for d in args.dataset]
    elif os.environ.get(DATA_ENV):
        dirs = [Path(os.environ[DATA_ENV]) / name for name in ("Set5", "Set14")]
    else:
        raise InputError(f"no evaluation data: pass --dataset DIR or set {DATA_ENV} to a folder with Set5/ Set14/")
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise InputError(f"dataset folder not found: {', '.join(missing)}")
    return dirs


def run(args: argparse.Namespace) -> int:
    import torch

    from vidsr.models.checkpoint import update_metadata
    from vidsr.models.zoo import bundled_weights, load_model
    from vidsr.quality.evaluate import bicubic_predictor, evaluate_dataset, model_predictor
    from vidsr.train.trainer import resolve_device

    datasets = dataset_dirs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    extra: dict[str, list[dict[str, Any]]] = {"realworld": [], "flicker": []}
    if args.bicubic:
        for scale in args.scale:
            rows += [_row("bicubic", evaluate_dataset(bicubic_predictor(scale), d, scale)) for d in datasets]
            _extra_rows(args, "bicubic", bicubic_predictor(scale), datasets, scale, extra)
    names = args.models or ([] if args.bicubic else list(bundled_weights()))
    device = resolve_device(args.device)
    for name in names:
        descriptor = load_model(name)
        predict = model_predictor(descriptor, device)
        results = [evaluate_dataset(predict, d, descriptor.scale) for d in datasets]
        rows += [_row(str(name), result) for result in results]  # as given: two files may carry one name
        recorded = _extra_rows(args, str(name), predict, datasets, descriptor.scale, extra)
        if args.record:
            path = bundled_weights().get(name, Path(name))
            update_metadata(path, psnr={r.dataset: round(r.psnr, 3) for r in results},
                            ssim={r.dataset: round(r.ssim, 4) for r in results}, **recorded)
    print_table(rows, args.per_image)
    for kind, kind_rows in extra.items():
        print_extra_table(kind, kind_rows)
    if args.json:
        args.json.write_text(json.dumps(rows + extra["realworld"] + extra["flicker"], indent=2))
    return 0


def _extra_rows(args: argparse.Namespace, model: str, predict: LumaPredictor, datasets: list[Path], scale: int,
                extra: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """The --realworld / --flicker rows of one model, appended to `extra`; returns them by dataset to record."""
    from vidsr.quality.realworld import evaluate_flicker, evaluate_realworld

    measures = {"realworld": evaluate_realworld, "flicker": evaluate_flicker}
    recorded = {}
    for kind, evaluate in measures.items():
        if not getattr(args, kind):
            continue
        results = [asdict(evaluate(predict, d, scale)) for d in datasets]
        figures = [{key: round(value, 4) for key, value in r.items() if isinstance(value, float)} for r in results]
        extra[kind] += [{"model": model, "measure": kind, **r, **f} for r, f in zip(results, figures, strict=True)]
        recorded[kind] = {r["dataset"]: f for r, f in zip(results, figures, strict=True)}
    return recorded


def _row(model: str, result: EvalResult) -> dict[str, Any]:
    return {"model": model, "dataset": result.dataset, "scale": result.scale, "psnr": round(result.psnr, 3),
            "ssim": round(result.ssim, 4), "images": result.per_image}


def print_extra_table(kind: str, rows: list[dict[str, Any]]) -> None:
    """The --realworld or --flicker table: one column per measured figure."""
    if not rows:
        return
    columns = [key for key in rows[0] if key not in ("model", "measure", "dataset", "scale")]
    width = max([24, *(len(row["model"]) for row in rows)])
    print(f"\n{kind} ({'8-bit levels' if kind == 'flicker' else 'NIQE: lower is more natural'})")
    print(f"{'model':<{width}} {'dataset':<10} {'scale':>5} " + " ".join(f"{c:>14}" for c in columns))
    for row in rows:
        print(f"{row['model']:<{width}} {row['dataset']:<10} {'x' + str(row['scale']):>5} "
              + " ".join(f"{row[c]:>14.4f}" for c in columns))


def print_table(rows: list[dict[str, Any]], per_image: bool) -> None:
    width = max([24, *(len(row["model"]) for row in rows)])  # a weight file's path can be long
    print(f"{'model':<{width}} {'dataset':<10} {'scale':>5} {'PSNR':>8} {'SSIM':>7}")
    for row in rows:
        print(f"{row['model']:<{width}} {row['dataset']:<10} {'x' + str(row['scale']):>5} {row['psnr']:>8.3f} "
              f"{row['ssim']:>7.4f}")
        for image in row["images"] if per_image else []:
            print(f"  {image['image']:<32} {image['psnr']:>8.3f} {image['ssim']:>7.4f}")
