"""Rebuild an in-memory track from its Redis state (pure: no I/O), refusing state this server cannot
continue (other model, missing or unreadable template, ended track)."""

from __future__ import annotations

import collections
import time

from lorat.v1 import tracker_pb2 as pb

from .. import errors
from ..tracks import Options, Track, box_to_proto
from .adapter import decode_state
from .record import RecordFormatError
from .store import LAYOUT, StoredTrack


def track_from_stored(track_id: str, stored: StoredTrack, model_ids: tuple[str, ...]) -> Track:
    """The track as it was after its last stored frame; raises ServiceError(FAILED_PRECONDITION)."""
    meta = stored.meta
    if stored.layout > LAYOUT:  # a newer replica wrote it (rolling upgrade): refuse, never misread
        raise errors.precondition(f"track {track_id!r} is stored in data layout {stored.layout}; this server "
                                  f"reads layouts up to {LAYOUT}: serve it from an upgraded replica")
    if stored.status != "TRACKING":
        raise errors.precondition(f"track {track_id!r} is {stored.status or 'unknown'}; start a new track")
    model_id = str(meta.get("model_id"))
    if model_id not in model_ids:
        raise errors.precondition(f"track {track_id!r} was started with model {model_id!r}; "
                                  f"this server serves {', '.join(model_ids)}")
    if not stored.template:
        raise errors.precondition(f"track {track_id!r} has no template in Redis; start a new track")
    try:
        state, counters, template_model = decode_state(stored.template, stored.state)
    except (RecordFormatError, KeyError, TypeError, ValueError) as exc:
        raise errors.precondition(f"track {track_id!r}: stored state unreadable ({exc})") from None
    if template_model != model_id:
        raise errors.precondition(f"track {track_id!r}: stored template is for model {template_model!r}")
    try:
        size = meta.get("frame_size")
        track = Track(
            track_id=track_id, state=state, model_id=model_id, options=Options.from_dict(meta["options"]),
            source=str(meta["source"]), labels=dict(meta.get("labels", {})),
            created_time=float(meta.get("created_time", time.time())),
            frames_received=int(counters["frames_received"]), frames_processed=int(counters["frames_processed"]),
            dropped=collections.Counter(counters.get("dropped", {})), pull=meta.get("pull"),
            low_confidence_run=int(counters.get("low_confidence_run", 0)),
            last_push_id=str(counters.get("last_push_id", "")),
            frame_size=(int(size[0]), int(size[1])) if size else None, needs_full=False)
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.precondition(f"track {track_id!r}: stored state incomplete ({exc!r})") from None
    track.last_result = pb.TrackResult(
        track_id=track_id, frame_number=int(counters.get("last_frame_number", 0)),
        source_pts=int(counters.get("last_pts", 0)), box=box_to_proto(track.state.box_xyxy),
        confidence=float(counters.get("last_confidence", 0.0)), status=pb.TRACKING, model_id=model_id)
    return track
