"""Rebuild an in-memory track from its Redis state (pure: no I/O), refusing state this server cannot
continue (other model, missing or unreadable template, stopped track)."""

from __future__ import annotations

import collections
import time

import numpy as np
import torch
from lorat.v1 import tracker_pb2 as pb

from lorat_infer import TrackState

from .. import errors
from ..tracks import Options, Track, box_to_proto
from .codec import TokenFormatError, decode_tokens
from .store import StoredTrack


def track_from_stored(track_id: str, stored: StoredTrack, model_id: str) -> Track:
    """The track as it was after its last stored frame; raises ServiceError(FAILED_PRECONDITION)."""
    meta, state = stored.meta, stored.state
    if state.get("status") != "TRACKING":
        raise errors.precondition(f"track {track_id!r} is {state.get('status')}; start a new track")
    if meta.get("model_id") != model_id:
        raise errors.precondition(f"track {track_id!r} was started with model {meta.get('model_id')!r}; "
                                  f"this server serves {model_id!r}")
    if stored.tokens is None:
        raise errors.precondition(f"track {track_id!r} has no template in Redis; start a new track")
    try:
        tokens, tokens_model = decode_tokens(stored.tokens)
    except TokenFormatError as exc:
        raise errors.precondition(f"track {track_id!r}: stored template unreadable ({exc})") from None
    if tokens_model != model_id:
        raise errors.precondition(f"track {track_id!r}: stored template is for model {tokens_model!r}")
    try:
        track = Track(
            track_id=track_id,
            state=TrackState(template_tokens=tokens.to(torch.float32),
                             box_xyxy=np.array(state["box_xyxy"], dtype=np.float64),
                             pad_color=np.array(state["pad_color"], dtype=np.float32),
                             frame_index=int(state["frame_index"])),
            model_id=model_id, options=Options.from_dict(meta["options"]), source=str(meta["source"]),
            labels=dict(meta.get("labels", {})), created_time=float(meta.get("created_time", time.time())),
            frames_received=int(state["frames_received"]), frames_processed=int(state["frames_processed"]),
            dropped=collections.Counter(state.get("dropped", {})), pull=meta.get("pull"))
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.precondition(f"track {track_id!r}: stored state incomplete ({exc!r})") from None
    if meta.get("frame_size"):
        track.frame_size = (int(meta["frame_size"][0]), int(meta["frame_size"][1]))
    track.last_result = pb.TrackResult(
        track_id=track_id, frame_number=int(state.get("last_frame_number", 0)),
        source_pts=int(state.get("last_pts", 0)), box=box_to_proto(track.state.box_xyxy),
        confidence=float(state.get("last_confidence", 0.0)), status=pb.TRACKING, model_id=model_id)
    return track
