"""Resumable training checkpoints: weights as safetensors, optimiser tensors via torch.save
(loaded back with weights_only=True), and the run state (step, curves) as JSON. Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS, OPTIMIZER, STATE = "weights.safetensors", "optimizer.pt", "state.json"


def save_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any]) -> Path:
    """Write atomically: into `<dir>.tmp`, then rename over `<dir>`."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS))
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
    (tmp / STATE).write_text(json.dumps(state))
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        os.replace(directory, old)
        os.replace(tmp, directory)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, directory)
    return directory


def has_checkpoint(directory: str | Path) -> bool:
    directory = Path(directory)
    return all((directory / name).is_file() for name in (WEIGHTS, OPTIMIZER, STATE))


def load_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    directory = Path(directory)
    model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
    optimizer.load_state_dict(torch.load(directory / OPTIMIZER, map_location="cpu", weights_only=True))
    return json.loads((directory / STATE).read_text())
