"""GetTrack for a track that no replica holds (its owner died and its lease lapsed, nobody has resumed it
yet): answered from its state in Redis instead of NOT_FOUND.

What it reports: the stored status (TRACKING for a live track waiting to be resumed -- a push track resumes
on its next frame at any replica, a camera track is adopted by a replica's orphan scan -- or STOPPED/FAILED
for an ended one within --ended-retention-s), `owner` empty (no server holds it), the last box, frame number,
confidence and pts of its last stored frame, its counters, options, labels and model, and a message saying
that no server holds it (while the lease of a server that died moments ago has not lapsed yet: `owner` is
that server and the message says it does not answer). Only the small per-frame state record is read (never
the template): one HGETALL and one GET, no model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from lorat.v1 import tracker_pb2 as pb

from .state.record import decode_record
from .state.store import StoredTrack
from .tracks import Options, box_to_proto
from .urlpolicy import redact

_STATUSES = dict(pb.TrackStatus.items())


def _status(name: str) -> int:
    return _STATUSES.get(name, pb.TRACK_STATUS_UNSPECIFIED)


def info_from_stored(track_id: str, stored: StoredTrack, holder: str = "") -> pb.TrackInfo:
    """The TrackInfo of a stored track no live server holds; raises ValueError/KeyError on unreadable state.
    `holder`: the instance whose lease has not lapsed yet although it does not answer (it died moments ago)."""
    meta: dict[str, Any] = stored.meta
    arrays, record = decode_record(stored.state)
    counters = record.get("server", {})
    status = _status(stored.status)
    model_id = str(meta.get("model_id", ""))
    last = pb.TrackResult(track_id=track_id, frame_number=int(counters.get("last_frame_number", 0)),
                          source_pts=int(counters.get("last_pts", 0)),
                          confidence=float(counters.get("last_confidence", 0.0)), status=status, model_id=model_id)
    if "box_xyxy" in arrays:
        last.box.CopyFrom(box_to_proto(np.asarray(arrays["box_xyxy"], np.float64)))
    source = redact(str(meta.get("source", "")))
    if source == "push":
        source_state = pb.SOURCE_PUSH if status == pb.TRACKING else pb.SOURCE_STOPPED
        waiting = "its next pushed frame resumes it on whichever server receives it"
    else:
        source_state = pb.SOURCE_RECONNECTING if status == pb.TRACKING else pb.SOURCE_STOPPED
        waiting = "a server adopts it and reconnects to its camera"
    if status != pb.TRACKING:
        message = "no server holds this track; it has ended (state kept for --ended-retention-s)"
    elif holder:
        message = (f"server {holder!r} holds this track's lease but does not answer; once the lease lapses, "
                   f"{waiting}")
    else:
        message = f"no server holds this track (its lease lapsed); {waiting}"
    created = Timestamp()
    created.FromNanoseconds(int(float(meta.get("created_time", 0.0)) * 1e9))
    options = Options.from_dict(meta["options"]).to_proto() if meta.get("options") else pb.TrackOptions()
    return pb.TrackInfo(
        track_id=track_id, status=status, source_state=source_state, source=source, model_id=model_id,
        options=options, last_result=last, frames_processed=int(counters.get("frames_processed", 0)),
        frames_dropped={str(k): int(v) for k, v in dict(counters.get("dropped", {})).items()},
        created_time=created, owner=holder, message=message,
        labels={str(k): str(v) for k, v in dict(meta.get("labels", {})).items()})
