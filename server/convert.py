"""Protobuf at the edge: results and track info built from plain data, timestamps, and request fields."""

from __future__ import annotations

import time

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from lorat.v1 import tracker_pb2 as pb

from .tracks import PendingFrame, Track, box_to_proto

STATUS_NAMES = {v: k for k, v in pb.TrackStatus.items()}
_SOURCE_STATES = {"connecting": pb.SOURCE_CONNECTING, "running": pb.SOURCE_RUNNING,
                  "reconnecting": pb.SOURCE_RECONNECTING, "failed": pb.SOURCE_FAILED}


def ts(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    out = Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def result(track: Track, frame: PendingFrame | None, status: int, box_xyxy: np.ndarray, confidence: float,
           drop_reason: str = "", message: str = "") -> pb.TrackResult:
    return pb.TrackResult(
        track_id=track.track_id,
        frame_number=frame.frame_number if frame is not None else track.frames_received,
        source_pts=frame.pts if frame is not None else 0,
        capture_time=ts(frame.capture_time) if frame is not None else None,
        receive_time=ts(frame.receive_time) if frame is not None else None,
        publish_time=ts(time.time()),
        box=box_to_proto(box_xyxy), confidence=confidence, status=status, drop_reason=drop_reason,
        message=message, model_id=track.model_id)


def info(track: Track, owner: str) -> pb.TrackInfo:
    if track.source == "push":
        source_state = pb.SOURCE_PUSH if track.status in (pb.TRACKING, pb.LOST) else pb.SOURCE_STOPPED
    else:
        name = getattr(getattr(track.source_obj, "state", None), "value", "stopped")
        source_state = _SOURCE_STATES.get(name, pb.SOURCE_STOPPED)
    return pb.TrackInfo(
        track_id=track.track_id, status=track.status, source_state=source_state, source=track.source,
        model_id=track.model_id, options=track.options.to_proto(), last_result=track.last_result,
        frames_processed=track.frames_processed, frames_dropped=dict(track.dropped),
        created_time=ts(track.created_time), owner=owner, message=track.message, labels=track.labels)


def capture_time(frame: pb.Frame) -> float | None:
    """The caller's capture time in epoch seconds; None when unset. Range-checked by `limits`."""
    if frame.HasField("capture_time"):
        return frame.capture_time.seconds + frame.capture_time.nanos / 1e9
    return None


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, str(status))
