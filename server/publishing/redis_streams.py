"""Results to Redis Streams, for consumers that do not speak gRPC (schema: docs/redis-streams.md).

Every result goes to ``{prefix}:{track_id}`` (one stream per track) and ``{prefix}`` (all tracks), each
capped with an approximate MAXLEN so Redis memory stays bounded. Fields are flat strings, so any Redis
client in any language can read them; nothing is pickled.

Why a buffer and a writer task: ``publish()`` sits on the tracking path, and a slow or absent Redis must
never slow tracking. ``publish()`` only appends to a bounded in-memory buffer; one writer task sends the
buffer in MULTI/EXEC batches, in order, and on Redis errors keeps the batch and retries with backoff
(oldest buffered results are dropped, and counted, if the outage outlasts the buffer). Delivery is
at-least-once: a connection lost after EXEC may repeat a batch; de-duplicate on (track_id, frame_number).

On a Redis Cluster the all-tracks stream is dropped, not sharded: one key written by every replica for
every frame would be one node's hot spot, and shards would give readers no order across tracks anyway.
Readers follow the per-track streams (each a single key, so any slot), found from the track index. A batch
is then a plain pipeline, split by node (a cluster transaction must stay within one slot).
A per-track stream's PEXPIRE is sent with its first result, then at most every `ttl/16` (<= 60 s), not with
every batch: one command per frame saved.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from lorat.v1 import tracker_pb2 as pb
from prometheus_client import Counter, Gauge

log = logging.getLogger("lorat.publishing.redis")

SCHEMA_VERSION = "1"
DEFAULT_PREFIX = "lorat:results"

STREAM_PUBLISHED = Counter(
    "lorat_stream_results_published_total", "Results written to Redis Streams (per-track and all-tracks).")
STREAM_DROPPED = Counter(
    "lorat_stream_results_dropped_total",
    "Results never written to Redis Streams because the buffer overflowed during a Redis outage.")
STREAM_BUFFERED = Gauge("lorat_stream_buffered_results", "Results waiting to be written to Redis Streams.")

ErrorCallback = Callable[[str, BaseException], Any]


def _ts(t: Any) -> str:
    """A protobuf Timestamp as Unix seconds with microseconds ("" when unset)."""
    if t is None or (t.seconds == 0 and t.nanos == 0):
        return ""
    return f"{t.seconds + t.nanos / 1e9:.6f}"


def _num(v: float) -> str:
    return repr(float(v))


def result_fields(result: pb.TrackResult) -> dict[str, str]:
    """The documented flat string fields of one result (see docs/redis-streams.md)."""
    if not isinstance(result, pb.TrackResult):
        raise TypeError(f"expected lorat.v1.TrackResult, got {type(result).__name__}")
    box = result.box
    return {
        "v": SCHEMA_VERSION,
        "track_id": result.track_id,
        "frame_number": str(result.frame_number),
        "pts": str(result.source_pts),
        "capture_time": _ts(result.capture_time),
        "receive_time": _ts(result.receive_time),
        "publish_time": _ts(result.publish_time),
        "x": _num(box.x),
        "y": _num(box.y),
        "w": _num(box.width),
        "h": _num(box.height),
        "confidence": _num(result.confidence),
        "status": pb.TrackStatus.Name(result.status),
        "drop_reason": result.drop_reason,
        "message": result.message,
        "model_id": result.model_id,
    }


class RedisStreamPublisher:
    """A `ResultSink` writing results to Redis Streams without ever blocking the caller.

    ``redis``: a ``redis.asyncio.Redis`` client. ``maxlen``: approximate cap of each per-track stream;
    ``maxlen_all``: of the all-tracks stream. ``buffer``: results held while Redis is slow or away.
    ``on_error(op, exc)``: called for every failed Redis operation (the server counts them in
    ``lorat_redis_errors_total``).
    """

    def __init__(
        self,
        redis: Any,
        maxlen: int = 10_000,
        *,
        maxlen_all: int = 100_000,
        prefix: str = DEFAULT_PREFIX,
        buffer: int = 10_000,
        batch: int = 256,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        on_error: ErrorCallback | None = None,
        stream_ttl_s: float = 0.0,
    ) -> None:
        if maxlen < 1 or maxlen_all < 1 or buffer < 1 or batch < 1:
            raise ValueError("maxlen, maxlen_all, buffer and batch must be positive")
        self.redis = redis
        self.maxlen = maxlen
        self.maxlen_all = maxlen_all
        self.prefix = prefix
        self.batch = batch
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.on_error = on_error
        self.stream_ttl_ms = int(stream_ttl_s * 1000)  # 0: per-track streams never expire
        self._expire_every = min(60.0, stream_ttl_s / 16)
        self._expired_at: dict[str, float] = {}  # track id -> when its stream's TTL was last refreshed
        self.cluster = _is_cluster(redis)
        self.dropped = 0
        self.published = 0
        self._pending: collections.deque[dict[str, str]] = collections.deque()
        self._buffer = buffer
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def stream_for(self, track_id: str) -> str:
        return f"{self.prefix}:{track_id}"

    async def publish(self, result: pb.TrackResult) -> None:
        """Queue one result (a ``lorat.v1.TrackResult``); returns at once."""
        if self._closed:
            raise RuntimeError("publisher is closed")
        fields = result_fields(result)
        if not fields["publish_time"]:
            fields["publish_time"] = f"{time.time():.6f}"
        if len(self._pending) >= self._buffer:
            self._pending.popleft()
            self.dropped += 1
            STREAM_DROPPED.inc()
        self._pending.append(fields)
        STREAM_BUFFERED.set(len(self._pending))
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._writer(), name="redis-stream-writer")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Flush (up to ``timeout``), then stop the writer. Results still buffered are dropped, counted."""
        await self.flush(timeout)
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._pending:
            self.dropped += len(self._pending)
            STREAM_DROPPED.inc(len(self._pending))
            self._pending.clear()
            STREAM_BUFFERED.set(0)

    async def _writer(self) -> None:
        delay = self.retry_initial
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._pending[i] for i in range(min(self.batch, len(self._pending)))]
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or failing: keep the batch, retry after a pause
                log.warning("redis stream write failed: %r (retry in %.2fs)", exc, delay)
                if self.on_error is not None:
                    with contextlib.suppress(Exception):
                        self.on_error("xadd", exc)
                await asyncio.sleep(delay)
                delay = min(self.retry_max, delay * 2)
                continue
            delay = self.retry_initial
            # publish() may have dropped some of this batch's entries meanwhile: remove exactly what we sent
            for fields in batch:
                if self._pending and self._pending[0] is fields:
                    self._pending.popleft()
            self.published += len(batch)
            STREAM_PUBLISHED.inc(len(batch))
            STREAM_BUFFERED.set(len(self._pending))

    async def _write(self, batch: list[dict[str, str]]) -> None:
        now = time.monotonic()
        refreshed: list[str] = []
        async with self.redis.pipeline(transaction=not self.cluster) as pipe:
            for fields in batch:
                pipe.xadd(self.stream_for(fields["track_id"]), fields, maxlen=self.maxlen, approximate=True)
                if not self.cluster:
                    pipe.xadd(self.prefix, fields, maxlen=self.maxlen_all, approximate=True)
            if self.stream_ttl_ms > 0:  # a per-track stream expires after its track's last result
                for track_id in {fields["track_id"] for fields in batch}:
                    if now - self._expired_at.get(track_id, -1e18) >= self._expire_every:
                        pipe.pexpire(self.stream_for(track_id), self.stream_ttl_ms)
                        refreshed.append(track_id)
            await pipe.execute()
        for track_id in refreshed:
            self._expired_at[track_id] = now
        if len(self._expired_at) > 4 * self._buffer:  # forget long-gone tracks (their streams expire)
            cutoff = now - self.stream_ttl_ms / 1000
            self._expired_at = {t: at for t, at in self._expired_at.items() if at >= cutoff}


def _is_cluster(client: Any) -> bool:
    try:
        from redis.asyncio.cluster import RedisCluster
    except ImportError:
        return False
    return isinstance(client, RedisCluster)


@dataclass(frozen=True)
class StreamResult:
    """One result as read back from a stream (times in Unix seconds, None when unset)."""

    entry_id: str
    track_id: str
    frame_number: int
    pts: int
    capture_time: float | None
    receive_time: float | None
    publish_time: float | None
    x: float
    y: float
    w: float
    h: float
    confidence: float
    status: str
    drop_reason: str
    message: str
    model_id: str


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def parse_entry(entry_id: Any, fields: dict[Any, Any]) -> StreamResult:
    """Decode one stream entry; raises ValueError on an entry that does not follow the schema."""
    f = {_s(k): _s(v) for k, v in fields.items()}
    try:

        def t(name: str) -> float | None:
            return float(f[name]) if f.get(name) else None

        return StreamResult(
            entry_id=_s(entry_id),
            track_id=f["track_id"],
            frame_number=int(f["frame_number"]),
            pts=int(f["pts"]),
            capture_time=t("capture_time"),
            receive_time=t("receive_time"),
            publish_time=t("publish_time"),
            x=float(f["x"]),
            y=float(f["y"]),
            w=float(f["w"]),
            h=float(f["h"]),
            confidence=float(f["confidence"]),
            status=f["status"],
            drop_reason=f.get("drop_reason", ""),
            message=f.get("message", ""),
            model_id=f.get("model_id", ""),
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"stream entry {_s(entry_id)} does not follow schema v{SCHEMA_VERSION}: {exc}") from exc


class RedisStreamReader:
    """Follow one track's stream (or all tracks) from an entry id: ``async for r in reader: ...``.

    ``last_id``: "0-0" reads from the oldest entry still held, "$" only new ones; pass the ``entry_id``
    of the last result you handled to resume after a restart.
    """

    def __init__(
        self, redis: Any, track_id: str | None = None, *, last_id: str = "0-0",
        prefix: str = DEFAULT_PREFIX, block_ms: int = 1000, count: int = 100,
    ) -> None:
        self.redis = redis
        self.stream = f"{prefix}:{track_id}" if track_id else prefix
        self.last_id = last_id
        self.block_ms = block_ms
        self.count = count

    async def read(self, block_ms: int | None = None) -> list[StreamResult]:
        """The next results after ``last_id`` (waits up to ``block_ms`` for some; [] if none came)."""
        block = self.block_ms if block_ms is None else block_ms
        reply = await self.redis.xread({self.stream: self.last_id}, count=self.count, block=block or None)
        out: list[StreamResult] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(parse_entry(entry_id, fields))
                self.last_id = _s(entry_id)
        return out

    async def __aiter__(self) -> AsyncIterator[StreamResult]:
        while True:
            for item in await self.read():
                yield item
