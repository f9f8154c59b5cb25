"""Typed results: small dataclasses converted from the wire messages, so callers never touch protobuf."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lorat.v1 import tracker_pb2 as pb


@dataclass(frozen=True)
class Box:
    """A box in pixels: top-left corner, width, height."""

    x: float
    y: float
    w: float
    h: float

    @classmethod
    def of(cls, box: Box | Sequence[float]) -> Box:
        """Accept a Box or any (x, y, w, h) sequence; reject what cannot be a box."""
        if isinstance(box, Box):
            return box
        try:
            x, y, w, h = (float(v) for v in box)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a box is four numbers x, y, w, h; got {box!r}") from exc
        return cls(x, y, w, h)

    @classmethod
    def parse(cls, text: str) -> Box:
        """Parse "x,y,w,h" (the CLI's --box)."""
        return cls.of(text.replace(" ", "").split(","))

    def to_proto(self) -> pb.Box:
        return pb.Box(x=self.x, y=self.y, width=self.w, height=self.h)

    @classmethod
    def from_proto(cls, m: pb.Box) -> Box:
        return cls(m.x, m.y, m.width, m.height)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)


def _time(ts: Any) -> float | None:
    """A protobuf Timestamp as Unix seconds, None when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.seconds + ts.nanos / 1e9


@dataclass(frozen=True)
class TrackResult:
    """One frame's outcome. ``status``: TRACKING, LOST (a box, but the confidence stayed below the server's
    --lost-confidence for --lost-frames frames), DROPPED, CONNECTING, RECONNECTING, MOVED, STOPPED, FAILED."""

    track_id: str
    frame_number: int
    box: Box
    confidence: float
    status: str
    source_pts: int = 0
    capture_time: float | None = None
    receive_time: float | None = None
    publish_time: float | None = None
    drop_reason: str = ""
    message: str = ""
    model_id: str = ""

    @property
    def tracking(self) -> bool:
        return self.status == "TRACKING"

    @property
    def latency(self) -> float | None:
        """publish_time - capture_time (or receive_time), the end-to-end age of this result."""
        start = self.capture_time if self.capture_time is not None else self.receive_time
        if start is None or self.publish_time is None:
            return None
        return self.publish_time - start

    @classmethod
    def from_proto(cls, m: pb.TrackResult) -> TrackResult:
        return cls(
            track_id=m.track_id,
            frame_number=int(m.frame_number),
            box=Box.from_proto(m.box),
            confidence=float(m.confidence),
            status=pb.TrackStatus.Name(m.status),
            source_pts=int(m.source_pts),
            capture_time=_time(m.capture_time),
            receive_time=_time(m.receive_time),
            publish_time=_time(m.publish_time),
            drop_reason=m.drop_reason,
            message=m.message,
            model_id=m.model_id,
        )


@dataclass(frozen=True)
class TrackInfo:
    """What the server knows about a track (GetTrack / ListTracks / StopTrack)."""

    track_id: str
    status: str
    source_state: str  # PUSH, CONNECTING, RUNNING, RECONNECTING, FAILED, STOPPED
    source: str
    model_id: str
    last_result: TrackResult | None
    frames_processed: int
    frames_dropped: dict[str, int] = field(default_factory=dict)
    created_time: float | None = None
    owner: str = ""
    message: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, m: pb.TrackInfo) -> TrackInfo:
        return cls(
            track_id=m.track_id,
            status=pb.TrackStatus.Name(m.status),
            source_state=pb.SourceState.Name(m.source_state).removeprefix("SOURCE_"),
            source=m.source,
            model_id=m.model_id,
            last_result=TrackResult.from_proto(m.last_result) if m.HasField("last_result") else None,
            frames_processed=int(m.frames_processed),
            frames_dropped={k: int(v) for k, v in m.frames_dropped.items()},
            created_time=_time(m.created_time),
            owner=m.owner,
            message=m.message,
            labels=dict(m.labels),
        )


@dataclass(frozen=True)
class StartedTrack:
    """StartTrack's answer: the track id and (push tracks) the frame-0 result."""

    track_id: str
    first_result: TrackResult | None
