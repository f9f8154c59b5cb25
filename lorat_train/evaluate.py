"""Success AUC of a model on sequences, through the library's batched runner and OPE metrics.

A thin layer over `lorat_infer.eval` so validation during training and the default-model benchmark use
exactly the conventions of `lorat-track` (frame 0 counts as the toolkits count it).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lorat_infer.engine import TrackingEngine
from lorat_infer.eval.metrics import evaluate_sequence
from lorat_infer.eval.runner import run_sequences


def evaluate_auc(model: nn.Module, sequences: Sequence, precision: str = "fp32", batch_size: int = 32,
                 device: str | torch.device | None = None, max_frames: int | None = None) -> float:
    """Mean success AUC of `model` over `sequences` (the model is left in eval mode)."""
    if device is None:
        device = next(model.parameters()).device
    runs = run_sequences(_engine(model, device, precision), sequences, batch_size=batch_size,
                         max_frames=max_frames or None)
    return float(np.mean([r.metrics.auc for r in runs if r.metrics is not None]))


def _engine(model: nn.Module, device: str | torch.device, precision: str) -> TrackingEngine:
    """A plain engine: no torch.compile / CUDA graphs for a model whose weights change between evaluations
    (on CUDA the engine would otherwise compile and capture it again at every validation)."""
    kwargs = {"device": str(device), "precision": precision}
    accepted = inspect.signature(TrackingEngine.__init__).parameters
    kwargs.update({k: False for k in ("compile", "cuda_graphs") if k in accepted})
    return TrackingEngine(model, **kwargs)


def initial_box_auc(sequences: Sequence) -> float:
    """The trivial baseline: report the initial box on every frame."""
    scores = []
    for s in sequences:
        gt = np.asarray(s.boxes, dtype=np.float64)
        scores.append(evaluate_sequence(np.repeat(gt[:1], len(gt), axis=0), gt).auc)
    return float(np.mean(scores))
