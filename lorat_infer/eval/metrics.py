"""One-pass evaluation (OPE) metrics as the tracking benchmarks define them (OTB / LaSOT toolkits).

Conventions (written down because toolkits differ in the details):

- Boxes are (x, y, w, h) in pixels on a continuous plane: a box covers [x, x + w) x [y, y + h), so
  x2 = x + w, and IoU is the ratio of continuous areas (pytracking's convention; the old OTB MATLAB code
  used inclusive pixel boxes, x2 = x + w - 1, which differs by about one pixel of area per edge).
- Centre = (x + w / 2, y + h / 2). The toolkits' `x + (w - 1) / 2` differs by a constant that cancels in a
  centre *difference*; it only matters for the normalised error, where we divide the difference by the
  ground-truth (w, h), as LaSOT does.
- Success curve: fraction of frames with IoU > t for t in linspace(0, 1, 21) (strictly greater, as the
  toolkits do, so the value at t = 1 is 0 for any tracker); AUC ("SUC") = mean of the curve.
- Precision curve: fraction of frames with centre error <= t px for t = 0..50; "precision" is the value
  at 20 px.
- Normalised precision: fraction of frames with normalised centre error <= t for t in linspace(0, 0.5, 51);
  we report both the value at 0.2 (pytracking / the LaSOT tables of most papers) and the mean of the curve
  over 0..0.5 (the LaSOT paper's ranking).
- Frames whose ground truth is absent (flagged, NaN, or w/h <= 0) are skipped: they count neither as
  successes nor in the denominator (LaSOT's extension toolkit deletes them likewise).
- An invalid prediction (NaN or w/h <= 0) on a frame with valid ground truth is replaced by the previous
  prediction, as LaSOT's `calc_seq_err_robust` does; an invalid first prediction scores IoU 0.
- Aggregate over sequences: curves are averaged per sequence (each sequence weighs the same), as the
  OTB and LaSOT toolkits do, then AUC / P@20 / NP are read off the averaged curves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)
PRECISION_THRESHOLDS = np.arange(0, 51, dtype=np.float64)  # pixels
NORM_PRECISION_THRESHOLDS = np.linspace(0.0, 0.5, 51)
PRECISION_AT = 20.0
NORM_PRECISION_AT = 0.2


def as_boxes(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """(N, 4) float64 xywh; raises ValueError on any other shape."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) x, y, w, h; got shape {arr.shape}")
    return arr


def valid_boxes(boxes: np.ndarray) -> np.ndarray:
    """True where a box is finite with positive width and height."""
    boxes = as_boxes(boxes)
    return np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


def iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-row IoU of continuous xywh boxes (x2 = x + w); 0 where either box is degenerate."""
    pred, gt = as_boxes(pred), as_boxes(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    x1 = np.maximum(pred[:, 0], gt[:, 0])
    y1 = np.maximum(pred[:, 1], gt[:, 1])
    x2 = np.minimum(pred[:, 0] + pred[:, 2], gt[:, 0] + gt[:, 2])
    y2 = np.minimum(pred[:, 1] + pred[:, 3], gt[:, 1] + gt[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = pred[:, 2] * pred[:, 3] + gt[:, 2] * gt[:, 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    out[~(valid_boxes(pred) & valid_boxes(gt))] = 0.0
    return out


def centers(boxes: np.ndarray) -> np.ndarray:
    boxes = as_boxes(boxes)
    return boxes[:, :2] + boxes[:, 2:] / 2


def center_error(pred: np.ndarray, gt: np.ndarray, normalized: bool = False) -> np.ndarray:
    """Euclidean centre distance in pixels, or in units of the ground-truth (w, h) when `normalized`."""
    diff = centers(pred) - centers(gt)
    if normalized:
        diff = diff / as_boxes(gt)[:, 2:]
    return np.hypot(diff[:, 0], diff[:, 1])


def carry_forward_invalid(pred: np.ndarray) -> np.ndarray:
    """Replace invalid predictions by the previous one (LaSOT toolkit); a leading invalid one stays."""
    pred = as_boxes(pred).copy()
    ok = valid_boxes(pred)
    for i in range(1, len(pred)):
        if not ok[i] and ok[i - 1]:
            pred[i] = pred[i - 1]
            ok[i] = True
    return pred


class _CurveSummary:
    """The single numbers read off the three curves (shared by per-sequence and aggregate results)."""

    success_curve: np.ndarray
    precision_curve: np.ndarray
    norm_precision_curve: np.ndarray

    @property
    def auc(self) -> float:
        return float(self.success_curve.mean())

    @property
    def precision(self) -> float:
        return float(self.precision_curve[int(np.argmin(np.abs(PRECISION_THRESHOLDS - PRECISION_AT)))])

    @property
    def norm_precision(self) -> float:
        idx = int(np.argmin(np.abs(NORM_PRECISION_THRESHOLDS - NORM_PRECISION_AT)))
        return float(self.norm_precision_curve[idx])

    @property
    def norm_precision_auc(self) -> float:
        return float(self.norm_precision_curve.mean())

    def curve_summary(self) -> dict[str, float]:
        return {
            "auc": self.auc,
            "precision": self.precision,
            "norm_precision": self.norm_precision,
            "norm_precision_auc": self.norm_precision_auc,
        }


@dataclass
class SequenceMetrics(_CurveSummary):
    """OPE results of one sequence; curves are over the module's threshold arrays."""

    name: str
    ious: np.ndarray  # (N,) per frame; NaN where the frame was skipped
    center_errors: np.ndarray  # (N,) pixels; NaN where skipped
    success_curve: np.ndarray  # (21,)
    precision_curve: np.ndarray  # (51,)
    norm_precision_curve: np.ndarray  # (51,)
    num_frames: int
    num_evaluated: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mean_iou(self) -> float:
        return float(np.nanmean(self.ious)) if self.num_evaluated else float("nan")

    def summary(self) -> dict[str, float]:
        return {**self.curve_summary(), "mean_iou": self.mean_iou, "frames": float(self.num_evaluated)}


def evaluate_sequence(pred: np.ndarray, gt: np.ndarray, absent: np.ndarray | None = None,
                      name: str = "sequence") -> SequenceMetrics:
    """OPE metrics of one sequence. `absent` (N,) bool marks frames without a visible target."""
    pred, gt = as_boxes(pred), as_boxes(gt)
    if len(pred) != len(gt):
        raise ValueError(f"{name}: {len(pred)} predicted boxes but {len(gt)} ground-truth boxes")
    evaluated = valid_boxes(gt)
    if absent is not None:
        absent = np.asarray(absent, dtype=bool).reshape(-1)
        if absent.shape != (len(gt),):
            raise ValueError(f"{name}: absent flags have shape {absent.shape}, expected ({len(gt)},)")
        evaluated &= ~absent
    pred = carry_forward_invalid(pred)
    pred_ok = valid_boxes(pred)

    ious = np.full(len(gt), np.nan)
    errors = np.full(len(gt), np.nan)
    norm_errors = np.full(len(gt), np.nan)
    if evaluated.any():
        p, g = pred[evaluated], gt[evaluated]
        ok = pred_ok[evaluated]
        ious[evaluated] = np.where(ok, iou(np.where(ok[:, None], p, g), g), 0.0)
        with np.errstate(invalid="ignore"):
            errors[evaluated] = np.where(ok, center_error(np.where(ok[:, None], p, g), g), np.inf)
            norm_errors[evaluated] = np.where(ok, center_error(np.where(ok[:, None], p, g), g, True), np.inf)
    n = int(evaluated.sum())
    ev_iou, ev_err, ev_nerr = ious[evaluated], errors[evaluated], norm_errors[evaluated]
    if n:
        success = (ev_iou[None, :] > SUCCESS_THRESHOLDS[:, None]).mean(axis=1)
        precision = (ev_err[None, :] <= PRECISION_THRESHOLDS[:, None]).mean(axis=1)
        norm_precision = (ev_nerr[None, :] <= NORM_PRECISION_THRESHOLDS[:, None]).mean(axis=1)
    else:
        success = np.zeros_like(SUCCESS_THRESHOLDS)
        precision = np.zeros_like(PRECISION_THRESHOLDS)
        norm_precision = np.zeros_like(NORM_PRECISION_THRESHOLDS)
    return SequenceMetrics(
        name=name, ious=ious, center_errors=errors, success_curve=success, precision_curve=precision,
        norm_precision_curve=norm_precision, num_frames=len(gt), num_evaluated=n,
    )


@dataclass
class AggregateMetrics(_CurveSummary):
    """Per-sequence curves averaged with equal weight per sequence (sequences with no valid frame excluded)."""

    sequences: list[SequenceMetrics]
    success_curve: np.ndarray
    precision_curve: np.ndarray
    norm_precision_curve: np.ndarray

    def summary(self) -> dict[str, float]:
        return {**self.curve_summary(), "sequences": float(len(self.sequences))}


def aggregate(results: Sequence[SequenceMetrics]) -> AggregateMetrics:
    """Average the curves of sequences that have at least one evaluated frame."""
    used = [r for r in results if r.num_evaluated > 0]
    if not used:
        raise ValueError("no sequence has a frame with valid ground truth; nothing to aggregate")
    return AggregateMetrics(
        sequences=list(results),
        success_curve=np.mean([r.success_curve for r in used], axis=0),
        precision_curve=np.mean([r.precision_curve for r in used], axis=0),
        norm_precision_curve=np.mean([r.norm_precision_curve for r in used], axis=0),
    )


def format_table(results: Sequence[SequenceMetrics], total: AggregateMetrics | None = None) -> str:
    """A markdown table: one row per sequence plus the aggregate (percentages, as papers report)."""
    lines = [
        "| sequence | frames | AUC (SUC) % | P@20px % | NP@0.2 % | NP AUC % | mean IoU % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.num_evaluated}/{r.num_frames} | {100 * r.auc:.1f} | {100 * r.precision:.1f} | "
            f"{100 * r.norm_precision:.1f} | {100 * r.norm_precision_auc:.1f} | {100 * r.mean_iou:.1f} |"
        )
    if total is None and any(r.num_evaluated for r in results):
        total = aggregate(results)
    if total is not None and len(results) > 1:
        lines.append(
            f"| **all ({len(total.sequences)})** | | {100 * total.auc:.1f} | {100 * total.precision:.1f} | "
            f"{100 * total.norm_precision:.1f} | {100 * total.norm_precision_auc:.1f} | |"
        )
    return "\n".join(lines)
