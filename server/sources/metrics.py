"""Prometheus metrics of pulled (RTSP) sources, registered once in the default registry.

Per-track series carry a ``track_id`` label and are removed when the source stops (``forget``), so a
long-running server does not accumulate series of tracks that ended.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

SOURCE_STATES = ("connecting", "running", "reconnecting", "failed", "stopped")

SOURCE_STATE = Gauge(
    "lorat_source_state",
    "1 for the state a pulled source is in, 0 for the others.",
    ["track_id", "state"],
)
SOURCE_RECONNECTS = Counter(
    "lorat_source_reconnects_total",
    "Reconnection attempts of a pulled source after it failed, stalled or ended.",
    ["track_id"],
)
SOURCE_FRAMES = Counter(
    "lorat_source_frames_total",
    "Frames decoded from a pulled source.",
    ["track_id"],
)
SOURCE_FRAMES_DROPPED = Counter(
    "lorat_source_frames_dropped_total",
    "Decoded frames a pulled source discarded because its consumer was behind (newest frames are kept).",
    ["track_id"],
)
SOURCE_LAST_FRAME = Gauge(
    "lorat_source_last_frame_timestamp_seconds",
    "Wall-clock time (Unix seconds) of the last frame decoded from a pulled source.",
    ["track_id"],
)
SOURCE_OPEN_SECONDS = Histogram(
    "lorat_source_open_seconds",
    "Time from starting a connection attempt to its first decoded frame.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SOURCE_ERRORS = Counter(
    "lorat_source_errors_total",
    "Failed connection attempts and broken streams of pulled sources, by kind.",
    ["kind"],  # open_timeout | read_timeout | error | eof
)


def set_state(track_id: str, state: str) -> None:
    """Make ``state`` the one state with value 1 for ``track_id``."""
    for s in SOURCE_STATES:
        SOURCE_STATE.labels(track_id=track_id, state=s).set(1.0 if s == state else 0.0)


def forget(track_id: str) -> None:
    """Remove every per-track series of ``track_id`` (called when its source stops)."""
    for s in SOURCE_STATES:
        _remove(SOURCE_STATE, track_id, s)
    for metric in (SOURCE_RECONNECTS, SOURCE_FRAMES, SOURCE_FRAMES_DROPPED, SOURCE_LAST_FRAME):
        _remove(metric, track_id)


def _remove(metric, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
