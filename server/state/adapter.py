"""Engine state <-> the generic record (named arrays + JSON metadata), in two parts:

- the *template* record: the family's whole record (ENGINE.md: `family.state_to_record(state) -> (arrays,
  meta)`), written when a track starts and whenever a large part of the state (LoRAT's template tokens,
  MixFormerV2's online template) is replaced -- detected by object identity, so nothing is copied per frame;
- the *state* record, after every batch: the state's small fields (box, padding colour, frame index ...)
  read straight from the state object (no device copy of large tensors), plus the server's counters.

Resuming: `family.state_from_record(template)`, then the small fields of the last state record on top.
This is the one place that knows how engine state is laid out; a new family needs no change here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .record import decode_record, encode_record, to_torch

LARGE_BYTES = 256  # fields at least this big belong to the template record (a box is 32 bytes)


def _family_api() -> Any:
    try:
        from lorat_infer import family  # ENGINE.md item 1-2 (issue 10)
    except ImportError:
        return None
    return family if hasattr(family, "state_to_record") and hasattr(family, "state_from_record") else None


def state_to_record(state: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    fam = _family_api()
    if fam is not None:
        return fam.state_to_record(state)
    return ({"template_tokens": state.template_tokens, "box_xyxy": np.asarray(state.box_xyxy, np.float64),
             "pad_color": np.asarray(state.pad_color, np.float32)},
            {"family": "lorat-server-adapter", "layout": 1, "frame_index": int(state.frame_index)})


def state_from_record(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Any:
    fam = _family_api()
    if fam is not None and meta.get("family") != "lorat-server-adapter":
        return fam.state_from_record(arrays, meta)
    import torch

    from lorat_infer import TrackState

    tokens = to_torch(arrays, meta, "template_tokens").to(torch.float32)
    return TrackState(template_tokens=tokens, box_xyxy=np.asarray(arrays["box_xyxy"], np.float64),
                      pad_color=np.asarray(arrays["pad_color"], np.float32), frame_index=int(meta["frame_index"]))


def _fields(state: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(state):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return dict(vars(state))


def _nbytes(value: Any) -> int:
    if hasattr(value, "element_size") and hasattr(value, "numel"):
        return int(value.numel() * value.element_size())
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return 0


def _split(state: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], dict[str, Any]]:
    """-> (large fields, small array fields, kinds of the small ones, scalar fields)."""
    large: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    scalars: dict[str, Any] = {}
    for name, value in _fields(state).items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            scalars[name] = value
        elif isinstance(value, np.ndarray) and value.nbytes < LARGE_BYTES:
            arrays[name], kinds[name] = value, "numpy"
        elif hasattr(value, "detach") and _nbytes(value) < LARGE_BYTES:
            arrays[name], kinds[name] = value, "torch"
        else:
            large[name] = value
    return large, arrays, kinds, scalars


def template_fingerprint(state: Any) -> tuple:
    """Identity of the large fields: when one is replaced, the template record must be written again."""
    large, _, _, _ = _split(state)
    return tuple((name, id(value)) for name, value in sorted(large.items()))


def encode_template(state: Any, model_id: str) -> bytes:
    arrays, meta = state_to_record(state)
    return encode_record(arrays, {**meta, "model_id": model_id})


def encode_state(state: Any, counters: dict[str, Any]) -> bytes:
    """The per-batch record: the state's small fields and the server's counters (no large copies)."""
    _, arrays, kinds, scalars = _split(state)
    return encode_record(arrays, {"kinds": kinds, "scalars": scalars, "server": counters})


def decode_state(template_blob: bytes, state_blob: bytes) -> tuple[Any, dict[str, Any], str]:
    """-> (engine state, server counters, template model id); raises RecordFormatError/KeyError/ValueError."""
    t_arrays, t_meta = decode_record(template_blob)
    model_id = str(t_meta.pop("model_id", ""))
    state = state_from_record(t_arrays, t_meta)
    s_arrays, s_meta = decode_record(state_blob)
    counters = s_meta["server"]
    updates: dict[str, Any] = dict(s_meta.get("scalars", {}))
    for name, kind in s_meta.get("kinds", {}).items():
        updates[name] = to_torch(s_arrays, s_meta, name) if kind == "torch" else s_arrays[name]
    known = set(_fields(state))
    updates = {k: v for k, v in updates.items() if k in known}
    if dataclasses.is_dataclass(state):
        state = dataclasses.replace(state, **updates)
    else:
        for k, v in updates.items():
            setattr(state, k, v)
    return state, counters, model_id
