"""Random-weight checkpoints of the issue-6 benchmark networks (speed does not depend on the weights):
SRVGGNetCompact x4 (64 features, 16 convs), RRDBNet x4 and x2 (23 blocks).

    python bench/random_models.py runs/models
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from vidsr.models.archs import create_model
from vidsr.models.checkpoint import save_checkpoint

NETWORKS = {
    "srvgg_x4": ("srvgg", {"scale": 4, "channels": 3, "features": 64, "convs": 16}),
    "rrdbnet_x4": ("rrdbnet", {"scale": 4, "blocks": 23}),
    "rrdbnet_x2": ("rrdbnet", {"scale": 2, "blocks": 23}),
}


def main(folder: str) -> None:
    torch.manual_seed(0)
    for name, (arch, hyperparams) in NETWORKS.items():
        path = save_checkpoint(Path(folder) / f"{name}.safetensors", create_model(arch, **hyperparams), name=name)
        print(path)


if __name__ == "__main__":
    main(sys.argv[1])
