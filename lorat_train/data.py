"""Template/search training pairs: sequences in, SiamFC crops with box jitter, augmentation and targets out.

Two styles. `authors` (the default) follows LitingLin/LoRAT's siamese_tracker_train pipeline: template frame
uniform over the visible frames, search frame within +-max_gap of it (the same frame when there is no other,
which is how still images become pairs), anisotropic scale jitter and translation jitter of the search crop,
retried until the target keeps `min_object_size` px inside the crop (else a new pair), each crop padded
with its own frame's mean colour, then flip / colour jitter / DeiT-III augmentation. `legacy` is our earlier
sampler (kept so configs/default-stage*.yaml reproduce the packaged model).

Sampling is a pure function of `(seed, step, shard)`, and the synthetic pool's content is a pure function of
the step too, so a resumed run draws exactly the batches the uninterrupted run would have drawn, whatever the
number of loader workers; shard = rank x accumulation + micro-step splits the global batch across them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from lorat_infer.config import LoRATConfig
from lorat_infer.crop import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_frame,
    frame_mean_color,
    normalize,
    siamfc_transform,
    template_foreground_mask,
    xywh_to_xyxy,
)
from lorat_infer.eval.synthetic import generate_sequence

from .augment import augment_pair
from .config import DataOptions, JitterOptions, SourceOptions
from .footage import DataError, Report, read_path


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

    def pin_memory(self) -> Batch:
        """Page-locked copies (the DataLoader calls this with pin_memory=True) for asynchronous CUDA copies."""
        return Batch(self.template.pin_memory(), self.template_mask.pin_memory(), self.search.pin_memory(),
                     self.target_boxes.pin_memory())


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
    """Files on disk (see `footage`): sequence folders, TrackingNet, videos + box files, COCO-style JSON.

    Everything is read and checked up front (`check`: full = every frame decoded, headers = sizes only);
    any problem is collected in `report`, and unusable sequences are left out.
    """

    def __init__(self, options: SourceOptions, check: str = "full", cache_dir: Path | None = None,
                 report: Report | None = None) -> None:
        self.report = report if report is not None else Report()
        names = None
        if options.split_file:
            names = {line.strip() for line in Path(options.split_file).read_text().splitlines() if line.strip()}
        kind = {"lasot": "lasot", "got10k": "got10k"}.get(options.type, options.type)
        sequences = read_path(options.root, self.report, mode=check, kind=kind, cache_dir=cache_dir,
                              images=options.images, names=names)
        if options.max_sequences:
            sequences = sequences[: options.max_sequences]
        if not sequences and not self.report.errors:
            self.report.error(options.root, "no usable sequences")
        self.sequences = sequences

    def get(self, slot: int, step: int) -> TrainSequence:
        return self.sequences[slot]

    def __len__(self) -> int:
        return len(self.sequences)


def build_source(options: SourceOptions, seed: int, check: str = "full", cache_dir: Path | None = None,
                 report: Report | None = None) -> SyntheticPool | FolderSource:
    if options.type == "synthetic":
        return SyntheticPool(options, seed)
    if options.type in ("auto", "lasot", "got10k", "trackingnet", "coco", "video"):
        return FolderSource(options, check, cache_dir, report)
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

    def __init__(self, config: LoRATConfig, data: DataOptions, seed: int, cache_dir: Path | None = None) -> None:
        self.config = config
        self.data = data
        self.seed = seed
        self.report = Report()
        self.sources = [build_source(s, seed, data.check, cache_dir, self.report) for s in data.sources]
        if self.report.errors:
            raise DataError("training data is unusable; fix or remove these (lorat-train --check-data PATH... "
                            "prints the same report):\n" + self.report.format())
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
        """One pair: normalised template crop, mask, normalised search crop, GT xyxy in search-crop pixels."""
        if self.data.style == "authors":
            return self._sample_authors(rng, step)
        template, mask, search, gt = self._sample_legacy(rng, step)
        return normalize(template[None])[0], mask, normalize(search[None])[0], gt

    def _pick_pair_authors(self, rng: np.random.Generator, step: int) -> tuple[TrainSequence, int, int]:
        """siamese_training_pair_sampling, sample_mode interval: z uniform over visible frames, x visible within
        +-max_gap and != z, else x = z (one-frame sequences, e.g. still images)."""
        for _ in range(100):
            source = self.sources[int(rng.choice(len(self.sources), p=self.weights))]
            seq = source.get(int(rng.integers(len(source))), step)
            valid = visible_frames(seq)
            if not len(valid):
                continue
            z = int(rng.choice(valid))
            near = valid[(np.abs(valid - z) <= self.data.max_gap) & (valid != z)]
            return seq, z, int(rng.choice(near)) if len(near) else z
        raise ValueError("could not find a sequence with a visible target in 100 tries")

    def _search_transform(self, rng: np.random.Generator, box: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """prepare_siamfc_cropping_with_augmentation: scale / exp(N(0,1) * s) per axis, translation
        U(-1,1) * t * (w' + h') / 2; retried until the target overlaps the crop and keeps min_object_size px."""
        cfg, jit = self.config, self.data.search_jitter
        base = siamfc_transform(box[None], cfg.search_factor, cfg.search_size)
        out = float(cfg.search_size)
        if jit.scale == 0 and jit.center == 0:
            return base.scale[0], base.translation[0]
        for _ in range(self.data.jitter_retries + 1):
            scale = base.scale[0] / np.exp(rng.standard_normal(2) * jit.scale)
            centre = (box[:2] + box[2:]) / 2
            translation = out / 2 - centre * scale
            wh = (box[2:] - box[:2]) * scale
            translation = translation + rng.uniform(-1, 1, size=2) * wh.sum() * 0.5 * jit.center
            crop_box = box * np.tile(scale, 2) + np.tile(translation, 2)
            clipped = np.clip(crop_box, 0, out)
            size = clipped[2:] - clipped[:2]
            if np.all(size > 0) and np.all(size >= self.data.min_object_size) and np.prod(size) <= out * out:
                return scale, translation
        return None

    def _sample_authors(self, rng: np.random.Generator, step: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                           torch.Tensor, np.ndarray]:
        cfg = self.config
        for _ in range(100):
            seq, z, x = self._pick_pair_authors(rng, step)
            fz = torch.from_numpy(np.ascontiguousarray(seq.frame(z)))
            fx = fz if x == z else torch.from_numpy(np.ascontiguousarray(seq.frame(x)))
            # boxes clipped to their frame first (the authors' data cleaning: fit_in_image_size)
            box_z = np.clip(xywh_to_xyxy(np.asarray(seq.boxes[z], dtype=np.float64)), 0,
                            np.tile([fz.shape[1], fz.shape[0]], 2))
            box_x = np.clip(xywh_to_xyxy(np.asarray(seq.boxes[x], dtype=np.float64)), 0,
                            np.tile([fx.shape[1], fx.shape[0]], 2))
            if np.any(box_z[2:] <= box_z[:2]) or np.any(box_x[2:] <= box_x[:2]):
                continue
            search_t = self._search_transform(rng, box_x)
            if search_t is None:
                continue  # the authors' worker draws a new pair
            tz = siamfc_transform(box_z[None], cfg.template_factor, cfg.template_size)
            template, zs, zt = crop_frame(fz, tz.scale[0], tz.translation[0], cfg.template_size, frame_mean_color(fz))
            search, xs, xt = crop_frame(fx, search_t[0], search_t[1], cfg.search_size, frame_mean_color(fx))
            z_box = box_z * np.tile(zs, 2) + np.tile(zt, 2)
            x_box = box_x * np.tile(xs, 2) + np.tile(xt, 2)
            template, z_box, search, x_box = augment_pair(rng, template / 255.0, z_box, search / 255.0, x_box,
                                                          self.data.augment)
            z_box = np.clip(z_box, 0, cfg.template_size)
            x_box = np.clip(x_box, 0, cfg.search_size)
            mask = template_foreground_mask(z_box[None], cfg.template_size / cfg.template_grid[0],
                                            cfg.template_grid)[0]
            return _normalize01(template), mask, _normalize01(search), x_box
        raise ValueError("no usable training pair in 100 draws: are the targets smaller than "
                         f"min_object_size ({self.data.min_object_size} px in the search crop)?")

    def _sample_legacy(self, rng: np.random.Generator, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                          np.ndarray]:
        """Our earlier sampler: template crop (3,Hz,Wz) 0..255, mask, search crop, GT xyxy in crop pixels."""
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

    def batch(self, step: int, batch_size: int, shard: int = 0) -> Batch:
        """The pairs of `step` (for `shard`: a rank's / a micro-step's share of the global batch)."""
        rng = np.random.default_rng([self.seed, 1, step] if shard == 0 else [self.seed, 1, step, shard])
        items = [self.sample(rng, step) for _ in range(batch_size)]
        templates, masks, searches, gts = zip(*items)
        return Batch(
            template=torch.stack(templates),
            template_mask=torch.stack(masks),
            search=torch.stack(searches),
            target_boxes=torch.from_numpy(np.stack(gts) / self.config.search_size).float(),
        )


def _normalize01(img: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=img.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=img.dtype).view(3, 1, 1)
    return (img - mean) / std


def fixed_batch(config: LoRATConfig, data: DataOptions, seed: int, batch_size: int) -> Batch:
    """A reproducible batch (tests, quick checks)."""
    return PairSampler(config, data, seed).batch(0, batch_size)
