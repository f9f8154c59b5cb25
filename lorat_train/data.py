"""Template/search training pairs: sequences in, SiamFC crops with box jitter and targets out.

Sampling is a pure function of `(seed, step)`, and the synthetic pool's content is a pure function of the
step too, so a resumed run draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from lorat_infer.config import LoRATConfig
from lorat_infer.crop import (
    crop_frame,
    frame_mean_color,
    normalize,
    siamfc_transform,
    template_foreground_mask,
    xywh_to_xyxy,
)
from lorat_infer.eval.synthetic import generate_sequence

from .config import DataOptions, JitterOptions, SourceOptions


class TrainSequence(Protocol):
    """What a pair sampler needs: frame access and xywh ground truth (NaN / non-positive = absent)."""

    boxes: np.ndarray

    def frame(self, index: int) -> np.ndarray: ...


@dataclass
class InMemorySequence:
    frames: list[np.ndarray]
    boxes: np.ndarray

    def frame(self, index: int) -> np.ndarray:
        return self.frames[index]


@dataclass
class Batch:
    template: torch.Tensor  # (B, 3, Hz*p, Wz*p) normalised
    template_mask: torch.Tensor  # (B, Hz, Wz) 0/1
    search: torch.Tensor  # (B, 3, Hx*p, Wx*p) normalised
    target_boxes: torch.Tensor  # (B, 4) xyxy normalised to the search crop


def jitter_box(rng: np.random.Generator, box_xyxy: np.ndarray, jitter: JitterOptions) -> np.ndarray:
    """size * exp(N(0, scale)); centre + (U(0,1) - 0.5) * sqrt(w*h) * center (OSTrack/LoRAT convention)."""
    wh = box_xyxy[2:] - box_xyxy[:2]
    centre = (box_xyxy[:2] + box_xyxy[2:]) / 2
    if jitter.scale > 0:
        wh = wh * np.exp(rng.normal(0, jitter.scale, size=2))
    if jitter.center > 0:
        centre = centre + (rng.uniform(size=2) - 0.5) * np.sqrt(wh.prod()) * jitter.center
    return np.concatenate([centre - wh / 2, centre + wh / 2])


class SyntheticPool:
    """A rolling pool of synthetic sequences: slot k % P is replaced by a fresh sequence every R steps.

    `sequence_id(slot, step)` is closed-form, so the pool at any step can be rebuilt after a resume.
    """

    def __init__(self, options: SourceOptions, seed: int) -> None:
        self.options = options
        self.seed = seed
        self._slots: dict[int, tuple[int, InMemorySequence]] = {}

    def sequence_id(self, slot: int, step: int) -> int:
        pool, every = self.options.pool_size, max(self.options.refresh_every, 1)
        refreshes = step // every if self.options.refresh_every > 0 else 0
        # refresh k (1-based) hits slot (k - 1) % pool; count those <= refreshes hitting `slot`
        hits = 0 if refreshes <= slot else (refreshes - 1 - slot) // pool + 1
        return slot + pool * hits

    def get(self, slot: int, step: int) -> InMemorySequence:
        seq_id = self.sequence_id(slot, step)
        cached = self._slots.get(slot)
        if cached is None or cached[0] != seq_id:
            seq = generate_sequence(
                int(np.random.default_rng([self.seed, self.options.seed_offset, seq_id]).integers(2**31 - 1)),
                self.options.num_frames, domain=self.options.domain, **self.options.options,
            )
            cached = (seq_id, InMemorySequence(seq.frames, seq.boxes))
            self._slots[slot] = cached
        return cached[1]

    def __len__(self) -> int:
        return self.options.pool_size


class FolderSource:
    """LaSOT / GOT-10k style folders through `lorat_infer.eval.datasets` (frames read lazily)."""

    def __init__(self, options: SourceOptions) -> None:
        from lorat_infer.eval.datasets import read_dataset

        sequences = read_dataset(options.root)
        if options.max_sequences:
            sequences = sequences[: options.max_sequences]
        if not sequences:
            raise ValueError(f"no sequences found under {options.root!r}")
        self.sequences = sequences

    def get(self, slot: int, step: int) -> TrainSequence:
        return self.sequences[slot]

    def __len__(self) -> int:
        return len(self.sequences)


def build_source(options: SourceOptions, seed: int) -> SyntheticPool | FolderSource:
    if options.type == "synthetic":
        return SyntheticPool(options, seed)
    if options.type in ("lasot", "got10k"):
        return FolderSource(options)
    raise ValueError(f"unknown data source type {options.type!r}")


def visible_frames(seq: TrainSequence) -> np.ndarray:
    """Indices of frames with a usable box that are not flagged absent (LaSOT/GOT-10k flags)."""
    boxes = np.asarray(seq.boxes, dtype=np.float64)
    ok = np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    absent = getattr(seq, "absent", None)
    if absent is not None:
        ok &= ~np.asarray(absent, dtype=bool)
    return np.flatnonzero(ok)


class PairSampler:
    """Draws batches of (template, search) crops; `batch(step)` depends only on the seed and the step."""

    def __init__(self, config: LoRATConfig, data: DataOptions, seed: int) -> None:
        self.config = config
        self.data = data
        self.seed = seed
        self.sources = [build_source(s, seed) for s in data.sources]
        weights = np.array([s.weight for s in data.sources], dtype=np.float64)
        if not len(weights) or weights.sum() <= 0:
            raise ValueError("data.sources needs at least one source with positive weight")
        self.weights = weights / weights.sum()

    def _pick_pair(self, rng: np.random.Generator, step: int) -> tuple[TrainSequence, int, int]:
        for _ in range(100):
            source = self.sources[int(rng.choice(len(self.sources), p=self.weights))]
            seq = source.get(int(rng.integers(len(source))), step)
            valid = visible_frames(seq)
            if len(valid) < 2:
                continue
            t0 = int(rng.choice(valid))
            near = valid[(np.abs(valid - t0) <= self.data.max_gap) & (valid != t0)]
            if len(near):
                return seq, t0, int(rng.choice(near))
        raise ValueError("could not find a sequence with two visible frames in 100 tries")

    def sample(self, rng: np.random.Generator, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   np.ndarray]:
        """One pair: template crop (3,Hz,Wz) 0..255, mask, search crop, GT xyxy in search-crop pixels."""
        cfg = self.config
        seq, t0, t1 = self._pick_pair(rng, step)
        f0 = torch.from_numpy(np.ascontiguousarray(seq.frame(t0)))
        f1 = f0 if t1 == t0 else torch.from_numpy(np.ascontiguousarray(seq.frame(t1)))
        pad = frame_mean_color(f0)
        box0 = xywh_to_xyxy(np.asarray(seq.boxes[t0], dtype=np.float64))
        box1 = xywh_to_xyxy(np.asarray(seq.boxes[t1], dtype=np.float64))

        tz = siamfc_transform(jitter_box(rng, box0, self.data.template_jitter)[None], cfg.template_factor,
                              cfg.template_size)
        template, zs, zt = crop_frame(f0, tz.scale[0], tz.translation[0], cfg.template_size, pad)
        mask = template_foreground_mask((box0 * np.tile(zs, 2) + np.tile(zt, 2))[None],
                                        cfg.template_size / cfg.template_grid[0], cfg.template_grid)[0]
        tx = siamfc_transform(jitter_box(rng, box1, self.data.search_jitter)[None], cfg.search_factor,
                              cfg.search_size)
        search, xs, xt = crop_frame(f1, tx.scale[0], tx.translation[0], cfg.search_size, pad)
        gt = box1 * np.tile(xs, 2) + np.tile(xt, 2)
        return template, mask, search, gt

    def batch(self, step: int, batch_size: int) -> Batch:
        rng = np.random.default_rng([self.seed, 1, step])
        items = [self.sample(rng, step) for _ in range(batch_size)]
        templates, masks, searches, gts = zip(*items)
        return Batch(
            template=normalize(torch.stack(templates)),
            template_mask=torch.stack(masks),
            search=normalize(torch.stack(searches)),
            target_boxes=torch.from_numpy(np.stack(gts) / self.config.search_size).float(),
        )


def fixed_batch(config: LoRATConfig, data: DataOptions, seed: int, batch_size: int) -> Batch:
    """A reproducible batch (tests, quick checks)."""
    return PairSampler(config, data, seed).batch(0, batch_size)
