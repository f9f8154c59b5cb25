"""Run a model over sequences with the batched engine and score it with the OPE success AUC."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from lorat_infer.crop import xyxy_to_xywh
from lorat_infer.engine import TrackingEngine

THRESHOLDS = np.linspace(0, 1, 21)


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, 0], b[:, 0])
    y1 = np.maximum(a[:, 1], b[:, 1])
    x2 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y2 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def success_auc(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> float:
    """OPE success AUC over frames 1.. (frame 0 is the given box): mean over 21 IoU thresholds in [0, 1]."""
    ious = iou_xywh(pred_xywh[1:], gt_xywh[1:])
    return float(np.mean([(ious > t).mean() for t in THRESHOLDS]))


def track_sequences(model: nn.Module, sequences: Sequence, precision: str = "fp32") -> list[np.ndarray]:
    """Track every sequence from its first GT box; sequences of equal length share one batch per frame."""
    engine = TrackingEngine(model, device="cpu", precision=precision)
    outputs: list[np.ndarray] = [np.zeros((0, 4))] * len(sequences)
    by_length: dict[int, list[int]] = {}
    for i, seq in enumerate(sequences):
        by_length.setdefault(len(seq.frames), []).append(i)
    for length, idx in by_length.items():
        states = engine.initialize([sequences[i].frames[0] for i in idx], [sequences[i].boxes[0] for i in idx])
        preds = np.zeros((len(idx), length, 4))
        preds[:, 0] = [sequences[i].boxes[0] for i in idx]
        for t in range(1, length):
            pairs = engine.step(states, [sequences[i].frames[t] for i in idx])
            states = [s for s, _ in pairs]
            preds[:, t] = [xyxy_to_xywh(r.box_xyxy) for _, r in pairs]
        for k, i in enumerate(idx):
            outputs[i] = preds[k]
    return outputs


def evaluate_auc(model: nn.Module, sequences: Sequence, precision: str = "fp32") -> float:
    """Mean success AUC of `model` over `sequences` (the model is left in eval mode)."""
    preds = track_sequences(model, sequences, precision)
    return float(np.mean([success_auc(p, np.asarray(s.boxes)) for p, s in zip(preds, sequences)]))


def initial_box_auc(sequences: Sequence) -> float:
    """The trivial baseline: report the initial box on every frame."""
    scores = []
    for s in sequences:
        gt = np.asarray(s.boxes)
        scores.append(success_auc(np.repeat(gt[:1], len(gt), axis=0), gt))
    return float(np.mean(scores))
