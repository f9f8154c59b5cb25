"""Prometheus metrics of the service, on their own registry (so tests can run several servers).

Conventions: `lorat_` prefix, base units in names, counters end in `_total`, latencies are histograms.
Per-track series are removed when the track ends (`forget_track`).
"""

from __future__ import annotations

import contextlib

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

disable_created_metrics()  # `_created` series double the page and no dashboard reads them
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class _DefaultRegistry:
    """Expose the process-wide default registry through ours (no describe: names are not re-checked)."""

    def describe(self) -> list:
        return []

    def collect(self):  # type: ignore[no-untyped-def]
        return REGISTRY.collect()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decode_seconds = Histogram(
            "lorat_decode_seconds", "Time to decode one pushed frame, by payload format.",
            ["format"], buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_wait_seconds = Histogram(
            "lorat_queue_wait_seconds", "Time a decoded frame waited for its batch.",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_forward_seconds = Histogram(
            "lorat_batch_forward_seconds", "Time of one engine step (crop, forward, select) for a batch.",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.frame_age_seconds = Histogram(
            "lorat_frame_age_seconds",
            "End-to-end age of a frame when its result is published (from capture time, else receive time).",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "lorat_batch_size", "Frames in one forward pass.", buckets=_BATCH_BUCKETS, registry=r)
        self.frames_processed = Counter(
            "lorat_frames_processed_total", "Frames tracked (a box was computed).", registry=r)
        self.frames_dropped = Counter(
            "lorat_frames_dropped_total", "Frames not tracked, by reason.", ["reason"], registry=r)
        self.online_template_updates = Counter(
            "lorat_online_template_updates_total",
            "Online-template replacements (MixFormerV2: the template cache is recomputed), by model.",
            ["model"], registry=r)
        self.targets_lost = Counter(
            "lorat_targets_lost_total", "Times a track turned LOST (low confidence for --lost-frames frames).",
            registry=r)
        self.active_tracks = Gauge("lorat_active_tracks", "Tracks held by this server.", registry=r)
        self.redis_errors = Counter(
            "lorat_redis_errors_total", "Failed Redis operations, by operation.", ["op"], registry=r)
        self.track_frames = Counter(
            "lorat_track_frames_processed_total", "Frames tracked, per track.", ["track_id"], registry=r)
        self.track_drops = Counter(
            "lorat_track_frames_dropped_total", "Frames dropped, per track and reason.",
            ["track_id", "reason"], registry=r)
        self.results_held = Gauge(
            "lorat_results_held", "Computed results waiting for their state write before release.", registry=r)
        self.commit_seconds = Histogram(
            "lorat_commit_seconds", "Time of one fenced state write (all tracks of the batches it covers).",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.redis_op_seconds = Histogram(
            "lorat_redis_op_seconds", "Latency of Redis operations of the state store, by operation.",
            ["op"], buckets=_LATENCY_BUCKETS, registry=r)
        self.redis_latency_p99_seconds = Gauge(
            "lorat_redis_latency_p99_seconds", "p99 latency of state-store Redis operations, last 10 s.", registry=r)
        self.redis_degraded = Gauge(
            "lorat_redis_degraded", "1 while Redis is unreachable or its p99 latency is over --redis-slow-p99-ms.",
            registry=r)
        self.engine_alive = Gauge(
            "lorat_engine_alive", "0 while the engine loop is dead or hung (liveness NOT_SERVING).", registry=r)
        self.tracks_ended = Counter(
            "lorat_tracks_ended_total", "Tracks that ended on this server, by final status.", ["status"], registry=r)
        self.requests_refused = Counter(
            "lorat_requests_refused_total", "Requests refused by a limit or a check, by reason.", ["reason"],
            registry=r)
        self._track_reasons: dict[str, set[str]] = {}
        # Source metrics (server.sources.metrics), process and GC metrics live in the default registry.
        r.register(_DefaultRegistry())

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the /metrics HTTP server; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server.server_address[1]

    def dropped(self, track_id: str, reason: str, *, live: bool = True) -> None:
        """Count a dropped frame. `live=False` (the track has ended, its series are or will be forgotten)
        counts it only in the server-wide series, so a frame answered after the end cannot re-create them."""
        self.frames_dropped.labels(reason).inc()
        if not live:
            return
        self.track_drops.labels(track_id, reason).inc()
        self._track_reasons.setdefault(track_id, set()).add(reason)

    def processed(self, track_id: str) -> None:
        self.frames_processed.inc()
        self.track_frames.labels(track_id).inc()

    def forget_track(self, track_id: str) -> None:
        """Drop every per-track series of an ended track."""
        with contextlib.suppress(KeyError):
            self.track_frames.remove(track_id)
        for reason in self._track_reasons.pop(track_id, set()):
            with contextlib.suppress(KeyError):
                self.track_drops.remove(track_id, reason)
