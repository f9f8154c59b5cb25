"""Model families: what a tracker network gives the batched engine, so the engine has no per-model branches.

A family splits one tracking step into the parts the engine schedules (see docs in ENGINE.md):

1. `initialize` - the template step for new tracks (batched), returning the family's per-track state;
2. `search_geometry` - the search-crop geometry on the host: nominal transforms, crop size, padding colours;
3. `device_inputs` + `device_step` - the per-frame work on the device. `device_step` is a pure function of
   tensors (crops + per-track inputs -> (N, 5) crop-pixel xyxy boxes and scores, i.e. the selection), so the
   engine can compile it and capture it in CUDA graphs per batch bucket;
4. `update` - the state update after the engine mapped boxes back to the frame (MixFormerV2: online
   template candidates and template-cache refreshes; it may crop the frames again through `ctx.crop`).

State is a frozen dataclass of plain data per family. `state_to_record` / `state_from_record` turn it into
named numpy arrays plus JSON-able metadata (family name and layout version included) and back, so state
can be stored and resumed anywhere without pickle. Tracker parameters (pytracking's TrackerParams) are
kept apart from the architecture: each family has a params dataclass with the authors' defaults.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from .crop import (
    CropTransform,
    clip_boxes,
    damp_size,
    enforce_min_size,
    siamfc_transform,
    template_foreground_mask,
    xyxy_to_xywh,
)
from .slots import Slot, SlotPool

Record = tuple[dict[str, np.ndarray], dict[str, Any]]


@dataclass(frozen=True)
class FrameBatch:
    """Validated frames of one call: (H, W, 3) uint8 arrays (host) and their sizes as (N, 2) float (W, H)."""

    frames: list[np.ndarray]
    sizes_wh: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class SearchGeometry:
    """Where each track's search crop comes from (host side, float64)."""

    nominal: CropTransform
    size: int  # square crop side in pixels, the same for the whole batch
    pad_colors: np.ndarray  # (N, 3) float32 0..255


@dataclass(frozen=True)
class StepArrays:
    """One step's outcome for N tracks, as arrays (frame pixels)."""

    boxes_xyxy: np.ndarray  # (N, 4) float64; the previous box where `updated` is False
    scores: np.ndarray  # (N,) float64
    updated: np.ndarray  # (N,) bool: False when the prediction was unusable and the previous box was kept
    # Family data from `host_frame_results` for its own `update` (MixFormerV2: the exact (x, y, w, h) boxes
    # its next crop starts from, which an xyxy round trip would change in the last bit).
    extra: Any = None


@dataclass(frozen=True)
class HostCrops:
    """Search crops a `crops_on_host` family made itself (MixFormerV2: the authors' OpenCV crop and resize,
    whose fixed-point rounding the device resampler does not reproduce)."""

    crops: np.ndarray  # (N, size, size, 3) uint8
    aux: Any  # the family's per-track data for `host_frame_results` (e.g. resize factors)


class EngineContext(Protocol):
    """What the engine offers a family: its device, compute dtype, model and device crops."""

    model: nn.Module
    device: torch.device
    dtype: torch.dtype

    def crop(self, batch: FrameBatch, nominal: CropTransform, size: int, pad_colors: np.ndarray,
             index: Sequence[int] | None = None) -> tuple[torch.Tensor, CropTransform]:
        """Normalised (N, 3, size, size) crops in the compute dtype on the device + realised transforms.

        `index` picks which frames of the batch to crop (default: all, in order)."""
        ...

    def mean_colors(self, batch: FrameBatch) -> np.ndarray:
        """(N, 3) float32 per-channel frame means (0..255): the padding colour of later crops."""
        ...


class ModelFamily:
    """Base class of a family; subclasses implement every method below (see the module docstring)."""

    name: ClassVar[str]
    layout_version: ClassVar[int]
    # True: the family crops on the host (`host_crops`), `device_step` receives the (N, S, S, 3) uint8 crops
    # on the device, and `host_frame_results` maps its output back (instead of `search_geometry` + the
    # engine's device crop and map-back).
    crops_on_host: ClassVar[bool] = False
    params: Any = None

    def bind(self, device: torch.device, dtype: torch.dtype) -> None:
        """Called once by the engine: move constants to the device, allocate slot pools."""

    def set_params(self, **overrides: Any) -> None:
        """Override tracker parameters (the family's `params` dataclass) by name; unknown names are refused."""
        known = {f.name for f in dataclasses.fields(self.params)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"{self.name} has no tracker parameter {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        self.params = dataclasses.replace(self.params, **overrides)

    def host_crops(self, states: Sequence[Any], batch: FrameBatch) -> HostCrops:
        raise NotImplementedError

    def refine_results(self, states: Sequence[Any], batch: FrameBatch, result: StepArrays) -> StepArrays:
        """Host-side smoothing of a step's frame boxes before `update` (none by default); what it returns is
        both what callers see and what the next step starts from."""
        return result

    def host_frame_results(self, out: np.ndarray, states: Sequence[Any], batch: FrameBatch,
                           host: HostCrops) -> StepArrays:
        raise NotImplementedError

    def initialize(self, ctx: EngineContext, batch: FrameBatch, boxes_xyxy: np.ndarray) -> list[Any]:
        raise NotImplementedError

    def search_geometry(self, states: Sequence[Any]) -> SearchGeometry:
        raise NotImplementedError

    def device_inputs(self, ctx: EngineContext, states: Sequence[Any]) -> tuple[list[Any], tuple[torch.Tensor, ...]]:
        """(states, tensors): states possibly re-homed on the device (slot pool), and the per-track device
        tensors `device_step` takes after the crops (first dimension N)."""
        raise NotImplementedError

    def device_step(self, crops: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """(N, 5) float32: crop-pixel xyxy of the chosen box and its score. Pure tensor code."""
        raise NotImplementedError

    def update(self, ctx: EngineContext, states: Sequence[Any], batch: FrameBatch, result: StepArrays) -> list[Any]:
        raise NotImplementedError

    def state_to_record(self, state: Any) -> Record:
        raise NotImplementedError

    def state_from_record(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Any:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------- registry

_BY_MODEL: list[tuple[type, Callable[[nn.Module], ModelFamily]]] = []
_BY_NAME: dict[str, Callable[[dict[str, Any]], ModelFamily]] = {}
_BY_STATE: dict[type, Callable[[], ModelFamily]] = {}


def register_family(model_type: type, factory: Callable[[nn.Module], ModelFamily], name: str,
                    state_type: type, record_factory: Callable[[dict[str, Any]], ModelFamily]) -> None:
    """Make `family_for(model)` work for instances of `model_type`, and records of `name` loadable.

    `record_factory(meta)` builds a family able to read a record (no model needed)."""
    _BY_MODEL.append((model_type, factory))
    _BY_NAME[name] = record_factory
    _BY_STATE[state_type] = lambda: record_factory({})


def family_for(model: nn.Module) -> ModelFamily:
    """The family that drives `model` (the most recently registered matching type wins)."""
    for model_type, factory in reversed(_BY_MODEL):
        if isinstance(model, model_type):
            return factory(model)
    raise TypeError(f"no tracking family is registered for {type(model).__name__}")


def state_to_record(state: Any) -> Record:
    """Any family's state -> (named arrays, JSON-able meta with "family" and "layout")."""
    factory = _BY_STATE.get(type(state))
    if factory is None:
        raise TypeError(f"no tracking family is registered for state type {type(state).__name__}")
    return factory().state_to_record(state)


def state_from_record(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Any:
    """Inverse of `state_to_record`; raises ValueError on an unknown family, layout or malformed record."""
    name = meta.get("family")
    if name not in _BY_NAME:
        raise ValueError(f"unknown tracking family {name!r} in state record")
    return _BY_NAME[name](meta).state_from_record(arrays, meta)


def check_record(arrays: dict[str, np.ndarray], meta: dict[str, Any], family: ModelFamily,
                 shapes: dict[str, tuple[int | None, ...]]) -> None:
    """Validate a record's family, layout, array names and shapes (None = any size) with clear errors."""
    if meta.get("family") != family.name:
        raise ValueError(f"state record is for family {meta.get('family')!r}, not {family.name!r}")
    if meta.get("layout") != family.layout_version:
        raise ValueError(f"state record layout {meta.get('layout')!r} is not {family.name}'s "
                         f"{family.layout_version}")
    for key, shape in shapes.items():
        value = arrays.get(key)
        if not isinstance(value, np.ndarray) or value.ndim != len(shape) or any(
                want is not None and got != want for got, want in zip(value.shape, shape)):
            got = None if not isinstance(value, np.ndarray) else tuple(value.shape)
            raise ValueError(f"state record array {key!r} has shape {got}, expected {shape}")
    json.dumps(meta)  # the meta must stay JSON-able


# ---------------------------------------------------------------------------------------------- LoRAT

@dataclass(frozen=True)
class LoRATParams:
    """Tracker parameters of LoRAT (the authors' defaults come from the variant's config)."""

    template_factor: float
    search_factor: float
    window_weight: float
    min_box_size: float
    size_lr: float

    @classmethod
    def from_config(cls, config: Any, **overrides: float) -> LoRATParams:
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)}
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class TrackState:
    """Everything needed to advance one LoRAT track by a frame.

    `template_tokens` are the embedded template (patch + position + token type), the only part of the
    template computation that can be cached: the blocks attend jointly, so features change every frame.
    Once a track has run on an engine the tokens live in that engine's device slot pool (compute dtype) and
    `slot` says where; a state built from storage has CPU tokens and no slot, and moves to the device once.
    """

    template_tokens: torch.Tensor  # (Nz, D)
    box_xyxy: np.ndarray  # (4,) float64, frame pixels
    pad_color: np.ndarray  # (3,) float32, 0..255, mean colour of the first frame
    frame_index: int = 0
    slot: Slot | None = field(default=None, compare=False, repr=False)

    @property
    def box_xywh(self) -> np.ndarray:
        return xyxy_to_xywh(self.box_xyxy)


class LoRATFamily(ModelFamily):
    """LoRAT: cached template tokens, joint ViT blocks per frame, Hann-weighted argmax over the score map."""

    name = "lorat"
    layout_version = 1

    def __init__(self, model: nn.Module | None = None, params: LoRATParams | None = None) -> None:
        self.model = model
        self.config = getattr(model, "config", None)
        self.params = params or (LoRATParams.from_config(self.config) if self.config is not None else None)
        self.window: torch.Tensor | None = None
        self.pool: SlotPool | None = None
        if self.config is not None:
            hx, wx = self.config.search_grid
            window = torch.outer(torch.hann_window(hx, periodic=False), torch.hann_window(wx, periodic=False))
            self.window = window.flatten()

    def bind(self, device: torch.device, dtype: torch.dtype) -> None:
        """Called once by the engine: device-resident constants and the template slot pool."""
        assert self.window is not None and self.config is not None
        self.window = self.window.to(device)
        (hz, wz) = self.config.template_grid
        self.pool = SlotPool((hz * wz, self.config.embed_dim), dtype, device)

    def initialize(self, ctx: EngineContext, batch: FrameBatch, boxes_xyxy: np.ndarray) -> list[TrackState]:
        cfg, params = self.config, self.params
        pad_colors = ctx.mean_colors(batch)
        nominal = siamfc_transform(boxes_xyxy, params.template_factor, cfg.template_size)
        crops, realised = ctx.crop(batch, nominal, cfg.template_size, pad_colors)
        stride = cfg.template_size / cfg.template_grid[0]
        mask = template_foreground_mask(realised.apply(boxes_xyxy), stride, cfg.template_grid)
        tokens = ctx.model.embed_template(crops, mask.to(ctx.device))
        slots = self.pool.put(tokens)
        return [
            TrackState(template_tokens=self.pool.view(slots[i]), box_xyxy=boxes_xyxy[i], pad_color=pad_colors[i],
                       slot=slots[i])
            for i in range(len(batch))
        ]

    def search_geometry(self, states: Sequence[TrackState]) -> SearchGeometry:
        cfg, params = self.config, self.params
        prev = np.stack([s.box_xyxy for s in states])
        nominal = siamfc_transform(enforce_min_size(prev, params.min_box_size), params.search_factor,
                                   cfg.search_size)
        pad = np.stack([s.pad_color for s in states]).astype(np.float32, copy=False)
        return SearchGeometry(nominal=nominal, size=cfg.search_size, pad_colors=pad)

    def device_inputs(self, ctx: EngineContext, states: Sequence[TrackState]
                      ) -> tuple[list[TrackState], tuple[torch.Tensor, ...]]:
        states = list(states)
        homeless = [i for i, s in enumerate(states) if not self.pool.owns(s.slot)]
        if homeless:  # resumed from storage or made by another engine: move to the device once
            tokens = torch.stack([states[i].template_tokens for i in homeless]).to(ctx.device)
            for i, slot in zip(homeless, self.pool.put(tokens)):
                states[i] = dataclasses.replace(states[i], template_tokens=self.pool.view(slot), slot=slot)
        generation = self.pool.generation
        for i, s in enumerate(states):
            if s.slot.generation != generation:  # a view into a storage the pool has since replaced (growth):
                s.slot.generation = generation  # point it at the current storage so the old one can be freed
                states[i] = dataclasses.replace(s, template_tokens=self.pool.view(s.slot))
        slots = [s.slot for s in states]
        return states, (self.pool.gather(slots),)

    def device_step(self, crops: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        (template_tokens,) = inputs
        out = self.model.forward_tokens(template_tokens, crops)
        probs = out["score_map"].float().sigmoid().flatten(1)
        weight = self.params.window_weight
        idx = torch.argmax(probs * (1 - weight) + self.window * weight, dim=1, keepdim=True)
        conf = probs.gather(1, idx)
        boxes = out["boxes"].float().flatten(1, 2)
        chosen = boxes.gather(1, idx[..., None].expand(-1, -1, 4))[:, 0] * self.config.search_size
        return torch.cat([chosen, conf], dim=1)

    def refine_results(self, states: Sequence[TrackState], batch: FrameBatch, result: StepArrays) -> StepArrays:
        rate = self.params.size_lr
        if rate >= 1.0 or not result.updated.any():
            return result
        previous = np.stack([s.box_xyxy for s in states])
        damped = clip_boxes(damp_size(previous, result.boxes_xyxy, rate), batch.sizes_wh)
        boxes = np.where(result.updated[:, None], damped, result.boxes_xyxy)
        return dataclasses.replace(result, boxes_xyxy=boxes)

    def update(self, ctx: EngineContext, states: Sequence[TrackState], batch: FrameBatch,
               result: StepArrays) -> list[TrackState]:
        return [
            dataclasses.replace(s, box_xyxy=result.boxes_xyxy[i], frame_index=s.frame_index + 1)
            for i, s in enumerate(states)
        ]

    def state_to_record(self, state: TrackState) -> Record:
        tokens = state.template_tokens.detach().to("cpu", torch.float32).numpy()
        arrays = {
            "template_tokens": np.ascontiguousarray(tokens),
            "box_xyxy": np.asarray(state.box_xyxy, dtype=np.float64).reshape(4),
            "pad_color": np.asarray(state.pad_color, dtype=np.float32).reshape(3),
        }
        meta = {"family": self.name, "layout": self.layout_version, "frame_index": int(state.frame_index)}
        return arrays, meta

    def state_from_record(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> TrackState:
        check_record(arrays, meta, self, {"template_tokens": (None, None), "box_xyxy": (4,), "pad_color": (3,)})
        return TrackState(
            template_tokens=torch.from_numpy(np.array(arrays["template_tokens"], dtype=np.float32)),
            box_xyxy=np.array(arrays["box_xyxy"], dtype=np.float64),
            pad_color=np.array(arrays["pad_color"], dtype=np.float32),
            frame_index=int(meta.get("frame_index", 0)),
        )


def _register_lorat() -> None:
    from .model import LoRAT

    register_family(LoRAT, lambda model: LoRATFamily(model), LoRATFamily.name, TrackState,
                    lambda meta: LoRATFamily())


_register_lorat()


def _register_mixformer() -> None:
    from .mixformer.family import register

    register()


_register_mixformer()
