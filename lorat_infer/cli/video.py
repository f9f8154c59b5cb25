"""Frames in (a video file via PyAV, or a folder of images) and a rendered H.264 video out."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..eval.datasets import IMAGE_SUFFIXES, load_frame


class SourceError(ValueError):
    """An input that is neither a readable video nor a folder of images."""


class FrameSource:
    """Iterates HxWx3 uint8 RGB frames of a video file or an image folder (LaSOT `img/` is found too)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.images: list[Path] | None = None
        self.fps = 30.0
        if self.path.is_dir():
            folder = self.path / "img" if (self.path / "img").is_dir() else self.path
            self.images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.images:
                raise SourceError(f"{self.path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            self.length: int | None = len(self.images)
        elif self.path.is_file():
            try:
                with av.open(str(self.path)) as container:
                    if not container.streams.video:
                        raise SourceError(f"{self.path}: no video stream")
                    stream = container.streams.video[0]
                    self.length = stream.frames or None
                    if stream.average_rate:
                        self.fps = float(stream.average_rate)
            except av.error.FFmpegError as exc:
                raise SourceError(f"{self.path}: cannot open as video: {exc}") from exc
        else:
            raise SourceError(f"{self.path}: no such file or folder")

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.images is not None:
            for p in self.images:
                yield load_frame(p)
            return
        with av.open(str(self.path)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")


class VideoWriter:
    """H.264 (yuv420p) mp4 writer; odd frame sizes are padded by one pixel as the codec needs even ones."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, crf: int = 20) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if self.size is None:
            self.size = (w + w % 2, h + h % 2)
            self.stream.width, self.stream.height = self.size
        if (w + w % 2, h + h % 2) != self.size:
            raise ValueError(f"frame size {w}x{h} differs from the first frame's {self.size}")
        if w % 2 or h % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        packet = self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
        self.container.mux(packet)

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PRED_COLOR = (0, 255, 0)  # the prediction is green in lorat-track, lorat-client and the web console
GT_COLOR = (40, 140, 255)


def draw_box(frame: np.ndarray, box_xywh: np.ndarray, score: float | None = None,
             gt_xywh: np.ndarray | None = None, frame_index: int | None = None) -> np.ndarray:
    """A copy of `frame` with the predicted box (green) and its score, and the ground truth (blue) if given;
    `frame_index` counts from 0, like the API's frame numbers."""
    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(frame.shape[:2]) / 160))
    font = ImageFont.load_default()
    if gt_xywh is not None and np.all(np.isfinite(gt_xywh)) and gt_xywh[2] > 0 and gt_xywh[3] > 0:
        x, y, w, h = (float(v) for v in gt_xywh)
        draw.rectangle([x, y, x + w, y + h], outline=GT_COLOR, width=max(1, width - 1))
    x, y, w, h = (float(v) for v in box_xywh)
    draw.rectangle([x, y, x + w, y + h], outline=PRED_COLOR, width=width)
    label = [] if frame_index is None else [f"#{frame_index}"]
    if score is not None:
        label.append(f"{score:.2f}")
    if label:
        text = " ".join(label)
        tx, ty = max(x, 0), max(y - 14, 0)
        bbox = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle(bbox, fill=(0, 0, 0))
        draw.text((tx, ty), text, fill=PRED_COLOR, font=font)
    return np.asarray(img)
