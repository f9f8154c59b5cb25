"""Decode where the frames will be used: nvJPEG (torchvision) and FFmpeg's CUDA decoder (PyAV) on a GPU.

Both are chosen only when the engine runs on a CUDA device and the library offers them; otherwise the
caller keeps its CPU decoder and a log line says why (once per reason). No gRPC or Redis here: the server
asks its executor for these hooks and wires them into its own decoding.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)


@functools.cache
def _say_once(message: str) -> None:
    log.info(message)


def jpeg_decoder(device: torch.device) -> Callable[[bytes], torch.Tensor] | None:
    """bytes -> (H, W, 3) uint8 RGB tensor on `device`, decoded by nvJPEG; None (CPU decoding) when the
    device is not CUDA or torchvision's GPU decoder is unavailable."""
    if device.type != "cuda":
        return None
    try:
        from torchvision.io import ImageReadMode, decode_jpeg

        probe = _tiny_jpeg()
        decode_jpeg(torch.frombuffer(bytearray(probe), dtype=torch.uint8), mode=ImageReadMode.RGB,
                    device=device)
    except Exception as exc:  # no nvJPEG build, no image extension, driver trouble: decode on the CPU
        _say_once(f"GPU JPEG decoding unavailable ({type(exc).__name__}: {exc}); decoding JPEG on the CPU")
        return None
    _say_once(f"decoding JPEG frames on {device} (nvJPEG)")

    def decode(data: bytes) -> torch.Tensor:
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        chw = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
        return chw.permute(1, 2, 0).contiguous()

    return decode


def video_hwaccel(device: torch.device) -> Any | None:
    """A PyAV `HWAccel` for `av.open(..., hwaccel=...)` decoding H.264 on the GPU (frames come back as
    host arrays), or None when the device is not CUDA or FFmpeg has no CUDA decoder."""
    if device.type != "cuda":
        return None
    try:
        from av.codec.hwaccel import HWAccel, hwdevices_available

        if "cuda" not in hwdevices_available():
            _say_once("FFmpeg offers no CUDA decoder; decoding video on the CPU")
            return None
        index = device.index if device.index is not None else torch.cuda.current_device()
        accel = HWAccel(device_type="cuda", device=str(index), allow_software_fallback=True)
    except Exception as exc:
        _say_once(f"hardware video decoding unavailable ({type(exc).__name__}: {exc}); decoding video on the CPU")
        return None
    _say_once(f"decoding video on {device} (FFmpeg CUDA hwaccel, CPU fallback per stream)")
    return accel


def _tiny_jpeg() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()
