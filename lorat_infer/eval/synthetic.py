"""Synthetic tracking sequences with exact ground truth, for tests, training and benchmarks.

Each sequence is a textured object moving over a textured background with scale change, and optionally a
passing occluder and a look-alike distractor. Everything derives from one seed, so a sequence is reproducible
from `(seed, options)`. Two texture "domains" exist so a model can be adapted from one to the other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SyntheticOptions:
    size: tuple[int, int] = (320, 240)  # (width, height)
    object_size: tuple[float, float] = (0.16, 0.2)  # initial (w, h) as a fraction of the frame, +-30 %
    speed: float = 0.012  # mean speed, fraction of the frame diagonal per frame
    scale_change: float = 0.35  # peak relative change of the object size over the sequence
    occlusion: bool = True  # an occluding bar sweeps across the object mid-sequence
    distractor: bool = True  # a look-alike object moves nearby
    domain: str = "blobs"  # "blobs" (smooth textures) or "stripes" (hard-edged patterns)
    noise: float = 4.0  # per-pixel sensor noise (0..255 scale)


@dataclass
class SyntheticSequence:
    name: str
    frames: list[np.ndarray]  # HxWx3 uint8 RGB
    boxes: np.ndarray  # (N, 4) float64 xywh ground truth
    options: SyntheticOptions = field(default_factory=SyntheticOptions)


def _smooth_texture(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency colour noise: a coarse random grid upsampled bilinearly to (h, w, 3)."""
    grid = rng.uniform(0, 255, size=(cells + 1, cells + 1, 3))
    ys = np.linspace(0, cells, h)
    xs = np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _stripe_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Hard-edged oriented stripes in two random colours."""
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 18)
    yy, xx = np.mgrid[0:h, 0:w]
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    mask = (np.floor(phase) % 2).astype(bool)[..., None]
    a, b = rng.uniform(0, 255, size=(2, 3))
    return np.where(mask, a, b)


def _texture(rng: np.random.Generator, h: int, w: int, domain: str, cells: int) -> np.ndarray:
    if domain == "blobs":
        return _smooth_texture(rng, h, w, cells)
    if domain == "stripes":
        return 0.6 * _stripe_texture(rng, h, w) + 0.4 * _smooth_texture(rng, h, w, cells)
    raise ValueError(f"unknown synthetic domain {domain!r}; use 'blobs' or 'stripes'")


def _object_texture(rng: np.random.Generator, domain: str) -> np.ndarray:
    """A 64x64 object pattern: texture plus a bright border so the extent is visible."""
    tex = _texture(rng, 64, 64, domain, cells=3)
    tex[:3], tex[-3:], tex[:, :3], tex[:, -3:] = 255, 255, 255, 255
    return tex


def _paste(canvas: np.ndarray, patch: np.ndarray, box: np.ndarray) -> None:
    """Draw `patch` resampled (nearest) into xywh `box` of `canvas`, clipped to the frame."""
    h, w = canvas.shape[:2]
    x, y, bw, bh = box
    x1, y1 = max(int(round(x)), 0), max(int(round(y)), 0)
    x2, y2 = min(int(round(x + bw)), w), min(int(round(y + bh)), h)
    if x2 <= x1 or y2 <= y1:
        return
    ph, pw = patch.shape[:2]
    rows = np.clip(((np.arange(y1, y2) - y + 0.5) / bh * ph).astype(int), 0, ph - 1)
    cols = np.clip(((np.arange(x1, x2) - x + 0.5) / bw * pw).astype(int), 0, pw - 1)
    canvas[y1:y2, x1:x2] = patch[rows][:, cols]


def _trajectory(rng: np.random.Generator, n: int, size: tuple[int, int], wh0: np.ndarray,
                speed: float, scale_change: float) -> np.ndarray:
    """Smooth random motion that bounces off the frame edges, with a sinusoidal scale change."""
    w, h = size
    diag = float(np.hypot(w, h))
    scale = 1 + scale_change * np.sin(np.linspace(0, rng.uniform(1.0, 2.0) * np.pi, n) + rng.uniform(0, np.pi))
    scale /= scale[0]
    centre = rng.uniform([0.3 * w, 0.3 * h], [0.7 * w, 0.7 * h])
    heading = rng.uniform(0, 2 * np.pi)
    boxes = np.zeros((n, 4))
    for t in range(n):
        wh = wh0 * scale[t]
        boxes[t] = [centre[0] - wh[0] / 2, centre[1] - wh[1] / 2, wh[0], wh[1]]
        heading += rng.normal(0, 0.25)
        step = speed * diag * np.array([np.cos(heading), np.sin(heading)])
        nxt = centre + step
        lo, hi = wh / 2, np.array([w, h]) - wh / 2
        for axis in range(2):
            if not lo[axis] <= nxt[axis] <= hi[axis]:
                step[axis] = -step[axis]
                heading = float(np.arctan2(step[1], step[0]))
        centre = np.clip(centre + step, lo, hi)
    return boxes


def generate_sequence(seed: int, num_frames: int = 60, size: tuple[int, int] | None = None,
                      **options: object) -> SyntheticSequence:
    """Render one sequence; `options` override `SyntheticOptions` fields (e.g. domain="stripes")."""
    opts = SyntheticOptions(**options)  # type: ignore[arg-type]
    if size is not None:
        opts = dataclasses.replace(opts, size=size)
    rng = np.random.default_rng(seed)
    w, h = opts.size
    background = _texture(rng, h, w, opts.domain, cells=8)
    target = _object_texture(rng, opts.domain)
    wh0 = np.array(opts.object_size) * np.array([w, h]) * rng.uniform(0.7, 1.3, size=2)
    boxes = _trajectory(rng, num_frames, opts.size, wh0, opts.speed, opts.scale_change)

    distractor_boxes = None
    if opts.distractor:
        # Same pattern, shifted hue: similar enough to tempt a tracker without a position prior.
        lookalike = np.clip(target[..., [1, 2, 0]] * 0.5 + target * 0.5, 0, 255)
        distractor_boxes = _trajectory(rng, num_frames, opts.size, wh0 * 0.9, opts.speed, 0.1)
    occluder = _texture(rng, h, max(w // 10, 4), opts.domain, cells=2)
    occ_start, occ_len = int(num_frames * 0.4), max(int(num_frames * 0.2), 1)

    frames = []
    for t in range(num_frames):
        canvas = background.copy()
        if distractor_boxes is not None:
            _paste(canvas, lookalike, distractor_boxes[t])
        _paste(canvas, target, boxes[t])
        if opts.occlusion and occ_start <= t < occ_start + occ_len:
            # A bar that covers up to about half of the object as it passes.
            progress = (t - occ_start + 0.5) / occ_len
            bx, _, bw, _ = boxes[t]
            bar_w = 0.5 * bw
            bar = np.array([bx - bar_w + progress * (bw + bar_w), 0, bar_w, h])
            _paste(canvas, occluder, bar)
        if opts.noise > 0:
            canvas = canvas + rng.normal(0, opts.noise, size=canvas.shape)
        frames.append(np.clip(canvas, 0, 255).astype(np.uint8))
    return SyntheticSequence(name=f"synthetic-{opts.domain}-{seed}", frames=frames, boxes=boxes, options=opts)


def generate_benchmark(seed: int, num_sequences: int = 20, num_frames: int = 60,
                       **options: object) -> list[SyntheticSequence]:
    """A set of sequences from one master seed (use a seed never used in training for held-out tests)."""
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=num_sequences)
    return [generate_sequence(int(s), num_frames, **options) for s in seeds]
