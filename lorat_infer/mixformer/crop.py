"""The authors' crop (`sample_target` in lib/train/data/processing_utils.py at commit 1041438), with OpenCV.

Reproduced on purpose, including its quirks, so that boxes match the authors' tracker:
- the crop side is `ceil(sqrt(w * h) * factor)` and the corner uses Python's `round` (half to even);
- the right/bottom padding is one pixel too large (`x2 - W + 1`), so whenever a crop reaches the image's
  last column or row, that column or row is replaced by black;
- padding is black (0), and the resize is `cv2.resize(..., INTER_LINEAR)` on uint8, whose fixed-point
  bilinear rounding torch's interpolate does not reproduce.
Where the authors' slicing would produce a wrong-sized or empty array (a crop entirely outside the frame,
which their box clipping prevents), we return an all-black crop instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_geometry(box_xywh: Sequence[float], factor: float) -> tuple[int, int, int]:
    """(x1, y1, side) of the square crop around an (x, y, w, h) box, as the authors compute it."""
    x, y, w, h = (float(v) for v in box_xywh)
    side = math.ceil(math.sqrt(w * h) * factor)
    if side < 1:
        raise ValueError(f"box {list(box_xywh)} is too small to crop")
    x1 = int(round(x + 0.5 * w - side * 0.5))
    y1 = int(round(y + 0.5 * h - side * 0.5))
    return x1, y1, side


def sample_target(image: np.ndarray, box_xywh: Sequence[float], factor: float,
                  output_size: int) -> tuple[np.ndarray, float]:
    """Square crop of `factor` times the box's geometric-mean side, resized to `output_size`.

    Returns the (output_size, output_size, 3) uint8 crop and `resize_factor = output_size / side`.
    """
    x1, y1, side = crop_geometry(box_xywh, factor)
    x2, y2 = x1 + side, y1 + side
    height, width = image.shape[:2]
    x1_pad, y1_pad = max(0, -x1), max(0, -y1)
    x2_pad, y2_pad = max(x2 - width + 1, 0), max(y2 - height + 1, 0)  # the authors' extra pixel
    canvas = np.zeros((side, side, image.shape[2]), dtype=image.dtype)
    src_x1, src_x2 = x1 + x1_pad, x2 - x2_pad
    src_y1, src_y2 = y1 + y1_pad, y2 - y2_pad
    if src_x1 < src_x2 and src_y1 < src_y2:
        canvas[y1_pad : y1_pad + src_y2 - src_y1, x1_pad : x1_pad + src_x2 - src_x1] = (
            image[src_y1:src_y2, src_x1:src_x2])
    crop = cv2.resize(canvas, (output_size, output_size))
    return crop, output_size / side


def to_input(crops: Sequence[np.ndarray] | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 HxWx3 crops -> ImageNet-normalised (N, 3, H, W) float32, as the authors' Preprocessor."""
    arr = np.ascontiguousarray(np.stack(list(crops)) if not isinstance(crops, np.ndarray) else crops)
    if arr.ndim == 3:
        arr = arr[None]
    x = torch.from_numpy(arr).to(device).float().permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std
