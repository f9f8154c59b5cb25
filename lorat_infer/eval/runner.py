"""Run the tracker over sequences (one-pass evaluation) and score the results.

Sequences advance through one `TrackingEngine`, up to `batch_size` of them per forward pass, as the
authors' evaluator does: when a sequence ends its slot goes to the next one. The boxes do not depend on
the batching (the engine treats every track independently).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch import nn

from ..engine import TrackingEngine, TrackState
from .metrics import AggregateMetrics, SequenceMetrics, aggregate, evaluate_sequence, format_table


class EvalSequence(Protocol):
    """What the runner needs: a name, ground truth boxes, and frames by index (list or `frame(i)`)."""

    name: str
    boxes: np.ndarray


def _num_frames(seq: object) -> int:
    frames = getattr(seq, "frames", None)
    if isinstance(frames, list):
        return len(frames)
    return len(seq)  # type: ignore[arg-type]


def _frame(seq: object, index: int) -> np.ndarray:
    frames = getattr(seq, "frames", None)
    if isinstance(frames, list):
        return frames[index]
    return seq.frame(index)  # type: ignore[attr-defined]


@dataclass
class SequenceRun:
    """Predictions for one sequence: frame 0 holds the initial box (score 1), as OPE results files do."""

    name: str
    boxes: np.ndarray  # (N, 4) xywh
    scores: np.ndarray  # (N,)
    metrics: SequenceMetrics | None
    seconds: float  # wall time spent in this sequence's steps (shared batches split evenly)


@dataclass
class _Active:
    index: int
    seq: object
    state: TrackState
    boxes: list[np.ndarray]
    scores: list[float]
    seconds: float = 0.0


def run_sequences(model_or_engine: nn.Module | TrackingEngine, sequences: Sequence[EvalSequence],
                  batch_size: int = 1, max_frames: int | None = None, device: str | None = None,
                  precision: str = "auto", evaluate: bool = True,
                  progress: Callable[[int], None] | None = None) -> list[SequenceRun]:
    """Track every sequence from its first ground-truth box; returns one `SequenceRun` each, in order.

    `progress(n)` is called with the number of frames just processed (e.g. a tqdm `update`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    engine = model_or_engine if isinstance(model_or_engine, TrackingEngine) else TrackingEngine(
        model_or_engine, device=device, precision=precision)
    lengths = [_num_frames(s) if max_frames is None else min(_num_frames(s), max_frames) for s in sequences]
    runs: list[SequenceRun | None] = [None] * len(sequences)
    pending = list(range(len(sequences)))[::-1]
    active: list[_Active] = []

    while pending or active:
        # Fill free slots (batched template embedding).
        new = []
        while pending and len(active) + len(new) < batch_size:
            new.append(pending.pop())
        if new:
            t0 = time.perf_counter()
            firsts = [_frame(sequences[i], 0) for i in new]
            init_boxes = [np.asarray(sequences[i].boxes[0], dtype=np.float64) for i in new]
            states = engine.initialize(firsts, init_boxes)
            share = (time.perf_counter() - t0) / len(new)
            for i, state, box in zip(new, states, init_boxes):
                active.append(_Active(i, sequences[i], state, [box], [1.0], share))
            if progress:
                progress(len(new))
        # Finished sequences leave; the rest step together.
        for a in [a for a in active if len(a.boxes) >= lengths[a.index]]:
            active.remove(a)
            runs[a.index] = _finish(a, evaluate)
        if not active:
            continue
        t0 = time.perf_counter()
        frames = [_frame(a.seq, len(a.boxes)) for a in active]
        pairs = engine.step([a.state for a in active], frames)
        share = (time.perf_counter() - t0) / len(active)
        for a, (state, result) in zip(active, pairs):
            a.state = state
            a.boxes.append(result.box_xywh)
            a.scores.append(result.score)
            a.seconds += share
        if progress:
            progress(len(active))
    return [r for r in runs if r is not None]


def _finish(a: _Active, evaluate: bool) -> SequenceRun:
    boxes = np.stack(a.boxes)
    name = str(getattr(a.seq, "name", f"sequence-{a.index}"))
    metrics = None
    if evaluate:
        gt = np.asarray(a.seq.boxes, dtype=np.float64)[: len(boxes)]  # type: ignore[attr-defined]
        absent = getattr(a.seq, "absent", None)
        absent = None if absent is None else np.asarray(absent, dtype=bool)[: len(boxes)]
        metrics = evaluate_sequence(boxes, gt, absent, name=name)
    return SequenceRun(name, boxes, np.asarray(a.scores), metrics, a.seconds)


def summarize(runs: Sequence[SequenceRun]) -> tuple[str, AggregateMetrics | None]:
    """The metrics table of evaluated runs (markdown) and the aggregate."""
    metrics = [r.metrics for r in runs if r.metrics is not None]
    if not metrics:
        return "(no ground truth: nothing to evaluate)", None
    total = aggregate(metrics) if any(m.num_evaluated for m in metrics) else None
    return format_table(metrics, total), total


def print_results(runs: Sequence[SequenceRun]) -> AggregateMetrics | None:
    """Print the metrics table and the tracking speed; returns the aggregate."""
    table, total = summarize(runs)
    print(table)
    frames = sum(len(r.boxes) for r in runs)
    seconds = sum(r.seconds for r in runs)
    if seconds > 0:
        print(f"\n{frames} frames in {seconds:.1f} s ({frames / seconds:.1f} frames/s)")
    return total
