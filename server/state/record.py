"""A generic binary record of named arrays plus JSON-able metadata (never pickle).

This is how engine state (ENGINE.md: `family.state_to_record(state) -> (arrays, meta)`) reaches Redis: the
server stores the record as bytes and gives it back to the family on another replica, so a new model
family needs no server change.

Layout (little-endian):
    magic    4s   b"LRTR"
    version  u16  layout version (1)
    metalen  u32  then `metalen` bytes of UTF-8 JSON (an object)
    count    u16  number of arrays, each:
        namelen u8, name (UTF-8), dtype u8 (see _DTYPES), ndim u8, shape ndim x u32, data (C order)
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

MAGIC = b"LRTR"
VERSION = 1
# code -> (numpy dtype of the stored bytes, logical name); bfloat16 travels as its raw 16 bits
_DTYPES: dict[int, tuple[str, str]] = {
    1: ("<f4", "float32"), 2: ("<f2", "float16"), 3: ("<u2", "bfloat16"), 4: ("<f8", "float64"),
    5: ("<i8", "int64"), 6: ("<i4", "int32"), 7: ("u1", "uint8"), 8: ("?", "bool"),
}
_CODES = {name: code for code, (_, name) in _DTYPES.items()}
MAX_NDIM = 8


class RecordFormatError(ValueError):
    """Bytes that are not a record this server understands."""


def _as_numpy(value: Any) -> tuple[np.ndarray, int]:
    """An array-like (numpy or torch) -> (C-ordered little-endian array of the stored bytes, dtype code)."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        t = value.detach().contiguous().cpu()
        name = str(t.dtype).replace("torch.", "")
        if name == "bfloat16":
            import torch

            return t.view(torch.int16).numpy().view("<u2"), _CODES["bfloat16"]
        value = t.numpy()
    arr = np.ascontiguousarray(value)
    name = arr.dtype.name
    if name not in _CODES or name == "bfloat16":
        raise TypeError(f"cannot store an array of dtype {arr.dtype}")
    code = _CODES[name]
    return arr.astype(_DTYPES[code][0], copy=False), code


def encode_record(arrays: dict[str, Any], meta: dict[str, Any]) -> bytes:
    meta_bytes = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()
    parts = [struct.pack("<4sHI", MAGIC, VERSION, len(meta_bytes)), meta_bytes, struct.pack("<H", len(arrays))]
    for name, value in arrays.items():
        arr, code = _as_numpy(value)
        raw_name = name.encode()
        if not 0 < len(raw_name) < 256 or arr.ndim > MAX_NDIM:
            raise ValueError(f"array name {name!r} or ndim {arr.ndim} out of range")
        parts.append(struct.pack(f"<B{len(raw_name)}sBB{arr.ndim}I", len(raw_name), raw_name, code, arr.ndim,
                                 *arr.shape))
        parts.append(arr.tobytes())
    return b"".join(parts)


def decode_record(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """-> (arrays, meta). bfloat16 arrays come back as uint16 bit patterns named in meta-free form:
    use `to_torch` to get the tensor back. Raises RecordFormatError on anything unexpected."""
    try:
        magic, version, metalen = struct.unpack_from("<4sHI", blob, 0)
        if magic != MAGIC:
            raise RecordFormatError(f"bad magic {magic!r}")
        if version != VERSION:
            raise RecordFormatError(f"record layout version {version} is not supported (want {VERSION})")
        off = 10
        meta = json.loads(blob[off: off + metalen])
        if not isinstance(meta, dict):
            raise RecordFormatError("record metadata is not a JSON object")
        off += metalen
        (count,) = struct.unpack_from("<H", blob, off)
        off += 2
        arrays: dict[str, np.ndarray] = {}
        for _ in range(count):
            (namelen,) = struct.unpack_from("<B", blob, off)
            off += 1
            name = blob[off: off + namelen].decode()
            off += namelen
            code, ndim = struct.unpack_from("<BB", blob, off)
            off += 2
            if code not in _DTYPES or ndim > MAX_NDIM:
                raise RecordFormatError(f"array {name!r}: bad dtype code {code} or ndim {ndim}")
            shape = struct.unpack_from(f"<{ndim}I", blob, off)
            off += 4 * ndim
            dtype = np.dtype(_DTYPES[code][0])
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if off + nbytes > len(blob):
                raise RecordFormatError(f"array {name!r} runs past the end of the record")
            arr = np.frombuffer(blob, dtype=dtype, count=nbytes // dtype.itemsize, offset=off).reshape(shape).copy()
            off += nbytes
            arrays[name] = arr
            if code == _CODES["bfloat16"]:
                meta.setdefault("_bfloat16", []).append(name)
        if off != len(blob):
            raise RecordFormatError(f"{len(blob) - off} trailing bytes after the last array")
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, RecordFormatError):
            raise
        raise RecordFormatError(f"unreadable record: {exc}") from None
    return arrays, meta


def to_torch(arrays: dict[str, np.ndarray], meta: dict[str, Any], name: str) -> Any:
    """The named array as a torch tensor, restoring bfloat16 from its bit pattern."""
    import torch

    arr = arrays[name]
    if name in meta.get("_bfloat16", ()):
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(arr)
