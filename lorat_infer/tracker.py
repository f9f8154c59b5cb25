"""pytracking-style single-object tracker: `initialize(frame, box)` then `track(frame)`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .engine import TrackingEngine, TrackState


class Tracker:
    """Follows one object; a thin view of `TrackingEngine` with a batch of one."""

    def __init__(self, model: nn.Module, device: str | torch.device | None = None,
                 precision: str = "auto") -> None:
        self.engine = TrackingEngine(model, device=device, precision=precision)
        self.state: TrackState | None = None

    def initialize(self, frame: np.ndarray, box_xywh: Sequence[float]) -> None:
        """Embed the template from `frame` (HxWx3 uint8 RGB) around `box_xywh` (pixels)."""
        (self.state,) = self.engine.initialize([frame], [box_xywh])

    def track(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """Advance by one frame; returns the (x, y, w, h) box in pixels and the confidence."""
        if self.state is None:
            raise RuntimeError("call initialize(frame, box) before track(frame)")
        ((self.state, result),) = self.engine.step([self.state], [frame])
        return result.box_xywh, result.score
