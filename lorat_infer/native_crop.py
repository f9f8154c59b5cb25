"""CPU crops in one pass: gather, bilinear resample, padding and normalisation fused in a compiled loop.

On a CPU the "device" is the host, so the two-stage crop of `device_crop` (gather the taps into a staging
grid, then resample it with tensor ops) reads and writes every sample three times: the uint8 gather
(`np.take` through an int64 index), its float copy, and the two weighted sums. Here one numba-compiled
loop per track reads the four taps of each output pixel straight from the frame and writes the normalised
float32 value: the same arithmetic as `device_crop.resample`, term by term and in the same float32 order,
so its crops equal the tensor path's (tests/lorat_infer/test_device_crop.py) and the trackers' parity with
the authors' code carries over.

The kernel releases the GIL: the engine's gather threads run tracks at once. It is compiled on first use
(about a second; cached on disk where numba can write) and warmed by `warm_up`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from .device_crop import NORM_A, NORM_B, CropPlan, over_tracks


def _crop_one(flat: np.ndarray, width: int, rows: np.ndarray, cols: np.ndarray, params: np.ndarray,
              a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - runs compiled
    """One track: a C-contiguous (H, W, 3) uint8 frame flattened, its width, (S, 2) row and column taps,
    (6S + 3) params (`device_crop` packing) -> out (3, S, S) float32.

    Per output row: the 12 tap bytes of every column are copied into a small uint8 table (unsigned
    offsets: no negative-index checks), then the weighted sums run over contiguous rows of that table,
    which the compiler vectorises; fused in one loop, the scattered loads kept it scalar (2x slower).
    Every constant is float32 so that nothing is promoted to float64."""
    s = rows.shape[0]
    one = np.float32(1.0)
    pad = params[6 * s: 6 * s + 3]
    # Per channel and column: the two tap weights times the normalisation scale, and the constant term
    # (the padding colour on columns outside the frame, normalised), as `resample` computes them.
    w0 = np.empty((3, s), np.float32)
    w1 = np.empty((3, s), np.float32)
    cx = np.empty((3, s), np.float32)
    col0 = np.empty(s, np.uint64)
    col1 = np.empty(s, np.uint64)
    for x in range(s):
        col0[x] = np.uint64(cols[x, 0] * 3)
        col1[x] = np.uint64(cols[x, 1] * 3)
        inside = params[5 * s + x]
        for c in range(3):
            w0[c, x] = params[2 * s + 2 * x] * a[c]
            w1[c, x] = params[2 * s + 2 * x + 1] * a[c]
            cx[c, x] = (one - inside) * pad[c] * a[c] + b[c]
    taps = np.empty((12, s), np.uint8)  # [tap (r0 c0, r1 c0, r0 c1, r1 c1) x channel, column]
    stride = width * 3
    u1, u2 = np.uint64(1), np.uint64(2)
    for y in range(s):
        row0 = np.uint64(rows[y, 0] * stride)
        row1 = np.uint64(rows[y, 1] * stride)
        for x in range(s):
            p00, p10 = row0 + col0[x], row1 + col0[x]
            p01, p11 = row0 + col1[x], row1 + col1[x]
            taps[0, x], taps[1, x], taps[2, x] = flat[p00], flat[p00 + u1], flat[p00 + u2]
            taps[3, x], taps[4, x], taps[5, x] = flat[p10], flat[p10 + u1], flat[p10 + u2]
            taps[6, x], taps[7, x], taps[8, x] = flat[p01], flat[p01 + u1], flat[p01 + u2]
            taps[9, x], taps[10, x], taps[11, x] = flat[p11], flat[p11 + u1], flat[p11 + u2]
        wy0, wy1 = params[2 * y], params[2 * y + 1]
        outside = one - params[4 * s + y]
        for c in range(3):
            py = outside * pad[c]
            o, t00, t10, t01, t11 = out[c, y], taps[c], taps[3 + c], taps[6 + c], taps[9 + c]
            w0c, w1c, cxc = w0[c], w1[c], cx[c]
            for x in range(s):
                # rows first (column tap 0, then 1), then columns: `resample`'s order of operations
                t0 = np.float32(t00[x]) * wy0 + np.float32(t10[x]) * wy1 + py
                t1 = np.float32(t01[x]) * wy0 + np.float32(t11[x]) * wy1 + py
                o[x] = t0 * w0c[x] + t1 * w1c[x] + cxc[x]


_kernel: Callable[..., None] | None = None


def kernel() -> Callable[..., None]:
    """The compiled `_crop_one` (built once per process; numba's on-disk cache when it can write one)."""
    global _kernel
    if _kernel is None:
        import numba

        try:
            _kernel = numba.njit(nogil=True, cache=True, boundscheck=False)(_crop_one)
        except RuntimeError:  # no writable cache location (read-only install and home): compile each run
            _kernel = numba.njit(nogil=True, cache=False, boundscheck=False)(_crop_one)
    return _kernel


def warm_up() -> None:
    """Compile (or load) the kernel now rather than inside the first step."""
    s = 2
    kernel()(np.zeros(12, np.uint8), 2, np.zeros((s, 2), np.int64), np.zeros((s, 2), np.int64),
             np.zeros(6 * s + 3, np.float32), NORM_A, NORM_B, np.empty((3, s, s), np.float32))


def crop_tracks(frames: list[np.ndarray], plan: CropPlan, out: np.ndarray, pool: Executor | None = None,
                workers: int = 1) -> None:
    """Normalised float32 crops (N, 3, S, S) of `plan` into `out`; tracks split over `workers` threads of
    `pool`."""
    over_tracks(len(frames), pool, workers, lambda lo, hi: _crop_range(frames, plan, out, lo, hi))


def _crop_range(frames: list[np.ndarray], plan: CropPlan, out: np.ndarray, lo: int, hi: int) -> None:
    run = kernel()
    for i in range(lo, hi):
        frame = frames[i] if frames[i].flags.c_contiguous else np.ascontiguousarray(frames[i])
        rows, cols = plan.rows[i], plan.cols[i]
        # The kernel does not check bounds: a tap outside the frame would read foreign memory into a crop.
        if rows.min() < 0 or cols.min() < 0 or rows.max() >= frame.shape[0] or cols.max() >= frame.shape[1]:
            raise ValueError(f"crop taps outside the {frame.shape[1]}x{frame.shape[0]} frame of track {i}")
        run(frame.reshape(-1), frame.shape[1], rows, cols, plan.params[i], NORM_A, NORM_B, out[i])
