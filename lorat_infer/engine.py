"""Batched tracking engine: many independent tracks, one forward pass per step.

Track state is plain data (`TrackState`) so a caller can keep it anywhere (a dict, Redis) and hand any
subset of tracks to `step`. The engine holds only the model and the constant Hann window.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .crop import (
    CropTransform,
    clip_boxes,
    crop_batch,
    enforce_min_size,
    frame_mean_color,
    normalize,
    siamfc_transform,
    template_foreground_mask,
    xywh_to_xyxy,
    xyxy_to_xywh,
)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# An initial box larger than this many frame widths/heights cannot be mostly visible: refuse it.
MAX_BOX_TO_FRAME = 4


@dataclass(frozen=True)
class TrackState:
    """Everything needed to advance one track by a frame.

    `template_tokens` are the embedded template (patch + position + token type), the only part of the
    template computation that can be cached: the blocks attend jointly, so features change every frame.
    """

    template_tokens: torch.Tensor  # (Nz, D)
    box_xyxy: np.ndarray  # (4,) float64, frame pixels
    pad_color: np.ndarray  # (3,) float32, 0..255, mean colour of the first frame
    frame_index: int = 0

    @property
    def box_xywh(self) -> np.ndarray:
        return xyxy_to_xywh(self.box_xyxy)


@dataclass(frozen=True)
class TrackResult:
    box_xyxy: np.ndarray  # (4,) float64 frame pixels: the track's box after this frame
    score: float  # sigmoid confidence at the chosen cell (no window penalty)
    updated: bool  # False when the prediction was unusable and the previous box was kept

    @property
    def box_xywh(self) -> np.ndarray:
        return xyxy_to_xywh(self.box_xyxy)


class InvalidInput(ValueError):
    """A frame or box the engine cannot use; the message says which and why."""


def check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise InvalidInput(f"frame must be an HxWx3 RGB array, got shape {shape}")
    if frame.dtype != np.uint8:
        raise InvalidInput(f"frame must be uint8, got {frame.dtype}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise InvalidInput(f"frame is empty: {frame.shape}")


def check_box(box_xywh: Sequence[float], frame_shape: tuple[int, ...]) -> np.ndarray:
    """Validate an initial (x, y, w, h) box against the frame; returns it as xyxy."""
    box = np.asarray(box_xywh, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise InvalidInput(f"box must be 4 finite numbers (x, y, w, h), got {list(box_xywh)}")
    if box[2] <= 0 or box[3] <= 0:
        raise InvalidInput(f"box width and height must be positive, got w={box[2]}, h={box[3]}")
    h, w = frame_shape[:2]
    if box[2] > MAX_BOX_TO_FRAME * w or box[3] > MAX_BOX_TO_FRAME * h:
        raise InvalidInput(
            f"box {box[2]:g}x{box[3]:g} is more than {MAX_BOX_TO_FRAME}x the {w}x{h} frame: the object must be "
            "mostly visible in the first frame"
        )
    xyxy = xywh_to_xyxy(box)
    ix = min(xyxy[2], w) - max(xyxy[0], 0)
    iy = min(xyxy[3], h) - max(xyxy[1], 0)
    if ix <= 0 or iy <= 0:
        raise InvalidInput(f"box {list(box)} does not overlap the {w}x{h} frame")
    return xyxy


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision option, or None for plain fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class TrackingEngine:
    """Advances many LoRAT tracks with one batched forward per `step`."""

    def __init__(self, model: nn.Module, device: str | torch.device | None = None,
                 precision: str = "auto") -> None:
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.config = model.config
        self.autocast_dtype = resolve_precision(precision, self.device)
        hx, wx = self.config.search_grid
        window = torch.outer(torch.hann_window(hx, periodic=False), torch.hann_window(wx, periodic=False))
        self.window = window.flatten().to(self.device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _frames_to_tensors(self, frames: Sequence[np.ndarray]) -> list[torch.Tensor]:
        for frame in frames:
            check_frame(frame)
        return [torch.from_numpy(np.ascontiguousarray(f)) for f in frames]

    @torch.inference_mode()
    def initialize(self, frames: Sequence[np.ndarray], boxes_xywh: Sequence[Sequence[float]]) -> list[TrackState]:
        """Crop and embed templates for new tracks (batched); validates every frame and box first."""
        tensors = self._frames_to_tensors(frames)
        boxes = np.stack([check_box(b, f.shape) for b, f in zip(boxes_xywh, frames)])
        cfg = self.config
        pad_colors = torch.stack([frame_mean_color(t) for t in tensors])
        nominal = siamfc_transform(boxes, cfg.template_factor, cfg.template_size)
        crops, realised = crop_batch(tensors, nominal, cfg.template_size, pad_colors)
        stride = cfg.template_size / cfg.template_grid[0]
        mask = template_foreground_mask(realised.apply(boxes), stride, cfg.template_grid)
        with self._autocast():
            tokens = self.model.embed_template(normalize(crops.to(self.device)), mask.to(self.device))
        tokens = tokens.float()
        return [
            TrackState(template_tokens=tokens[i], box_xyxy=boxes[i], pad_color=pad_colors[i].numpy())
            for i in range(len(frames))
        ]

    @torch.inference_mode()
    def step(self, states: Sequence[TrackState], frames: Sequence[np.ndarray]
             ) -> list[tuple[TrackState, TrackResult]]:
        """Track one frame for each of N tracks in one forward pass; returns new states and results."""
        if len(states) != len(frames):
            raise ValueError(f"{len(states)} states but {len(frames)} frames")
        if not states:
            return []
        tensors = self._frames_to_tensors(frames)
        cfg = self.config
        prev = np.stack([s.box_xyxy for s in states])
        nominal = siamfc_transform(enforce_min_size(prev, cfg.min_box_size), cfg.search_factor, cfg.search_size)
        pad_colors = torch.from_numpy(np.stack([s.pad_color for s in states]).astype(np.float32))
        crops, realised = crop_batch(tensors, nominal, cfg.search_size, pad_colors)
        # states restored from storage hold their tokens on the CPU, next to others on the model's device
        template_tokens = torch.stack([s.template_tokens.to(self.device) for s in states])
        with self._autocast():
            out = self.model.forward_tokens(template_tokens, normalize(crops.to(self.device)))
        boxes, scores = self.select(out["score_map"], out["boxes"])
        sizes = np.array([[f.shape[1], f.shape[0]] for f in frames], dtype=np.float64)
        return self._update(states, boxes, scores, realised, sizes)

    def select(self, score_map: torch.Tensor, boxes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Hann-weighted argmax -> (N, 4) crop-pixel xyxy boxes and (N,) un-penalised confidences."""
        n = score_map.shape[0]
        probs = score_map.float().sigmoid().flatten(1)
        weight = self.config.window_weight
        idx = torch.argmax(probs * (1 - weight) + self.window * weight, dim=1)
        rows = torch.arange(n, device=idx.device)
        conf = probs[rows, idx]
        chosen = boxes.float().flatten(1, 2)[rows, idx] * self.config.search_size
        return chosen.cpu().double().numpy(), conf.cpu().double().numpy()

    def _update(self, states: Sequence[TrackState], crop_boxes: np.ndarray, scores: np.ndarray,
                realised: CropTransform, sizes_wh: np.ndarray) -> list[tuple[TrackState, TrackResult]]:
        frame_boxes = clip_boxes(realised.invert(crop_boxes), sizes_wh)
        valid = (
            np.all(np.isfinite(frame_boxes), axis=1)
            & (frame_boxes[:, 2] > frame_boxes[:, 0])
            & (frame_boxes[:, 3] > frame_boxes[:, 1])
        )
        results = []
        for i, state in enumerate(states):
            box = frame_boxes[i] if valid[i] else state.box_xyxy
            new_state = dataclasses.replace(state, box_xyxy=box, frame_index=state.frame_index + 1)
            results.append((new_state, TrackResult(box_xyxy=box, score=float(scores[i]), updated=bool(valid[i]))))
        return results
