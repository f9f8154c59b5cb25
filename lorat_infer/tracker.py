"""pytracking-style single-object tracker: `initialize(frame, box)` then `track(frame)`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .engine import TrackingEngine, TrackState


class Tracker:
    """Follows one object; a thin view of `TrackingEngine` with a batch of one, for either family.

    Keyword parameters override the family's tracker parameters (its authors' defaults otherwise), e.g.
    `Tracker(mixformer, update_interval=25, search_factor=4.55)` for MixFormerV2's TrackingNet settings, or
    `Tracker(lorat, search_factor=4.5)`; a name the family does not have is refused.
    """

    def __init__(self, model: nn.Module, device: str | torch.device | None = None,
                 precision: str = "auto", **params: Any) -> None:
        self.engine = TrackingEngine(model, device=device, precision=precision, params=params)
        self.state: TrackState | Any | None = None

    def initialize(self, frame: np.ndarray, box_xywh: Sequence[float]) -> None:
        """Embed the template from `frame` (HxWx3 uint8 RGB) around `box_xywh` (pixels)."""
        (self.state,) = self.engine.initialize([frame], [box_xywh])

    def track(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """Advance by one frame; returns the (x, y, w, h) box in pixels and the confidence."""
        if self.state is None:
            raise RuntimeError("call initialize(frame, box) before track(frame)")
        ((self.state, result),) = self.engine.step([self.state], [frame])
        return result.box_xywh, result.score
