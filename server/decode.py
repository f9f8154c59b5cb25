"""Turn a pushed `Frame` message into an HxWx3 uint8 RGB array.

Pure functions plus one stateful `H264Decoder` per track; the service runs them in a thread pool so the
event loop never decodes. Every failure raises `DecodeError` (-> INVALID_ARGUMENT) or `FrameTooLarge`
(-> RESOURCE_EXHAUSTED) with a message a person can act on.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import cv2
import numpy as np
from lorat.v1 import tracker_pb2 as pb
from PIL import Image, UnidentifiedImageError


class DecodeError(ValueError):
    """The payload is not a frame we can decode."""


class FrameTooLarge(ValueError):
    """The frame is bigger than the server's configured limits."""


@dataclass(frozen=True)
class FrameLimits:
    max_width: int
    max_height: int

    def check(self, width: int, height: int) -> None:
        if width > self.max_width or height > self.max_height:
            raise FrameTooLarge(
                f"frame is {width}x{height}, over the server limit {self.max_width}x{self.max_height}")
        if width < 1 or height < 1:
            raise DecodeError(f"frame has no pixels ({width}x{height})")


def payload_kind(frame: pb.Frame) -> str:
    """'encoded' | 'raw' | 'h264' | '' (empty)."""
    return frame.WhichOneof("data") or ""


# bytes -> (H, W, 3) uint8 RGB tensor on the engine's GPU (nvJPEG; `BatchExecutor.jpeg_decoder`).
GpuJpeg = Callable[[bytes], Any]

# OpenCV decodes a JPEG straight into an RGB array (its libjpeg-turbo, the same pixels as PIL's: checked on
# baseline, progressive, 4:4:4/4:2:2/4:2:0 and greyscale files); PIL's path copies the frame three more times
# (convert, tobytes, np.array), which cost more than the decode itself. EXIF orientation is ignored, as PIL
# does. Needs OpenCV >= 4.10 (IMREAD_COLOR_RGB); older ones use PIL.
_CV_JPEG = (cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION) if hasattr(cv2, "IMREAD_COLOR_RGB") else None


def _cv_jpeg(data: bytes, width: int, height: int) -> np.ndarray | None:
    """A complete (EOI-terminated) RGB or greyscale JPEG decoded by OpenCV; None: let PIL do it (PIL
    refuses truncated files, which libjpeg would pad with grey)."""
    if _CV_JPEG is None or not data.endswith(b"\xff\xd9"):
        return None
    rgb = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _CV_JPEG)
    return rgb if rgb is not None and rgb.shape == (height, width, 3) else None


def decode_image(data: bytes, limits: FrameLimits, gpu_jpeg: GpuJpeg | None = None) -> np.ndarray:
    """JPEG or PNG bytes -> RGB array; dimensions are checked before pixels are decoded. With `gpu_jpeg`
    (the engine is on a CUDA device), a JPEG is decoded there instead and returned as a device tensor; a
    JPEG nvJPEG refuses (e.g. CMYK) is decoded on the CPU."""
    if not data:
        raise DecodeError("frame.encoded is empty")
    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in ("JPEG", "PNG"):
            raise DecodeError(f"frame.encoded must be JPEG or PNG, got {img.format}")
        limits.check(*img.size)
        if gpu_jpeg is not None and img.format == "JPEG":
            try:
                return gpu_jpeg(data)
            except Exception:  # nvJPEG refuses some JPEGs: the CPU decodes them
                pass
        if img.format == "JPEG" and img.mode in ("RGB", "L"):
            rgb = _cv_jpeg(data, *img.size)
            if rgb is not None:
                return rgb
        img.draft("RGB", img.size)
        rgb = np.array(img.convert("RGB"))
    except (DecodeError, FrameTooLarge):
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        # PIL's own message names the in-memory file (`<_io.BytesIO object at 0x...>`): say it plainly.
        why = "not a JPEG or PNG image" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise DecodeError(f"frame.encoded could not be decoded as JPEG/PNG: {why}") from None
    return rgb


def decode_raw(raw: pb.RawImage, limits: FrameLimits) -> np.ndarray:
    """Raw RGB24/BGR24 with an optional row stride -> contiguous RGB array."""
    if raw.format not in (pb.RawImage.RGB24, pb.RawImage.BGR24):
        raise DecodeError("frame.raw.format must be RGB24 or BGR24")
    width, height = int(raw.width), int(raw.height)
    limits.check(width, height)
    stride = int(raw.stride) or width * 3
    if stride < width * 3:
        raise DecodeError(f"frame.raw.stride {stride} is less than width*3 = {width * 3}")
    need = stride * (height - 1) + width * 3
    if len(raw.data) < need or len(raw.data) > stride * height:
        raise DecodeError(
            f"frame.raw.data has {len(raw.data)} bytes; a {width}x{height} image with stride {stride} "
            f"needs {stride * height} (or at least {need})")
    # A strided view over the bytes as sent (never padded to stride*height: a huge stride with one short
    # row must not allocate gigabytes); the copy below holds only the pixels.
    buf = np.frombuffer(raw.data, dtype=np.uint8)
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, width, 3), strides=(stride, 3, 1), writeable=False)
    if raw.format == pb.RawImage.BGR24:
        rows = rows[:, :, ::-1]
    return np.ascontiguousarray(rows)


class H264Decoder:
    """One H.264 decoder per track: access units must arrive in stream order."""

    def __init__(self) -> None:
        self._ctx = av.CodecContext.create("h264", "r")
        self._lock = threading.Lock()

    def decode(self, data: bytes, limits: FrameLimits) -> np.ndarray:
        if not data:
            raise DecodeError("frame.h264 is empty")
        with self._lock:
            try:
                frames = self._ctx.decode(av.Packet(data))
            except Exception as exc:
                raise DecodeError(f"frame.h264 could not be decoded: {exc}") from None
        if not frames:
            raise DecodeError("frame.h264 produced no picture (send a keyframe with SPS/PPS first, one "
                              "access unit per message)")
        frame = frames[-1]
        limits.check(frame.width, frame.height)
        return frame.to_ndarray(format="rgb24")

    def close(self) -> None:
        self._ctx = None  # type: ignore[assignment]


def decode_frame(frame: pb.Frame, limits: FrameLimits, h264: H264Decoder | None,
                 gpu_jpeg: GpuJpeg | None = None) -> np.ndarray:
    """Decode any `Frame` payload; `h264` is the track's decoder (required for h264 payloads); `gpu_jpeg`
    decodes JPEGs on the engine's GPU (see `decode_image`)."""
    kind = payload_kind(frame)
    if kind == "encoded":
        return decode_image(frame.encoded, limits, gpu_jpeg)
    if kind == "raw":
        return decode_raw(frame.raw, limits)
    if kind == "h264":
        if h264 is None:
            raise DecodeError("h264 frames need a track (its decoder holds the stream state)")
        return h264.decode(frame.h264, limits)
    raise DecodeError("frame has no data: set one of encoded, raw or h264")
