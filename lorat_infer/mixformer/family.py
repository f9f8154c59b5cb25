"""MixFormerV2 as a model family of the batched engine (`lorat_infer.family.ModelFamily`).

Host side: the authors' OpenCV crop (`crops_on_host`), map-back and clipping, and the online-template rule
(see `pipeline`). Device side: `forward_cached` over the search crops against each track's cached template
keys and values. State is `MixFormerState`; its record holds the three uint8 template crops (initial,
online, candidate when there is one), the exact box and the rule's counters -- not the cache, which is
rebuilt from the two template crops on the replica that resumes the track (same bits: caches are always
computed one track at a time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..family import FrameBatch, HostCrops, ModelFamily, Record, StepArrays, check_record, register_family
from .config import TrackerParams, default_params
from .crop import IMAGENET_MEAN, IMAGENET_STD
from .model import MixFormerV2, TemplateCache
from .pipeline import (
    MixFormerState,
    StepOutput,
    ensure_caches,
    frame_boxes,
    initial_states,
    online_update,
    search_crops,
)


class MixFormerFamily(ModelFamily):
    """MixFormerV2: cached template keys/values, search + prediction tokens per frame, no window."""

    name = "mixformerv2"
    layout_version = 1
    crops_on_host = True

    def __init__(self, model: nn.Module | None = None, params: TrackerParams | None = None) -> None:
        self.model = model
        self.config = getattr(model, "config", None)
        self.params = params or (default_params(self.config) if self.config is not None else TrackerParams())
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def bind(self, device: torch.device, dtype: torch.dtype) -> None:
        """The heads stay float32 whatever the backbone's dtype (the engine's model is its own copy)."""
        self.device, self.dtype = device, dtype
        self.model.box_head.float()
        self.model.score_head.float()
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        self._mean, self._std = mean, std

    def initialize(self, ctx: Any, batch: FrameBatch, boxes_xyxy: np.ndarray) -> list[MixFormerState]:
        boxes = np.asarray(boxes_xyxy, dtype=np.float64)
        xywh = [(b[0], b[1], b[2] - b[0], b[3] - b[1]) for b in boxes.tolist()]
        return initial_states(self.model, batch.frames, xywh, [self.params] * len(batch), self.device, self.dtype)

    def host_crops(self, states: Sequence[MixFormerState], batch: FrameBatch) -> HostCrops:
        crops, factors = search_crops(states, batch.frames, self.config.search_size)
        return HostCrops(crops=crops, aux=factors)

    def device_inputs(self, ctx: Any, states: Sequence[MixFormerState]
                      ) -> tuple[list[MixFormerState], tuple[torch.Tensor, ...]]:
        states = ensure_caches(self.model, states, self.device, self.dtype)
        kv = torch.cat([s.cache.kv for s in states], dim=2)  # (depth, 2, N, heads, T, head_dim)
        return states, (kv.movedim(2, 0),)  # first dimension N, as the engine's runner pads it

    def device_step(self, crops: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """(N, S, S, 3) uint8 crops + (N, depth, 2, heads, T, hd) caches -> (N, 5): normalised cx, cy, w, h
        in the search crop and the score logit (mapped back on the host by `host_frame_results`)."""
        (kv,) = inputs
        x = ((crops.permute(0, 3, 1, 2).float() / 255.0 - self._mean) / self._std).to(self.dtype)
        out = self.model.forward_cached(TemplateCache(kv.movedim(0, 2)), x)
        return torch.cat([out["pred_boxes"].float(), out["pred_scores"].float()[:, None]], dim=1)

    def host_frame_results(self, out: np.ndarray, states: Sequence[MixFormerState], batch: FrameBatch,
                           host: HostCrops) -> StepArrays:
        raw = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
        boxes = frame_boxes(states, batch.frames, raw[:, :4], raw[:, 4], host.aux, self.config.search_size)
        xyxy = np.array([[x, y, x + w, y + h] for (x, y, w, h), _ in boxes], dtype=np.float64).reshape(-1, 4)
        valid = np.all(np.isfinite(xyxy), axis=1)
        if not valid.all():  # a non-finite prediction keeps the previous box (and skips the template rule)
            xyxy = np.where(valid[:, None], xyxy, np.stack([s.box_xyxy for s in states]))
            boxes = [b if ok else (s.box_xywh, 0.0) for b, ok, s in zip(boxes, valid, states)]
        scores = np.array([score for _, score in boxes], dtype=np.float64)
        return StepArrays(boxes_xyxy=xyxy, scores=scores, updated=valid, extra=boxes)

    def update(self, ctx: Any, states: Sequence[MixFormerState], batch: FrameBatch,
               result: StepArrays) -> list[MixFormerState]:
        pairs = online_update(self.model, states, batch.frames, result.extra, self.device, self.dtype)
        return [s for s, _ in pairs]

    # ------------------------------------------------------------------------------------------ records

    def state_to_record(self, state: MixFormerState) -> Record:
        arrays = {
            "template": np.ascontiguousarray(state.template, dtype=np.uint8),
            "online_template": np.ascontiguousarray(state.online_template, dtype=np.uint8),
            "box_xywh": np.asarray(state.box_xywh, dtype=np.float64).reshape(4),
        }
        if state.candidate is not None:
            arrays["candidate"] = np.ascontiguousarray(state.candidate, dtype=np.uint8)
        meta = {
            "family": self.name,
            "layout": self.layout_version,
            "frame_index": int(state.frame_index),
            "online_updates": int(state.online_updates),
            "max_score": float(state.max_score),
            "params": dataclasses.asdict(state.params),
        }
        return arrays, meta

    def state_from_record(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> MixFormerState:
        crop = (None, None, 3)
        shapes = {"template": crop, "online_template": crop, "box_xywh": (4,)}
        if "candidate" in arrays:
            shapes["candidate"] = crop
        check_record(arrays, meta, self, shapes)
        if arrays["template"].shape != arrays["online_template"].shape or arrays["template"].dtype != np.uint8:
            raise ValueError("state record: the template crops must be uint8 arrays of one shape")
        try:
            params = TrackerParams(**meta["params"])
            max_score, frame_index = float(meta["max_score"]), int(meta["frame_index"])
            updates = int(meta.get("online_updates", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"state record: bad MixFormerV2 metadata: {exc}") from exc
        candidate = arrays.get("candidate")
        return MixFormerState(
            box_xywh=tuple(float(v) for v in arrays["box_xywh"]),
            template=np.array(arrays["template"], dtype=np.uint8),
            online_template=np.array(arrays["online_template"], dtype=np.uint8),
            candidate=None if candidate is None else np.array(candidate, dtype=np.uint8),
            max_score=max_score, params=params, frame_index=frame_index, online_updates=updates, cache=None,
        )


def register() -> None:
    register_family(MixFormerV2, lambda model: MixFormerFamily(model), MixFormerFamily.name, MixFormerState,
                    lambda meta: MixFormerFamily())


__all__ = ["MixFormerFamily", "MixFormerState", "StepOutput", "register"]
