"""The authors' tracking rule (MixFormerOnline in lib/test/tracker/mixformer2_vit_online.py, 1041438),
as pure functions over plain per-track state, batched over tracks.

Per frame and track: crop the search region around the previous box; run the network; scale the
normalised (cx, cy, w, h) by `search_size / resize_factor` as a float32 tensor; map back with the
*unrounded* half crop side (the crop itself used the rounded corner: a deliberate 0.5 px reproduction);
clip with a 10 px margin. No Hann window: the box is always taken. Online template: when the score beats
0.5 and the running maximum, a candidate is cropped at the new box; every `update_interval` frames it
replaces the online template (the template cache is recomputed for both templates), the running maximum
resets to -1 and the candidate to the initial template.

Online size: the authors' YAMLs set ONLINE_SIZES 1 for every benchmark they list; datasets missing from
the YAML fall back to 3, and any size above 1 crashes their forward at the first update (the stacked
online templates no longer match the batch). We implement size 1 only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .config import TrackerParams
from .crop import sample_target, to_input
from .model import MixFormerV2, TemplateCache


@dataclass(frozen=True)
class MixFormerState:
    """One track. Crops are uint8 (Hz, Wz, 3); `cache` is derived from `template` + `online_template`
    and can be dropped and rebuilt (`None` = rebuild before the next frame)."""

    box_xywh: tuple[float, float, float, float]  # the authors' `self.state`, Python floats
    template: np.ndarray
    online_template: np.ndarray
    candidate: np.ndarray | None  # online_max_template; None = the initial template
    max_score: float
    params: TrackerParams
    frame_index: int = 0
    online_updates: int = 0
    cache: TemplateCache | None = None

    @property
    def box_xyxy(self) -> np.ndarray:
        x, y, w, h = self.box_xywh
        return np.array([x, y, x + w, y + h], dtype=np.float64)


@dataclass(frozen=True)
class StepOutput:
    """What one frame gives a track, before any engine-level wrapping."""

    box_xywh: tuple[float, float, float, float]
    score: float  # sigmoid of the score logit
    candidate_taken: bool  # a new online-template candidate was cropped this frame
    template_replaced: bool  # the online template was swapped in this frame


def clip_box(box: Sequence[float], height: int, width: int, margin: float) -> tuple[float, float, float, float]:
    """The authors' clip_box: x1 in [0, W - margin], x2 in [margin, W], w, h >= margin."""
    x1, y1, w, h = box
    x2, y2 = x1 + w, y1 + h
    x1 = min(max(0, x1), width - margin)
    x2 = min(max(margin, x2), width)
    y1 = min(max(0, y1), height - margin)
    y2 = min(max(margin, y2), height)
    return (x1, y1, max(margin, x2 - x1), max(margin, y2 - y1))


def map_box_back(prev_xywh: Sequence[float], pred_cxcywh: Sequence[float], search_size: int,
                 resize_factor: float) -> list[float]:
    """Crop-pixel (cx, cy, w, h) -> frame (x, y, w, h), offset by the previous centre minus the
    unrounded half crop side (`0.5 * search_size / resize_factor`), as the authors do."""
    cx_prev = prev_xywh[0] + 0.5 * prev_xywh[2]
    cy_prev = prev_xywh[1] + 0.5 * prev_xywh[3]
    cx, cy, w, h = pred_cxcywh
    half_side = 0.5 * search_size / resize_factor
    cx_real = cx + (cx_prev - half_side)
    cy_real = cy + (cy_prev - half_side)
    return [cx_real - 0.5 * w, cy_real - 0.5 * h, w, h]


def scale_prediction(pred_box: torch.Tensor, search_size: int, resize_factor: float) -> list[float]:
    """`(pred_boxes.mean(dim=0) * search_size / resize_factor).tolist()` on one row: float32, on the CPU."""
    return (pred_box.detach().float().cpu().view(-1, 4).mean(dim=0) * search_size / resize_factor).tolist()


def compute_caches(model: MixFormerV2, templates: Sequence[np.ndarray], online_templates: Sequence[np.ndarray],
                   device: torch.device, dtype: torch.dtype) -> list[TemplateCache]:
    """Template side of each track (input cast to `dtype`, the model's weights' dtype), one track at a time.

    One at a time on purpose: a track resumed elsewhere recomputes its cache from the stored crops and gets
    the same bits only if the computation does not depend on which other tracks shared the batch. Template
    changes are rare (initialisation and every `update_interval` frames), so this costs little.
    """
    return [model.template_cache(to_input(z, device).to(dtype), to_input(oz, device).to(dtype))
            for z, oz in zip(templates, online_templates)]


def initial_states(model: MixFormerV2, frames: Sequence[np.ndarray], boxes_xywh: Sequence[Sequence[float]],
                   params: Sequence[TrackerParams], device: torch.device, dtype: torch.dtype) -> list[MixFormerState]:
    """Crop each template (factor 2.0) and compute its cache; the online template starts as the template."""
    cfg = model.config
    templates = [sample_target(f, b, p.template_factor, cfg.template_size)[0]
                 for f, b, p in zip(frames, boxes_xywh, params)]
    caches = compute_caches(model, templates, templates, device, dtype)
    return [
        MixFormerState(box_xywh=tuple(float(v) for v in b), template=z, online_template=z, candidate=None,
                       max_score=-1.0, params=p, cache=c)
        for b, z, p, c in zip(boxes_xywh, templates, params, caches)
    ]


def search_crops(states: Sequence[MixFormerState], frames: Sequence[np.ndarray],
                 search_size: int) -> tuple[np.ndarray, list[float]]:
    """Host side of a frame: (N, S, S, 3) uint8 search crops and each crop's resize factor."""
    crops, factors = [], []
    for state, frame in zip(states, frames):
        crop, factor = sample_target(frame, state.box_xywh, state.params.search_factor, search_size)
        crops.append(crop)
        factors.append(factor)
    return np.stack(crops), factors


def ensure_caches(model: MixFormerV2, states: Sequence[MixFormerState], device: torch.device,
                  dtype: torch.dtype) -> list[MixFormerState]:
    """Rebuild missing caches (tracks restored from storage, replaced templates); move caches to `device`."""
    missing = [i for i, s in enumerate(states) if s.cache is None]
    out = list(states)
    if missing:
        built = compute_caches(model, [states[i].template for i in missing],
                               [states[i].online_template for i in missing], device, dtype)
        for i, cache in zip(missing, built):
            out[i] = dataclasses.replace(states[i], cache=cache)
    return [s if s.cache.kv.device == device else dataclasses.replace(s, cache=TemplateCache(s.cache.kv.to(device)))
            for s in out]


def forward_batch(model: MixFormerV2, states: Sequence[MixFormerState], crops: np.ndarray, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Device side of a frame: (N, 4) normalised cx, cy, w, h and (N,) score logits, float32 on the CPU."""
    cache = TemplateCache.stack([s.cache for s in states])
    out = model.forward_cached(cache, to_input(crops, device).to(dtype))
    return out["pred_boxes"].float().cpu(), out["pred_scores"].float().cpu()


def frame_boxes(states: Sequence[MixFormerState], frames: Sequence[np.ndarray], pred_boxes: torch.Tensor,
                logits: torch.Tensor, resize_factors: Sequence[float], search_size: int
                ) -> list[tuple[tuple[float, float, float, float], float]]:
    """Each track's new (x, y, w, h) box (mapped back, clipped) and its score, as the authors compute them."""
    scores = logits.float().view(-1).sigmoid()
    out = []
    for i, (state, frame) in enumerate(zip(states, frames)):
        height, width = frame.shape[:2]
        pred = scale_prediction(pred_boxes[i], search_size, resize_factors[i])
        box = clip_box(map_box_back(state.box_xywh, pred, search_size, resize_factors[i]), height, width,
                       state.params.margin)
        out.append((tuple(float(v) for v in box), scores[i].item()))
    return out


def online_update(model: MixFormerV2, states: Sequence[MixFormerState], frames: Sequence[np.ndarray],
                  boxes_scores: Sequence[tuple[tuple[float, float, float, float], float]], device: torch.device,
                  dtype: torch.dtype) -> list[tuple[MixFormerState, StepOutput]]:
    """Take each new box, apply the online-template rule, recompute the caches of replaced templates."""
    template_size = model.config.template_size
    staged: list[tuple[MixFormerState, StepOutput]] = []
    for state, frame, (box, score) in zip(states, frames, boxes_scores):
        p = state.params
        frame_index = state.frame_index + 1
        max_score = state.max_score * p.max_score_decay
        candidate = state.candidate
        taken = score > p.score_threshold and score > max_score
        if taken:
            candidate = sample_target(frame, box, p.template_factor, template_size)[0]
            max_score = score
        replaced = frame_index % p.update_interval == 0
        online, updates, cache = state.online_template, state.online_updates, state.cache
        if replaced:
            online = state.template if candidate is None else candidate
            updates += 1
            cache = None
            max_score, candidate = -1.0, None
        new_state = dataclasses.replace(state, box_xywh=box, online_template=online, candidate=candidate,
                                        max_score=max_score, frame_index=frame_index, online_updates=updates,
                                        cache=cache)
        staged.append((new_state, StepOutput(box_xywh=box, score=score, candidate_taken=taken,
                                             template_replaced=replaced)))
    new_states = ensure_caches(model, [s for s, _ in staged], device, dtype)
    return [(s, out) for s, (_, out) in zip(new_states, staged)]


def advance(model: MixFormerV2, states: Sequence[MixFormerState], frames: Sequence[np.ndarray],
            pred_boxes: torch.Tensor, logits: torch.Tensor, resize_factors: Sequence[float],
            device: torch.device, dtype: torch.dtype) -> list[tuple[MixFormerState, StepOutput]]:
    """`frame_boxes` then `online_update`: one frame of the authors' tracker after the network ran."""
    boxes = frame_boxes(states, frames, pred_boxes, logits, resize_factors, model.config.search_size)
    return online_update(model, states, frames, boxes, device, dtype)
