"""Proposals for the real evaluation set's ground truth, and contact sheets to check them by eye.

    python bench/real_annotate.py propose NAME      # writes bench/data/real/NAME.txt (every `every`-th frame)
    python bench/real_annotate.py sheet NAME OUT.png # the annotated frames, zoomed, with their boxes

Proposals are semi-automatic and only a starting point: `fg` (static camera: vtest.avi) follows the
target's foreground blob against the median background, falling back to template matching while the blob
merges with another person; `ncc` follows a template by normalised cross-correlation (refreshed every
frame from the previous box). Every proposed box was then looked at in the sheets and corrected by hand
where it was off (the .txt files are the checked result; see bench/data/real/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.real_set import DATA, load_spec, read_video_frames, write_annotations


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _foreground(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    mask = (np.abs(frame.astype(np.int16) - background).sum(2) > 45).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 5), np.uint8))


def _blobs(mask: np.ndarray) -> list[np.ndarray]:
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    return [np.array(s[:4], float) for s in stats[1:] if s[4] > 120]


def _match(frame: np.ndarray, template: np.ndarray, around: np.ndarray, pad: int) -> np.ndarray:
    h, w = frame.shape[:2]
    x0, y0 = int(max(around[0] - pad, 0)), int(max(around[1] - pad, 0))
    x1, y1 = int(min(around[0] + around[2] + pad, w)), int(min(around[1] + around[3] + pad, h))
    window = frame[y0:y1, x0:x1]
    if window.shape[0] < template.shape[0] or window.shape[1] < template.shape[1]:
        return around.copy()
    _, _, _, loc = cv2.minMaxLoc(cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED))
    return np.array([x0 + loc[0], y0 + loc[1], template.shape[1], template.shape[0]], float)


def _crop(frame: np.ndarray, b: np.ndarray) -> np.ndarray:
    return frame[int(b[1]):int(b[1] + b[3]), int(b[0]):int(b[0] + b[2])].copy()


def tighten(frame: np.ndarray, background: np.ndarray, b: np.ndarray, threshold: int = 100) -> np.ndarray:
    """Shrink a box to the strong foreground inside it (the loose blob mask also takes in shadows)."""
    x, y, w, h = (int(round(v)) for v in b)
    strong = np.abs(frame[y:y + h, x:x + w].astype(np.int16) - background[y:y + h, x:x + w]).sum(2) > threshold
    cols, rows = np.flatnonzero(strong.sum(0) >= 3), np.flatnonzero(strong.sum(1) >= 2)
    if len(cols) < 4 or len(rows) < 4:
        return b
    return np.array([x + cols[0], y + rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1], float)


def propose(frames: list[np.ndarray], box: np.ndarray, mode: str, background: np.ndarray | None) -> np.ndarray:
    """One box per frame from `box` on frames[0]."""
    boxes = [box.copy()]
    b, v, size, template = box.copy(), np.zeros(2), box[2:].copy(), _crop(frames[0], box)
    for frame in frames[1:]:
        guess = b.copy()
        guess[:2] += v
        nb = _match(frame, template, guess, int(0.5 * max(size)))
        snapped = mode == "ncc"
        if mode == "fg" and background is not None:
            blobs = _blobs(_foreground(frame, background))
            if blobs:
                c = max(blobs, key=lambda s: _iou(s, nb))
                r = c[2:] / size
                if _iou(c, nb) > 0.45 and 0.6 < r[0] < 1.6 and 0.85 < r[1] < 1.18:
                    nb, snapped = c, True
        if snapped:
            size, template = nb[2:].copy(), _crop(frame, nb)
        v = 0.6 * v + 0.4 * (nb[:2] - b[:2])
        b = nb
        boxes.append(b.copy())
    return np.stack(boxes)


def sheet(frames: list[np.ndarray], indices: list[int], boxes: np.ndarray, label: str, tile: int = 200,
          per_row: int = 8) -> np.ndarray:
    """Zoomed crops around each box (green), frame number on top, for checking by eye."""
    tiles = []
    h, w = frames[0].shape[:2]
    for i, b in zip(indices, boxes):
        f = frames[i].copy()
        cv2.rectangle(f, (int(round(b[0])), int(round(b[1]))), (int(round(b[0] + b[2])) - 1,
                      int(round(b[1] + b[3])) - 1), (0, 255, 0), 1)
        side = int(min(max(b[2], b[3]) * 1.5, h, w))
        cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2
        x0, y0 = int(np.clip(cx - side / 2, 0, w - side)), int(np.clip(cy - side / 2, 0, h - side))
        t = cv2.resize(f[y0:y0 + side, x0:x0 + side], (tile, tile), interpolation=cv2.INTER_NEAREST)
        cv2.putText(t, f"{label} {i}", (3, 14), 0, 0.45, (0, 0, 255), 1)
        tiles.append(t)
    while len(tiles) % per_row:
        tiles.append(np.zeros((tile, tile, 3), np.uint8))
    return np.vstack([np.hstack(tiles[k:k + per_row]) for k in range(0, len(tiles), per_row)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["propose", "sheet"])
    parser.add_argument("name")
    parser.add_argument("out", nargs="?")
    args = parser.parse_args(argv)
    spec = load_spec()[args.name]
    frames = read_video_frames(spec["video"])
    if args.action == "propose":
        if spec["propose"] not in ("fg", "ncc"):
            raise SystemExit(f"{args.name} is annotated by hand ({spec['propose']}): nothing to propose")
        background = np.median(np.stack(frames[::8]), 0).astype(np.uint8) if spec["propose"] == "fg" else None
        first, last, every = spec["first"], spec["last"], spec["every"]
        boxes = propose(frames[first:last + 1], np.array(spec["init"], float), spec["propose"], background)
        keep = list(range(0, last - first + 1, every))
        if background is not None:
            for k in keep:
                boxes[k] = tighten(frames[first + k], background, boxes[k])
        write_annotations(DATA / f"{args.name}.txt", [first + k for k in keep], boxes[keep])
        return 0
    from bench.real_set import read_annotations

    indices, boxes = read_annotations(DATA / f"{args.name}.txt")
    cv2.imwrite(args.out, sheet(frames, indices, boxes, args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
