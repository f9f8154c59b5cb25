"""The real-video evaluation set: OpenCV's sample videos (Debian `opencv-doc`) with boxes checked by eye.

Annotations live in `bench/data/real/` (`sequences.json`: which video, which frames, which target; one
`NAME.txt` per sequence: `frame,x,y,w,h` for every `every`-th frame). The videos are not committed: they
are read from the package cache that `python -m lorat_train.gather` fills (apt-get download + dpkg -x; set
LORAT_DATA to move it). Sequences are whole runs of consecutive frames (the tracker sees every frame);
only the annotated frames are scored (the others carry NaN ground truth, which the metrics skip).
These videos are never used for training.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "real"
VIDEO_DIR = "pkgs/opencv-doc/usr/share/doc/opencv-doc/examples/data"


def cache_dir() -> Path:
    return Path(os.environ.get("LORAT_DATA", "~/.cache/lorat-data")).expanduser()


def video_path(name: str) -> Path:
    path = cache_dir() / VIDEO_DIR / name
    if not path.is_file():
        from lorat_train.gather import gather

        gather(cache_dir())
    return path


@functools.lru_cache(maxsize=4)
def _read(name: str) -> tuple[np.ndarray, ...]:
    capture = cv2.VideoCapture(str(video_path(name)))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(frame))  # BGR, as OpenCV decodes
    if not frames:
        raise FileNotFoundError(f"could not decode {video_path(name)}")
    return tuple(frames)


def read_video_frames(name: str) -> list[np.ndarray]:
    """All frames of one video, BGR uint8 (cached)."""
    return list(_read(name))


def load_spec() -> dict[str, dict]:
    return {s["name"]: s for s in json.loads((DATA / "sequences.json").read_text())["sequences"]}


def read_annotations(path: Path) -> tuple[list[int], np.ndarray]:
    indices, boxes = [], []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            f, x, y, w, h = line.split(",")
            indices.append(int(f))
            boxes.append([float(x), float(y), float(w), float(h)])
    return indices, np.array(boxes, dtype=np.float64).reshape(-1, 4)


def write_annotations(path: Path, indices: list[int], boxes: np.ndarray) -> None:
    path.write_text("".join(f"{i},{b[0]:.0f},{b[1]:.0f},{b[2]:.0f},{b[3]:.0f}\n" for i, b in zip(indices, boxes)))


@dataclass
class RealSequence:
    """Frames first..last of a video (RGB, as the tracker takes them) with GT on annotated frames only."""

    name: str
    frames: list[np.ndarray]
    boxes: np.ndarray  # (N, 4) xywh, NaN where not annotated
    annotated: np.ndarray  # (N,) bool


def load_sequence(name: str) -> RealSequence:
    spec = load_spec()[name]
    first, last = spec["first"], spec["last"]
    frames = [np.ascontiguousarray(f[:, :, ::-1]) for f in _read(spec["video"])[first:last + 1]]
    indices, boxes = read_annotations(DATA / f"{name}.txt")
    gt = np.full((len(frames), 4), np.nan)
    for i, b in zip(indices, boxes):
        gt[i - first] = b
    if not np.all(np.isfinite(gt[0])):
        raise ValueError(f"{name}: frame {first} (the first) must be annotated")
    return RealSequence(name, frames, gt, np.all(np.isfinite(gt), axis=1))


def load_real_set() -> list[RealSequence]:
    return [load_sequence(name) for name in load_spec()]
