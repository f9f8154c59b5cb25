"""JSON shapes of the console API (docs/console.md): tracks and results as the page shows them."""

from __future__ import annotations

import time
from typing import Any

from lorat.v1 import tracker_pb2 as pb


def _seconds(ts: Any) -> float | None:
    return ts.ToNanoseconds() / 1e9 if ts is not None and (ts.seconds or ts.nanos) else None


def result_json(r: pb.TrackResult) -> dict[str, Any]:
    return {"track_id": r.track_id, "frame_number": r.frame_number,
            "box": [r.box.x, r.box.y, r.box.width, r.box.height], "confidence": round(float(r.confidence), 5),
            "status": pb.TrackStatus.Name(r.status), "drop_reason": r.drop_reason, "message": r.message,
            "publish_time": _seconds(r.publish_time)}


class RateMeter:
    """Frames/s per track from successive frames_processed counts (over the last few seconds)."""

    def __init__(self, window_s: float = 3.0) -> None:
        self.window_s = window_s
        self._samples: dict[str, list[tuple[float, int]]] = {}

    def rate(self, track_id: str, processed: int, now: float) -> float:
        samples = self._samples.setdefault(track_id, [])
        samples.append((now, processed))
        while len(samples) > 2 and now - samples[1][0] >= self.window_s:
            samples.pop(0)
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 - t0 > 0.2 else 0.0

    def keep(self, track_ids: set[str]) -> None:
        for gone in set(self._samples) - track_ids:
            del self._samples[gone]


def track_json(info: pb.TrackInfo, fps: float, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    last = info.last_result if info.HasField("last_result") else None
    age = None
    if last is not None:
        published = _seconds(last.publish_time)
        origin = _seconds(last.capture_time) or _seconds(last.receive_time)
        if published is not None and origin is not None:
            age = round(max(0.0, published - origin) * 1000, 1)
    return {
        "track_id": info.track_id, "source": info.labels.get("console.file") or info.source,
        "status": pb.TrackStatus.Name(info.status),
        "result_status": pb.TrackStatus.Name(last.status) if last is not None else None,
        "source_state": pb.SourceState.Name(info.source_state), "model": info.model_id,
        "frames_processed": info.frames_processed, "fps": round(fps, 2), "frame_age_ms": age,
        "last_result_s": round(now - _seconds(last.publish_time), 2) if last and last.publish_time.seconds else None,
        "confidence": round(float(last.confidence), 4) if last is not None else None,
        "frame_number": last.frame_number if last is not None else None,
        "box": [last.box.x, last.box.y, last.box.width, last.box.height] if last is not None else None,
        "drops": int(sum(info.frames_dropped.values())), "drops_by_reason": dict(info.frames_dropped),
        "labels": dict(info.labels), "message": info.message,
    }
