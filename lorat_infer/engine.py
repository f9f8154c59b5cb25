"""Batched tracking engine: many independent tracks, one forward pass per step.

Track state is plain data (one frozen dataclass per model family, see `family.py`) so a caller can keep it
anywhere (a dict, Redis via `state_to_record`) and hand any subset of tracks to `step`. The engine holds
the model (weights cast once to the compute dtype), the family that drives it, and the device-side
machinery of the frame path: batched crops from uint8 (`native_crop` on a CPU, `device_crop` on CUDA),
staging buffers, data-parallel chunks on a CPU, optional `torch.compile` and per-bucket CUDA graphs
(`runner`).
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import native_crop
from .crop import CropTransform, clip_boxes, xywh_to_xyxy, xyxy_to_xywh
from .device_crop import gather_grid, gather_on_device, mean_colors, param_width, plan_crops, resample
from .family import FrameBatch, HostCrops, ModelFamily, SearchGeometry, StepArrays, TrackState, family_for
from .precision import PRECISIONS, resolve_precision
from .runner import StepRunner, single_threaded_pool

log = logging.getLogger(__name__)

# An initial box larger than this many frame widths/heights cannot be mostly visible: refuse it.
MAX_BOX_TO_FRAME = 4
# On a CPU, a step of at least 2 x this many tracks runs as data-parallel chunks (see `TrackingEngine`).
MIN_CHUNK = 4

__all__ = ["MAX_BOX_TO_FRAME", "PRECISIONS", "InvalidInput", "StepArrays", "TrackResult", "TrackState",
           "TrackingEngine", "check_box", "check_frame", "resolve_precision"]


@dataclass(frozen=True)
class TrackResult:
    box_xyxy: np.ndarray  # (4,) float64 frame pixels: the track's box after this frame
    score: float  # confidence at the chosen cell (no window penalty)
    updated: bool  # False when the prediction was unusable and the previous box was kept

    @property
    def box_xywh(self) -> np.ndarray:
        return xyxy_to_xywh(self.box_xyxy)


class InvalidInput(ValueError):
    """A frame or box the engine cannot use; the message says which and why."""


def check_frame(frame: np.ndarray | torch.Tensor) -> None:
    """An HxWx3 uint8 RGB numpy array, or (decoded on the GPU) a torch uint8 tensor of that shape."""
    if not isinstance(frame, np.ndarray | torch.Tensor) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise InvalidInput(f"frame must be an HxWx3 RGB array, got shape {None if shape is None else tuple(shape)}")
    if frame.dtype not in (np.uint8, torch.uint8):
        raise InvalidInput(f"frame must be uint8, got {frame.dtype}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise InvalidInput(f"frame is empty: {tuple(frame.shape)}")


def _numbers(values: object) -> str:
    """Plain '[1, 2.5, nan]' text for a box as the caller gave it (no numpy reprs in messages)."""
    try:
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return f"a {type(values).__name__}"
    return "[" + ", ".join(f"{v:g}" for v in flat.tolist()) + "]"


def check_box(box_xywh: Sequence[float], frame_shape: tuple[int, ...]) -> np.ndarray:
    """Validate an initial (x, y, w, h) box against the frame; returns it as xyxy."""
    try:
        box = np.asarray(box_xywh, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InvalidInput(f"box must be 4 finite numbers (x, y, w, h), got {_numbers(box_xywh)}") from None
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise InvalidInput(f"box must be 4 finite numbers (x, y, w, h), got {_numbers(box)}")
    if box[2] <= 0 or box[3] <= 0:
        raise InvalidInput(f"box width and height must be positive, got w={box[2]:g}, h={box[3]:g}")
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
        raise InvalidInput(f"box {_numbers(box)} does not overlap the {w}x{h} frame")
    return xyxy


def _cast_weights(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The model on `device` with its parameters in `dtype` (cast once, not per call by autocast).

    fp32 keeps the caller's module (moved, as before); another dtype works on a copy so the caller's model
    is untouched. Buffers stay fp32 (e.g. the head's cell centres, whose rounding would move boxes)."""
    model = model.eval()
    if dtype == torch.float32:
        return model.to(device)
    cast = copy.deepcopy(model).to(device)
    for p in cast.parameters():
        p.data = p.data.to(dtype)
    return cast


def frame_results(out: np.ndarray, realised: CropTransform, sizes_wh: np.ndarray, states: Sequence
                  ) -> StepArrays:
    """(N, 5) crop-pixel boxes + scores -> frame boxes (clipped); an unusable box keeps the state's box."""
    out = np.asarray(out, dtype=np.float64)
    frame_boxes = clip_boxes(realised.invert(out[:, :4]), sizes_wh)
    valid = (
        np.all(np.isfinite(frame_boxes), axis=1)
        & (frame_boxes[:, 2] > frame_boxes[:, 0])
        & (frame_boxes[:, 3] > frame_boxes[:, 1])
    )
    if not valid.all():
        previous = np.stack([s.box_xyxy for s in states])
        frame_boxes = np.where(valid[:, None], frame_boxes, previous)
    return StepArrays(boxes_xyxy=frame_boxes, scores=out[:, 4], updated=valid)


@dataclass
class Pending:
    """A launched step whose device work may still be running (see `TrackingEngine.launch`)."""

    states: list
    batch: FrameBatch
    realised: CropTransform | None
    readback: torch.Tensor  # (N, 5) host tensor, valid once `done` has fired
    done: torch.cuda.Event | None
    host: HostCrops | None = None  # crops_on_host families: their crops and map-back data


class TrackingEngine:
    """Advances many tracks of one model with one batched forward per `step`.

    precision: "auto" (fp16 on CUDA, bf16 on CPUs with native bf16 matmuls, else fp32), "fp32", "bf16",
    "fp16". compile / cuda_graphs: None = on where they help (CUDA), False = off, True = on.
    cpu_workers (CPU only): None (default) = as many as torch's intra-op threads; k > 1 = a step of
    N >= 2 * MIN_CHUNK tracks is split into k chunks, each cropped and run through the model on its own
    thread with one intra-op thread (no per-op OpenMP wake-ups and barriers: the small ops of a tracker's
    forward scale poorly over threads, chunks scale with cores); 1 = one batched forward on torch's
    intra-op threads. On the 2-core machine chunks ran 1.4-1.6x one forward, also next to 4 busy
    processes (bench/hotpath.py)."""

    def __init__(self, model: nn.Module, device: str | torch.device | None = None, precision: str = "auto",
                 compile: bool | None = None, cuda_graphs: bool | None = None,
                 family: ModelFamily | None = None, params: dict | None = None,
                 cpu_workers: int | None = None) -> None:
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.precision, self.dtype, why = resolve_precision(precision, self.device)
        self.model = _cast_weights(model, self.device, self.dtype)
        self.config = getattr(self.model, "config", None)
        self.family = family or family_for(self.model)
        if params:  # tracker parameters, e.g. MixFormerV2's update_interval=25, search_factor=4.55
            self.family.set_params(**params)
        self.family.bind(self.device, self.dtype)
        on_cuda = self.device.type == "cuda"
        # Host threads gathering crop pixels (numpy releases the GIL); as many as torch's intra-op threads.
        self._gather_workers = max(1, min(torch.get_num_threads(), os.cpu_count() or 1, 8))
        self._gather_pool = (ThreadPoolExecutor(self._gather_workers, thread_name_prefix="lorat-gather")
                             if self._gather_workers > 1 else None)
        self.runner = StepRunner(
            self.family.device_step if self.family.crops_on_host else self._device_step, self.device,
            compile=on_cuda if compile is None else compile,
            cuda_graphs=on_cuda if cuda_graphs is None else (cuda_graphs and on_cuda))
        chunked = self.device.type == "cpu" and not self.family.crops_on_host and not self.runner.compiled
        workers = self._gather_workers if cpu_workers is None else max(1, int(cpu_workers))
        self.cpu_workers = workers if chunked else 1
        self._chunk_pool: ThreadPoolExecutor | None = None  # started by the first batch that is split
        if not on_cuda and not self.family.crops_on_host:
            native_crop.warm_up()  # compile (or load) the CPU crop kernel now, not in the first frame's step
        log.info("tracking engine: %s family on %s, weights %s (%s), compile=%s, cuda_graphs=%s, cpu_workers=%d",
                 self.family.name, self.device, self.precision, why, self.runner.compiled, self.runner.graphs,
                 self.cpu_workers)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """Compatibility: the compute dtype when it is not fp32 (weights are cast, autocast is not used)."""
        return None if self.dtype == torch.float32 else self.dtype

    @property
    def max_in_flight(self) -> int:
        """Steps that may usefully run at once (host prep of one overlapping the device work of another)."""
        return 2 if self.device.type == "cuda" else 1

    # ---------------------------------------------------------------------------------------- inputs

    @property
    def accepts_device_frames(self) -> bool:
        """True when frames may be torch uint8 tensors on the engine's CUDA device (GPU-decoded): the
        family's crops come from the engine's device gather."""
        return self.device.type == "cuda" and not getattr(self.family, "crops_on_host", False)

    def _batch(self, frames: Sequence[np.ndarray | torch.Tensor]) -> FrameBatch:
        frames = list(frames)
        for i, frame in enumerate(frames):
            check_frame(frame)
            if isinstance(frame, torch.Tensor):
                if frame.device.type == "cpu":
                    frames[i] = frame.numpy()
                elif not self.accepts_device_frames:
                    frames[i] = frame.cpu().numpy()  # a family that crops on the host
                elif frame.device != self.device:
                    frames[i] = frame.to(self.device)
        sizes = np.array([[f.shape[1], f.shape[0]] for f in frames], dtype=np.float64).reshape(-1, 2)
        return FrameBatch(frames, sizes)

    def mean_colors(self, batch: FrameBatch) -> np.ndarray:
        host = [i for i, f in enumerate(batch.frames) if isinstance(f, np.ndarray)]
        out = np.empty((len(batch), 3), dtype=np.float32)
        if host:
            out[host] = mean_colors([batch.frames[i] for i in host])
        for i, f in enumerate(batch.frames):
            if not isinstance(f, np.ndarray):  # exact integer sums on the device, one small readback
                sums = f.reshape(-1, 3).sum(dim=0, dtype=torch.int64).cpu().numpy()
                out[i] = sums / (f.shape[0] * f.shape[1])
        return out

    def crop(self, batch: FrameBatch, nominal: CropTransform, size: int, pad_colors: np.ndarray,
             index: Sequence[int] | None = None) -> tuple[torch.Tensor, CropTransform]:
        """Normalised (N, 3, size, size) crops in the compute dtype on the device, and realised transforms."""
        frames = batch.frames if index is None else [batch.frames[i] for i in index]
        sizes = batch.sizes_wh if index is None else batch.sizes_wh[list(index)]
        pixels, params, realised = self._stage(frames, sizes, nominal, size, pad_colors, len(frames))
        return self._crops(pixels, params), realised

    def _crops(self, pixels: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Normalised crops in the compute dtype from what `_stage` produced: on CUDA the sampled pixels and
        their resample params; on a CPU the crops themselves, already normalised (params has 0 columns)."""
        if params.shape[1] == 0:
            return pixels.to(self.dtype)
        return resample(pixels, params, pixels.shape[-1] // 2, self.dtype)

    def _stage(self, frames: list[np.ndarray], sizes: np.ndarray, nominal: CropTransform, size: int,
               pad_colors: np.ndarray, rows: int, gather_threads: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, CropTransform]:
        """Host part of a crop. On a CPU: the normalised float32 crops themselves (`native_crop`, one pass
        per track on the gather threads) and a 0-column params tensor. On CUDA: the sampled pixels gathered
        into pinned staging and copied to the device without blocking, with their resample params. `rows`
        >= N pads the batch (to a compile/CUDA-graph bucket) with zero rows."""
        n = len(frames)
        plan = plan_crops(sizes, nominal, size, pad_colors)
        pool = self._gather_pool if gather_threads else None
        if not self.runner.cuda:
            crops = self.runner.staging((rows, 3, size, size), torch.float32)
            native_crop.crop_tracks(frames, plan, crops.numpy(), pool, self._gather_workers)
            crops[n:] = 0
            return crops, crops.new_empty((rows, 0)), plan.realised
        grid = self.runner.staging((rows, 3, 2 * size, 2 * size), torch.uint8)
        params = self.runner.staging((rows, param_width(size)), torch.float32)
        on_device = [i for i, f in enumerate(frames) if not isinstance(f, np.ndarray)]
        gather_grid(frames, plan, grid.numpy(), pool, self._gather_workers, skip=set(on_device))
        params_np = params.numpy()
        params_np[:n] = plan.params
        if rows > n:
            grid.numpy()[n:] = 0
            params_np[n:] = 0
        grid_dev = self.runner.to_device(grid)
        for i in on_device:  # GPU-decoded frames: the same gather, on the device
            grid_dev[i] = gather_on_device(frames[i], plan.rows[i], plan.cols[i])
        return grid_dev, self.runner.to_device(params), plan.realised

    # ---------------------------------------------------------------------------------------- steps

    @torch.inference_mode()
    def initialize(self, frames: Sequence[np.ndarray], boxes_xywh: Sequence[Sequence[float]]) -> list:
        """Crop and embed templates for new tracks (batched); validates every frame and box first."""
        if len(frames) != len(boxes_xywh):
            raise ValueError(f"{len(frames)} frames but {len(boxes_xywh)} boxes")
        batch = self._batch(frames)
        if not len(batch):
            return []
        boxes = np.stack([check_box(b, f.shape) for b, f in zip(boxes_xywh, frames)])
        with self.runner.device_lock:
            return self.family.initialize(self, batch, boxes)

    def _device_step(self, pixels: torch.Tensor, params: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """(Resample +) forward + selection: one pure tensor function per batch shape (compiled / graphed)."""
        return self.family.device_step(self._crops(pixels, params), *inputs)

    @torch.inference_mode()
    def launch(self, states: Sequence, frames: Sequence[np.ndarray]) -> Pending:
        """Host prep and the device launch of one step; `finish` waits for it. Two launches may be in flight
        on disjoint tracks (e.g. from two threads)."""
        if len(states) != len(frames):
            raise ValueError(f"{len(states)} states but {len(frames)} frames")
        batch = self._batch(frames)
        n = len(states)
        rows = self.runner.bucket(n)
        if self.family.crops_on_host:
            host = self.family.host_crops(states, batch)
            with self.runner.device_lock:
                states, inputs = self.family.device_inputs(self, states)
                crops = torch.from_numpy(np.ascontiguousarray(host.crops)).to(self.device)
                out = self.runner.run(n, rows, crops, *inputs)
                readback, done = self.runner.read_back(out[:n])
            return Pending(states=states, batch=batch, realised=None, readback=readback, done=done, host=host)
        geometry = self.family.search_geometry(states)
        with self.runner.device_lock:
            states, inputs = self.family.device_inputs(self, states)
            if self.cpu_workers > 1 and n >= 2 * MIN_CHUNK:
                out, realised = self._run_chunks(batch, geometry, inputs)
                return Pending(states=states, batch=batch, realised=realised, readback=out, done=None)
            grid, params, realised = self._stage(batch.frames, batch.sizes_wh, geometry.nominal, geometry.size,
                                                 geometry.pad_colors, rows)
            out = self.runner.run(n, rows, grid, params, *inputs)
            readback, done = self.runner.read_back(out[:n])
        return Pending(states=states, batch=batch, realised=realised, readback=readback, done=done)

    def _run_chunks(self, batch: FrameBatch, geometry: SearchGeometry, inputs: tuple[torch.Tensor, ...]
                    ) -> tuple[torch.Tensor, CropTransform]:
        """CPU: crop + forward + selection of contiguous chunks of the batch on the single-threaded chunk
        workers, at once; -> (N, 5) output and realised transforms, in the batch's order."""
        n = len(batch)
        if self._chunk_pool is None:
            self._chunk_pool = single_threaded_pool(self.cpu_workers, "lorat-chunk")
        bounds = np.linspace(0, n, min(self.cpu_workers, n // MIN_CHUNK) + 1).astype(int)
        nominal = geometry.nominal

        @torch.inference_mode()
        def chunk(lo: int, hi: int) -> tuple[torch.Tensor, CropTransform]:
            part = CropTransform(nominal.scale[lo:hi], nominal.translation[lo:hi])
            grid, params, realised = self._stage(batch.frames[lo:hi], batch.sizes_wh[lo:hi], part, geometry.size,
                                                 geometry.pad_colors[lo:hi], hi - lo, gather_threads=False)
            return self.runner.run(hi - lo, hi - lo, grid, params, *(x[lo:hi] for x in inputs)), realised

        jobs = [self._chunk_pool.submit(chunk, lo, hi) for lo, hi in itertools.pairwise(bounds)]
        parts = [job.result() for job in jobs]
        out = torch.cat([p[0] for p in parts])
        realised = CropTransform(np.concatenate([p[1].scale for p in parts]),
                                 np.concatenate([p[1].translation for p in parts]))
        return out, realised

    @torch.inference_mode()
    def finish(self, pending: Pending) -> tuple[list, StepArrays]:
        """Wait for a launched step; map boxes back to the frames and update the states."""
        if pending.done is not None:
            pending.done.synchronize()
        if pending.host is not None:
            result = self.family.host_frame_results(pending.readback.numpy(), pending.states, pending.batch,
                                                    pending.host)
        else:
            result = frame_results(pending.readback.numpy(), pending.realised, pending.batch.sizes_wh,
                                   pending.states)
        result = self.family.refine_results(pending.states, pending.batch, result)
        with self.runner.device_lock:
            new_states = self.family.update(self, pending.states, pending.batch, result)
        return new_states, result

    def step_arrays(self, states: Sequence, frames: Sequence[np.ndarray]) -> tuple[list, StepArrays]:
        """One frame for each of N tracks -> (new states, arrays of boxes/scores/updated)."""
        if not states:
            if frames:
                raise ValueError(f"0 states but {len(frames)} frames")
            empty = StepArrays(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=bool))
            return [], empty
        return self.finish(self.launch(states, frames))

    def step(self, states: Sequence, frames: Sequence[np.ndarray]) -> list[tuple[object, TrackResult]]:
        """Track one frame for each of N tracks in one forward pass; returns new states and results."""
        if len(states) != len(frames):
            raise ValueError(f"{len(states)} states but {len(frames)} frames")
        new_states, r = self.step_arrays(states, frames)
        boxes, scores, updated = r.boxes_xyxy, r.scores.tolist(), r.updated.tolist()
        return [(s, TrackResult(box_xyxy=boxes[i], score=scores[i], updated=updated[i]))
                for i, s in enumerate(new_states)]
