"""Compact binary layout for template tokens (never pickle).

Layout (little-endian):
    magic   4s   b"LRTT"
    version u16  layout version (1)
    dtype   u8   1=float32 2=float16 3=bfloat16
    ndim    u8
    shape   ndim x u32
    idlen   u16  then `idlen` bytes of UTF-8 model id
    data    prod(shape) * itemsize raw bytes
"""

from __future__ import annotations

import struct

import numpy as np
import torch

MAGIC = b"LRTT"
VERSION = 1
_DTYPES = {1: torch.float32, 2: torch.float16, 3: torch.bfloat16}
_CODES = {v: k for k, v in _DTYPES.items()}
_ITEMSIZE = {1: 4, 2: 2, 3: 2}


class TokenFormatError(ValueError):
    """Stored bytes are not a token blob this server understands."""


def encode_tokens(tokens: torch.Tensor, model_id: str) -> bytes:
    code = _CODES.get(tokens.dtype)
    if code is None:
        raise TypeError(f"cannot store tokens of dtype {tokens.dtype}")
    mid = model_id.encode()
    t = tokens.detach().contiguous().cpu()
    raw = t.view(torch.int16).numpy().tobytes() if code == 3 else t.numpy().tobytes()
    header = struct.pack(f"<4sHBB{t.ndim}IH", MAGIC, VERSION, code, t.ndim, *t.shape, len(mid))
    return header + mid + raw


def decode_tokens(blob: bytes) -> tuple[torch.Tensor, str]:
    """-> (tokens, model_id); raises TokenFormatError on anything unexpected."""
    try:
        magic, version, code, ndim = struct.unpack_from("<4sHBB", blob, 0)
    except struct.error:
        raise TokenFormatError("token blob shorter than its header") from None
    if magic != MAGIC:
        raise TokenFormatError(f"bad magic {magic!r}")
    if version != VERSION:
        raise TokenFormatError(f"token layout version {version} is not supported (want {VERSION})")
    if code not in _DTYPES or not 1 <= ndim <= 4:
        raise TokenFormatError(f"bad dtype code {code} or ndim {ndim}")
    off = 8
    try:
        shape = struct.unpack_from(f"<{ndim}I", blob, off)
        off += 4 * ndim
        (idlen,) = struct.unpack_from("<H", blob, off)
    except struct.error:
        raise TokenFormatError("token blob shorter than its header") from None
    off += 2
    model_id = blob[off: off + idlen].decode("utf-8", errors="replace")
    off += idlen
    count = int(np.prod(shape))
    if len(blob) - off != count * _ITEMSIZE[code]:
        raise TokenFormatError(f"token blob holds {len(blob) - off} data bytes, shape {shape} needs "
                               f"{count * _ITEMSIZE[code]}")
    if code == 3:
        arr = np.frombuffer(blob, dtype="<i2", count=count, offset=off).copy()
        tensor = torch.from_numpy(arr).view(torch.bfloat16)
    else:
        arr = np.frombuffer(blob, dtype="<f4" if code == 1 else "<f2", count=count, offset=off).copy()
        tensor = torch.from_numpy(arr)
    return tensor.reshape(shape), model_id
