"""Loss and validation-AUC curves as a PNG, drawn with Pillow (matplotlib is not a dependency)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

W, H, MARGIN = 900, 360, 50


def _panel(draw: ImageDraw.ImageDraw, x0: int, title: str, xs: Sequence[float], ys: Sequence[float],
           color: tuple[int, int, int], y_range: tuple[float, float] | None = None) -> None:
    pw, ph = W // 2 - MARGIN - 10, H - 2 * MARGIN
    draw.rectangle([x0, MARGIN, x0 + pw, MARGIN + ph], outline=(0, 0, 0))
    draw.text((x0, 12), title, fill=(0, 0, 0))
    if len(xs) == 0:
        draw.text((x0 + 10, MARGIN + 10), "no data", fill=(120, 120, 120))
        return
    x_lo, x_hi = float(min(xs)), float(max(xs))
    y_lo, y_hi = y_range if y_range else (float(min(ys)), float(max(ys)))
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    y_hi = y_hi if y_hi > y_lo else y_lo + 1
    pts = [(x0 + (x - x_lo) / (x_hi - x_lo) * pw, MARGIN + ph - (y - y_lo) / (y_hi - y_lo) * ph)
           for x, y in zip(xs, ys)]
    if len(pts) == 1:
        draw.ellipse([pts[0][0] - 3, pts[0][1] - 3, pts[0][0] + 3, pts[0][1] + 3], fill=color)
    else:
        draw.line(pts, fill=color, width=2)
        for p in pts if len(pts) < 40 else []:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=color)
    draw.text((x0 - 45, MARGIN - 5), f"{y_hi:.3g}", fill=(0, 0, 0))
    draw.text((x0 - 45, MARGIN + ph - 10), f"{y_lo:.3g}", fill=(0, 0, 0))
    draw.text((x0, MARGIN + ph + 8), f"step {x_lo:.0f}", fill=(0, 0, 0))
    draw.text((x0 + pw - 70, MARGIN + ph + 8), f"step {x_hi:.0f}", fill=(0, 0, 0))


def smooth(values: Sequence[float], window: int = 10) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if len(v) < window:
        return v
    return np.convolve(v, np.ones(window) / window, mode="valid")


def plot_curves(path: str | Path, loss_steps: Sequence[float], losses: Sequence[float],
                val_steps: Sequence[float], val_auc: Sequence[float], title: str = "") -> Path:
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    sm = smooth(losses)
    offset = len(losses) - len(sm)
    _panel(draw, MARGIN, f"{title} training loss (smoothed)", list(loss_steps)[offset:], list(sm), (200, 40, 40))
    _panel(draw, W // 2 + MARGIN, f"{title} validation success AUC", val_steps, val_auc, (40, 90, 200),
           (0.0, 1.0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
