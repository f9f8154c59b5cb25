"""Engine state <-> the generic record (named arrays + JSON metadata), split in two parts:

- the *template* part: large arrays that rarely change (LoRAT's template tokens), written when a track
  starts and whenever the family replaces them;
- the *state* part: everything else (box, padding colour, counters), written after every batch.

ENGINE.md: a model family gives `state_to_record(state) -> (arrays, meta)` and `state_from_record(arrays,
meta) -> state`. Until `lorat_infer.family` offers it, today's `TrackState` fields are mapped here; this
is the one place that knows them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .record import decode_record, encode_record, to_torch

TEMPLATE_MIN_BYTES = 4096  # arrays at least this big belong to the template part


def _family_api() -> Any:
    try:
        from lorat_infer import family  # ENGINE.md item 1-2 (issue 10); optional until it lands
    except ImportError:
        return None
    return family if hasattr(family, "state_to_record") and hasattr(family, "state_from_record") else None


def state_to_record(state: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    fam = _family_api()
    if fam is not None:
        return fam.state_to_record(state)
    return ({"template_tokens": state.template_tokens, "box_xyxy": np.asarray(state.box_xyxy, np.float64),
             "pad_color": np.asarray(state.pad_color, np.float32)},
            {"family": "lorat", "layout": 1, "frame_index": int(state.frame_index)})


def state_from_record(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Any:
    fam = _family_api()
    if fam is not None and meta.get("family") != "lorat-server-adapter":
        try:
            return fam.state_from_record(arrays, meta)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # fall through to today's layout
    import torch

    from lorat_infer import TrackState

    tokens = to_torch(arrays, meta, "template_tokens").to(torch.float32)
    return TrackState(template_tokens=tokens, box_xyxy=np.asarray(arrays["box_xyxy"], np.float64),
                      pad_color=np.asarray(arrays["pad_color"], np.float32),
                      frame_index=int(meta["frame_index"]))


def _nbytes(value: Any) -> int:
    if hasattr(value, "element_size"):
        return int(value.numel() * value.element_size())
    return int(np.asarray(value).nbytes)


def split(state: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """-> (template arrays, state arrays, meta)."""
    arrays, meta = state_to_record(state)
    big = {k: v for k, v in arrays.items() if _nbytes(v) >= TEMPLATE_MIN_BYTES}
    small = {k: v for k, v in arrays.items() if k not in big}
    return big, small, meta


def template_fingerprint(state: Any) -> tuple:
    """Identity of the template part: when it changes, the template must be written again."""
    big, _, _ = split(state)
    return tuple((k, id(v)) for k, v in sorted(big.items()))


def encode_template(state: Any, model_id: str) -> bytes:
    big, _, meta = split(state)
    return encode_record(big, {"model_id": model_id, "family": meta.get("family"), "layout": meta.get("layout")})


def encode_state(state: Any, counters: dict[str, Any]) -> bytes:
    """The per-batch record: the small arrays, the family's metadata and the server's counters."""
    _, small, meta = split(state)
    return encode_record(small, {**meta, "server": counters})


def decode_state(template_blob: bytes, state_blob: bytes) -> tuple[Any, dict[str, Any], str]:
    """-> (engine state, server counters, template model id); raises RecordFormatError/KeyError."""
    t_arrays, t_meta = decode_record(template_blob)
    s_arrays, s_meta = decode_record(state_blob)
    counters = s_meta.pop("server", {})
    arrays = {**t_arrays, **s_arrays}
    meta = {**s_meta, "_bfloat16": t_meta.get("_bfloat16", []) + s_meta.get("_bfloat16", [])}
    return state_from_record(arrays, meta), counters, str(t_meta.get("model_id", ""))
