"""The authors' augmentation of training crops (run.yaml transform.augmentation), on 0..1 float CHW tensors.

- horizontal flip, p = 0.5, drawn separately for the template and the search crop (`joint: false`);
- colour jitter, brightness/contrast/saturation factors U(0.6, 1.4), in a random order, separately per crop
  (torchvision's formulas: brightness scales, contrast blends with the grey mean, saturation with the grey
  image; results clamped to [0, 1]);
- DeiT-III "3-augment", jointly on both crops: one of grayscale, solarize (PIL threshold 128), Gaussian
  blur with radius U(0.1, 2) (PIL), chosen uniformly, on every pair.
Boxes are xyxy in crop pixels and follow the flip.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter

from .config import AugmentOptions

GREY = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale


def grayscale(img: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(GREY, dtype=img.dtype).view(3, 1, 1)
    return (img * w).sum(0, keepdim=True).expand(3, -1, -1).clone()


def hflip(img: torch.Tensor, box: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    width = img.shape[-1]
    return img.flip(-1), np.array([width - box[2], box[1], width - box[0], box[3]])


def color_jitter(rng: np.random.Generator, img: torch.Tensor, strength: float) -> torch.Tensor:
    order = rng.permutation(4)
    lo, hi = max(1 - strength, 0.0), 1 + strength
    brightness, contrast, saturation = (float(rng.uniform(lo, hi)) for _ in range(3))
    for fn in order:
        if fn == 0:
            img = (img * brightness).clamp(0, 1)
        elif fn == 1:
            mean = grayscale(img)[0].mean()
            img = (img * contrast + mean * (1 - contrast)).clamp(0, 1)
        elif fn == 2:
            img = (img * saturation + grayscale(img) * (1 - saturation)).clamp(0, 1)
        # fn == 3: hue, not used by the recipe (factor 0)
    return img


def _to_pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray(img.mul(255).byte().permute(1, 2, 0).numpy(), mode="RGB")


def _from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def deit3(rng: np.random.Generator, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """One of grayscale / solarize / blur, the same for every image of the pair (as uint8 through PIL)."""
    choice = int(rng.choice(3))
    pils = [_to_pil(img) for img in images]
    if choice == 0:
        pils = [p.convert("L").convert("RGB") for p in pils]
    elif choice == 1:
        from PIL import ImageOps

        pils = [ImageOps.solarize(p) for p in pils]
    else:
        radius = float(rng.uniform(0.1, 2.0))
        pils = [p.filter(ImageFilter.GaussianBlur(radius=radius)) for p in pils]
    return [_from_pil(p) for p in pils]


def augment_pair(rng: np.random.Generator, template: torch.Tensor, z_box: np.ndarray, search: torch.Tensor,
                 x_box: np.ndarray, options: AugmentOptions
                 ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Flip, colour jitter, 3-augment, in the authors' order; images 0..1 CHW, boxes xyxy crop pixels."""
    if options.flip > 0:
        if rng.random() < options.flip:
            template, z_box = hflip(template, z_box)
        if rng.random() < options.flip:
            search, x_box = hflip(search, x_box)
    if options.color_jitter > 0:
        template = color_jitter(rng, template, options.color_jitter)
        search = color_jitter(rng, search, options.color_jitter)
    if options.deit3:
        template, search = deit3(rng, [template, search])
    return template, z_box, search, x_box
