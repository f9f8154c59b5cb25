"""SiamFC-context crops with pixel-aligned resampling, as in the authors' pipeline.

A crop is an isotropic scale plus translation, `x' = x * s + t`, centred on the box. The frame region that
lands inside the crop is rasterised to whole pixels on both sides and resized bilinearly
(align_corners=False); the rest is filled with the first frame's mean colour. Because rasterising moves
the edges slightly, the *realised* per-axis scale and translation are returned and used for every later
mapping (template mask, inverse box mapping). Geometry is vectorised over a batch in float64 numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

RASTER_EPS = 1e-4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CropTransform:
    """Per-item affine map frame -> crop pixels: `x' = x * scale + translation` (arrays of shape (N, 2))."""

    scale: np.ndarray
    translation: np.ndarray

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        """Frame xyxy (N, 4) -> crop xyxy."""
        return boxes * np.tile(self.scale, 2) + np.tile(self.translation, 2)

    def invert(self, boxes: np.ndarray) -> np.ndarray:
        """Crop xyxy (N, 4) -> frame xyxy."""
        return (boxes - np.tile(self.translation, 2)) / np.tile(self.scale, 2)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)


def rasterize(boxes: np.ndarray) -> np.ndarray:
    """Continuous xyxy -> whole-pixel, end-exclusive xyxy: floor(x1), floor(x2 + 1 - 1e-4)."""
    out = np.array(boxes, dtype=np.float64, copy=True)
    out[..., 2:] += 1 - RASTER_EPS
    return np.floor(out)


def clip_boxes(boxes: np.ndarray, sizes_wh: np.ndarray) -> np.ndarray:
    """Clip xyxy (N, 4) to [0, W] x [0, H] per item."""
    limits = np.tile(np.asarray(sizes_wh, dtype=np.float64), 2)
    return np.clip(boxes, 0, limits)


def damp_size(previous: np.ndarray, predicted: np.ndarray, rate: float) -> np.ndarray:
    """xyxy (N, 4) boxes at the predicted centres whose width and height move from the previous box's by
    `rate` of the predicted change in log space (geometric: doubling at rate 0.5 grows by sqrt 2)."""
    previous, predicted = np.asarray(previous, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    old = np.maximum(previous[..., 2:] - previous[..., :2], 1e-6)
    new = np.maximum(predicted[..., 2:] - predicted[..., :2], 1e-6)
    size = old * (new / old) ** rate
    centre = (predicted[..., :2] + predicted[..., 2:]) / 2
    return np.concatenate([centre - size / 2, centre + size / 2], axis=-1)


def enforce_min_size(boxes: np.ndarray, min_size: float) -> np.ndarray:
    """Grow boxes about their centre so width and height are at least `min_size`."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = np.maximum(boxes[..., 2:] - boxes[..., :2], min_size) / 2
    return np.concatenate([centre - half, centre + half], axis=-1)


def siamfc_transform(boxes: np.ndarray, area_factor: float, output_size: int) -> CropTransform:
    """Nominal crop transform: context p = (f - 1)(w + h)/2, s = sqrt(out^2 / ((w + p)(h + p)))."""
    wh = boxes[..., 2:] - boxes[..., :2]
    area = wh + (area_factor - 1) * wh.sum(axis=-1, keepdims=True) * 0.5
    scale = np.sqrt(float(output_size) ** 2 / area.prod(axis=-1, keepdims=True))
    scale = np.repeat(scale, 2, axis=-1)
    centre = (boxes[..., :2] + boxes[..., 2:]) * 0.5
    translation = output_size / 2.0 - centre * scale
    return CropTransform(scale=scale, translation=translation)


def crop_frame(frame: torch.Tensor, scale: np.ndarray, translation: np.ndarray, output_size: int,
               pad_color: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Resample one frame (H, W, 3) uint8 into a (3, out, out) float 0..255 crop.

    Returns the crop and the realised (scale, translation) of shape (2,) each.
    """
    h, w = frame.shape[0], frame.shape[1]
    crop = pad_color.to(torch.float32).view(3, 1, 1).expand(3, output_size, output_size).clone()
    out_box = np.array([0.0, 0.0, w, h]) * np.tile(scale, 2) + np.tile(translation, 2)
    out_box = rasterize(clip_boxes(out_box, (output_size, output_size))).astype(np.int64)
    if not (out_box[0] < out_box[2] and out_box[1] < out_box[3]):
        return crop, scale, translation  # the frame lies entirely outside the crop
    in_box = (out_box - np.tile(translation, 2)) / np.tile(scale, 2)
    in_box = clip_boxes(rasterize(in_box), (w, h)).astype(np.int64)
    if not (in_box[0] < in_box[2] and in_box[1] < in_box[3]):
        return crop, scale, translation
    region = frame[in_box[1] : in_box[3], in_box[0] : in_box[2]].permute(2, 0, 1).unsqueeze(0).float()
    out_h, out_w = int(out_box[3] - out_box[1]), int(out_box[2] - out_box[0])
    resized = F.interpolate(region, size=(out_h, out_w), mode="bilinear", align_corners=False)
    crop[:, out_box[1] : out_box[3], out_box[0] : out_box[2]] = resized[0]
    real_scale = (out_box[2:] - out_box[:2]) / (in_box[2:] - in_box[:2])
    real_translation = out_box[:2] - in_box[:2] * real_scale
    return crop, real_scale.astype(np.float64), real_translation.astype(np.float64)


def crop_batch(frames: list[torch.Tensor], transform: CropTransform, output_size: int,
               pad_colors: torch.Tensor) -> tuple[torch.Tensor, CropTransform]:
    """Crop N frames into one (N, 3, out, out) batch; returns the realised transforms.

    The regions differ in shape per item, so the resize runs per item; everything else is batched.
    """
    crops, scales, translations = [], [], []
    for i, frame in enumerate(frames):
        crop, s, t = crop_frame(frame, transform.scale[i], transform.translation[i], output_size,
                                pad_colors[i])
        crops.append(crop)
        scales.append(s)
        translations.append(t)
    return torch.stack(crops), CropTransform(np.stack(scales), np.stack(translations))


def normalize(crops: torch.Tensor) -> torch.Tensor:
    """0..255 RGB -> ImageNet-normalised input."""
    mean = torch.tensor(IMAGENET_MEAN, device=crops.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=crops.device).view(1, 3, 1, 1)
    return (crops / 255.0 - mean) / std


def template_foreground_mask(boxes_in_crop: np.ndarray, stride: float, grid: tuple[int, int]) -> torch.Tensor:
    """(N, Hz, Wz) 0/1 mask of template cells covered by the target box (crop xyxy, end-exclusive)."""
    hz, wz = grid
    cells = rasterize(boxes_in_crop / stride).astype(np.int64)
    cells = np.clip(cells, 0, [wz, hz, wz, hz])
    mask = torch.zeros(len(cells), hz, wz, dtype=torch.long)
    for i, (x1, y1, x2, y2) in enumerate(cells):
        mask[i, y1:y2, x1:x2] = 1
    return mask


def frame_mean_color(frame: torch.Tensor) -> torch.Tensor:
    """Per-channel mean (0..255) of a (H, W, 3) uint8 frame: the padding colour of every later crop."""
    return frame.float().mean(dim=(0, 1))
