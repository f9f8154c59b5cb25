"""Batched crops for a CUDA device: host geometry + sampled-pixel gather, then one bilinear resample on the
device. (On a CPU the engine uses `native_crop`, one compiled pass per track with the same arithmetic.)

The result equals `crop.crop_frame` (rasterised regions resized with `F.interpolate(bilinear,
align_corners=False)`, the rest filled with each track's padding colour) followed by `crop.normalize`, for
a whole batch at once and without converting source regions to float:

1. `plan_crops` (host, vectorised float64 numpy): the realised transforms of `crop_frame`, and per output
   row and column the two source taps and weights of PyTorch's bilinear kernel (same formula, in float32);
2. `gather_grid` (host): each track's sampled pixels only - the (row tap, column tap) pairs, uint8
   channel planes, 12 S^2 bytes per track whatever the frame size (less than the source rectangle
   whenever the crop downsamples) - into one (N, 3, 2S, 2S) staging buffer, each channel plane laid out as
   (column tap, row tap, y, x) blocks of S x S so both passes below read and write contiguous S x S
   blocks;
3. `resample` (device): two weighted sums over the taps, padding and the ImageNet normalisation folded
   into the same expressions, output (N, 3, S, S) in the compute dtype.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import torch

from .crop import IMAGENET_MEAN, IMAGENET_STD, CropTransform, clip_boxes, rasterize


# Per-track float32 parameters uploaded with one copy: wy (S, 2), wx (S, 2), row-inside (S), col-inside (S),
# padding colour (3).
def param_width(size: int) -> int:
    return 6 * size + 3


@dataclass(frozen=True)
class CropPlan:
    """Host-side description of N crops of side `size`."""

    size: int
    realised: CropTransform
    rows: np.ndarray  # (N, S, 2) int64 absolute source rows of the two taps (0 where the row is padding)
    cols: np.ndarray  # (N, S, 2) int64 absolute source columns
    params: np.ndarray  # (N, 6S + 3) float32: see `param_width`


def _axis_taps(out_lo: np.ndarray, out_hi: np.ndarray, in_lo: np.ndarray, in_hi: np.ndarray, size: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Taps and weights of `F.interpolate(bilinear, align_corners=False)` along one axis, per item.

    Output positions [out_lo, out_hi) of a crop of `size` sample source positions [in_lo, in_hi); the rest
    are padding (index 0, weights 0, inside False). Returns (N, S, 2) indices, (N, S, 2) weights, (N, S)."""
    n = out_lo.shape[0]
    j = np.arange(size, dtype=np.int64)[None, :]
    inside = (j >= out_lo[:, None]) & (j < out_hi[:, None])
    out_len = np.maximum(out_hi - out_lo, 1)
    in_len = np.maximum(in_hi - in_lo, 1)
    # PyTorch (UpSampleKernel, area_pixel_compute_scale / source_index) computes these in float32.
    scale = (in_len.astype(np.float32) / out_len.astype(np.float32))[:, None]
    local = (j - out_lo[:, None]).astype(np.float32)
    src = np.maximum(scale * (local + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(src.astype(np.int64), (in_len - 1)[:, None])
    lam = np.minimum(src - i0.astype(np.float32), np.float32(1))
    i1 = np.minimum(i0 + 1, (in_len - 1)[:, None])
    idx = np.stack([i0, i1], axis=-1) + in_lo[:, None, None]
    w = np.stack([np.float32(1) - lam, lam], axis=-1).astype(np.float32)
    idx = np.where(inside[..., None], idx, 0)
    w = np.where(inside[..., None], w, np.float32(0))
    assert idx.shape == (n, size, 2)
    return idx, w, inside


def plan_crops(sizes_wh: np.ndarray, nominal: CropTransform, size: int, pad_colors: np.ndarray) -> CropPlan:
    """Geometry of `crop.crop_frame` for N frames at once (same arithmetic, vectorised)."""
    n = sizes_wh.shape[0]
    scale, translation = nominal.scale, nominal.translation
    frame_box = np.concatenate([np.zeros((n, 2)), sizes_wh], axis=1)
    out_box = frame_box * np.tile(scale, 2) + np.tile(translation, 2)
    out_box = rasterize(clip_boxes(out_box, (size, size))).astype(np.int64)
    in_box = (out_box - np.tile(translation, 2)) / np.tile(scale, 2)
    in_box = clip_boxes(rasterize(in_box), sizes_wh).astype(np.int64)
    ok = (out_box[:, 0] < out_box[:, 2]) & (out_box[:, 1] < out_box[:, 3])
    ok &= (in_box[:, 0] < in_box[:, 2]) & (in_box[:, 1] < in_box[:, 3])
    out_box[~ok] = 0  # nothing of the frame lands in the crop: all padding, nominal transform kept
    in_box[~ok] = 0
    span_out = np.maximum(out_box[:, 2:] - out_box[:, :2], 1)
    span_in = np.maximum(in_box[:, 2:] - in_box[:, :2], 1)
    real_scale = np.where(ok[:, None], span_out / span_in, scale)
    real_translation = np.where(ok[:, None], out_box[:, :2] - in_box[:, :2] * real_scale, translation)
    rows, wy, my = _axis_taps(out_box[:, 1], out_box[:, 3], in_box[:, 1], in_box[:, 3], size)
    cols, wx, mx = _axis_taps(out_box[:, 0], out_box[:, 2], in_box[:, 0], in_box[:, 2], size)
    params = np.concatenate(
        [wy.reshape(n, -1), wx.reshape(n, -1), my, mx, np.asarray(pad_colors, np.float32).reshape(n, 3)],
        axis=1, dtype=np.float32)
    return CropPlan(size=size, realised=CropTransform(real_scale, real_translation), rows=rows, cols=cols,
                    params=params)


def gather_grid(frames: list[np.ndarray], plan: CropPlan, out: np.ndarray,
                pool: Executor | None = None, workers: int = 1, skip: Collection[int] = ()) -> None:
    """Copy each track's sampled pixels into `out` (N, 3, 2S, 2S) uint8, channel planes, taps in blocks:
    out[i, c].reshape(2, 2, S, S)[b, a, y, x] is channel c of source pixel (rows[y, a], cols[x, b]). Only
    these bytes are read from the (possibly huge) frame. With a `pool`, tracks are split over `workers`
    threads (numpy's take releases the GIL). Tracks in `skip` are left alone (their frames are on the device)."""
    over_tracks(len(frames), pool, workers, lambda lo, hi: _gather_range(frames, plan, out, lo, hi, skip))


def over_tracks(n: int, pool: Executor | None, workers: int, run_range: Callable[[int, int], None]) -> None:
    """`run_range(lo, hi)` over tracks [0, n): here, or split evenly over `workers` threads of `pool`."""
    if pool is None or workers < 2 or n < 2:
        run_range(0, n)
        return
    bounds = np.linspace(0, n, min(workers, n) + 1).astype(int)
    jobs = [pool.submit(run_range, lo, hi) for lo, hi in itertools.pairwise(bounds)]
    for job in jobs:
        job.result()


def _tap_index(rows: np.ndarray, cols: np.ndarray, width: int, out: np.ndarray) -> np.ndarray:
    """Flat (H, W, 3) offsets of channel 0, shaped (2, 2, S, S) as [column tap, row tap, y, x]."""
    s = rows.shape[0]
    row_off = (rows.T * (width * 3)).reshape(1, 2, s, 1)
    col_off = (cols.T * 3).reshape(2, 1, 1, s)
    return np.add(row_off, col_off, out=out)


def _gather_range(frames: list[np.ndarray], plan: CropPlan, out: np.ndarray, lo: int, hi: int,
                  skip: Collection[int] = ()) -> None:
    s = plan.size
    index = np.empty((2, 2, s, s), dtype=np.int64)
    for i in range(lo, hi):
        if i in skip:
            continue
        frame = frames[i]
        if not frame.flags.c_contiguous:
            frame = np.ascontiguousarray(frame)
        flat = frame.reshape(-1)
        _tap_index(plan.rows[i], plan.cols[i], frame.shape[1], index)
        planes = out[i].reshape(3, 2, 2, s, s)
        for c in range(3):
            np.take(flat[c:], index, out=planes[c], mode="clip")


def gather_on_device(frame: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """`gather_grid` for one (H, W, 3) uint8 frame already on the device (e.g. decoded by nvJPEG):
    (3, 2S, 2S) uint8 on the frame's device. Only the two (S, 2) tap tables travel."""
    s = rows.shape[0]
    dev = frame.device
    index = _tap_index(rows, cols, frame.shape[1], np.empty((2, 2, s, s), dtype=np.int64))
    index = torch.from_numpy(index).to(dev).view(1, 2 * s, 2 * s)
    channels = torch.arange(3, device=dev).view(3, 1, 1)
    return frame.contiguous().view(-1)[index + channels]


def mean_colors(frames: list[np.ndarray]) -> np.ndarray:
    """(N, 3) float32 per-channel means (0..255) of uint8 frames: the padding colour of a track's crops.

    Exact integer sums in numpy: works on read-only frames (decoded buffers) without torch's warning."""
    out = np.empty((len(frames), 3), dtype=np.float32)
    for i, frame in enumerate(frames):
        pixels = frame.shape[0] * frame.shape[1]
        out[i] = frame.reshape(-1, 3).sum(axis=0, dtype=np.int64) / pixels
    return out


# x_norm = x * NORM_A + NORM_B per channel (0..255 input), computed in float64 and rounded to float32 once:
# the one source of both crop paths' normalisation.
NORM_A = (1.0 / (255.0 * np.asarray(IMAGENET_STD, np.float64))).astype(np.float32)
NORM_B = (-np.asarray(IMAGENET_MEAN, np.float64) / np.asarray(IMAGENET_STD, np.float64)).astype(np.float32)

_NORM: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _norm_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) with x_norm = x * a + b, shaped (1, 3, 1, 1), cached per device."""
    cached = _NORM.get(device)
    if cached is None:
        a, b = torch.from_numpy(NORM_A), torch.from_numpy(NORM_B)
        cached = (a.view(1, 3, 1, 1).to(device), b.view(1, 3, 1, 1).to(device))
        _NORM[device] = cached
    return cached


def _split_params(params: torch.Tensor, n: int, s: int) -> tuple[torch.Tensor, ...]:
    """(N, 6S + 3) resample params -> row weights (N, S, 2), column weights (N, S, 2), row and column
    inside-masks (N, S) and the padding colour (N, 3, 1, 1): the one place that knows the packing."""
    wy = params[:, : 2 * s].view(n, s, 2)
    wx = params[:, 2 * s : 4 * s].view(n, s, 2)
    my = params[:, 4 * s : 5 * s]
    mx = params[:, 5 * s : 6 * s]
    pad = params[:, 6 * s :].view(n, 3, 1, 1)
    return wy, wx, my, mx, pad


def resample(grid: torch.Tensor, params: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, 3, 2S, 2S) uint8 sampled pixels (`gather_grid`'s layout) + (N, 6S + 3) params -> (N, 3, S, S)
    normalised crops in `dtype`.

    Pure tensor code on the grid's device (compilable, graph-capturable): two weighted sums over
    contiguous S x S tap blocks, computed in place in one float copy of the grid, with the padding colour
    and the normalisation folded into the constant terms."""
    n, s = grid.shape[0], size
    a, b = _norm_constants(grid.device)
    wy, wx, my, mx, pad = _split_params(params, n, s)
    g = grid.float().view(n, 3, 2, 2, s, s)  # [column tap b, row tap a, y, x]
    # Rows: t[b] = wy0 * g[b, row tap 0] + wy1 * g[b, row tap 1] + the padding colour on rows outside.
    t = g[:, :, :, 0].mul_(wy[:, :, 0].reshape(n, 1, 1, s, 1))
    t.addcmul_(g[:, :, :, 1], wy[:, :, 1].reshape(n, 1, 1, s, 1))
    t.add_(((1 - my).view(n, 1, s, 1) * pad).view(n, 3, 1, s, 1))
    # Columns, normalisation folded in: out = (wx0 t0 + wx1 t1) * a + b, padding on columns outside.
    out = t[:, :, 0].mul_(wx[:, :, 0].reshape(n, 1, 1, s) * a)
    out.addcmul_(t[:, :, 1], wx[:, :, 1].reshape(n, 1, 1, s) * a)
    out.add_((1 - mx).view(n, 1, 1, s) * pad * a + b)
    return torch.empty((n, 3, s, s), dtype=dtype, device=grid.device).copy_(out)  # contiguous, compute dtype
