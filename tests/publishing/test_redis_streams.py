"""RedisStreamPublisher and RedisStreamReader against a real redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp
from lorat.v1 import tracker_pb2 as pb

from server.publishing.redis_streams import (
    RedisStreamPublisher,
    RedisStreamReader,
    parse_entry,
    result_fields,
)

DOCUMENTED = {
    "v", "track_id", "frame_number", "pts", "capture_time", "receive_time", "publish_time",
    "x", "y", "w", "h", "confidence", "status", "drop_reason", "message", "model_id",
}


def make_result(track_id: str, n: int, status: int = pb.TRACKING) -> pb.TrackResult:
    now = time.time()
    r = pb.TrackResult(
        track_id=track_id, frame_number=n, source_pts=3000 * n, box=pb.Box(x=n, y=2 * n, width=10.5, height=7),
        confidence=0.5 + n / 1000, status=status, model_id="tiny@test",
    )
    r.capture_time.FromNanoseconds(int((now - 0.05) * 1e9))
    r.receive_time.FromNanoseconds(int((now - 0.04) * 1e9))
    if status == pb.DROPPED:
        r.drop_reason = "superseded"
    return r


def test_every_result_in_order_with_documented_fields(redis_proc) -> None:
    async def main() -> None:
        client = aioredis.from_url(redis_proc.url)
        pub = RedisStreamPublisher(client, maxlen=1000)
        reader_all = RedisStreamReader(client, last_id="0-0", block_ms=200)
        sent = []
        for n in range(60):
            for tid in ("cam-a", "cam-b", "cam-c"):
                status = pb.DROPPED if n % 7 == 3 else pb.TRACKING
                sent.append(make_result(tid, n, status))
                await pub.publish(sent[-1])
        assert await pub.flush(5)
        assert pub.published == len(sent) and pub.dropped == 0

        # the all-tracks stream holds every result in publish order
        got = []
        while len(got) < len(sent):
            batch = await reader_all.read()
            assert batch, f"only {len(got)} of {len(sent)} results came back"
            got.extend(batch)
        assert [(g.track_id, g.frame_number) for g in got] == [(s.track_id, s.frame_number) for s in sent]
        # each per-track stream holds that track's results in frame order, with the documented fields
        for tid in ("cam-a", "cam-b", "cam-c"):
            entries = await client.xrange(pub.stream_for(tid))
            assert len(entries) == 60
            for n, (entry_id, fields) in enumerate(entries):
                assert {k.decode() for k in fields} == DOCUMENTED
                r = parse_entry(entry_id, fields)
                src = sent[3 * n + ("cam-a", "cam-b", "cam-c").index(tid)]
                assert (r.track_id, r.frame_number, r.pts) == (tid, n, 3000 * n)
                assert (r.x, r.y, r.w, r.h) == (float(n), 2.0 * n, 10.5, 7.0)
                assert r.confidence == pytest.approx(src.confidence)
                assert r.status == ("DROPPED" if n % 7 == 3 else "TRACKING")
                assert r.drop_reason == ("superseded" if n % 7 == 3 else "")
                assert r.capture_time < r.receive_time <= r.publish_time
                assert r.model_id == "tiny@test"
        await pub.close()
        await client.aclose()

    asyncio.run(main())


def test_streams_are_bounded(redis_proc) -> None:
    async def main() -> None:
        client = aioredis.from_url(redis_proc.url)
        pub = RedisStreamPublisher(client, maxlen=20, maxlen_all=50, batch=50)
        for n in range(1000):
            await pub.publish(make_result("busy", n))
        assert await pub.flush(10)
        # approximate MAXLEN trims whole radix-tree nodes (100 entries by default)
        per_track = await client.xlen(pub.stream_for("busy"))
        everything = await client.xlen(pub.prefix)
        assert 20 <= per_track <= 20 + 100 and 50 <= everything <= 50 + 100, (per_track, everything)
        last = parse_entry(*(await client.xrevrange(pub.stream_for("busy"), count=1))[0])
        assert last.frame_number == 999  # trimming drops the oldest, never the newest
        await pub.close()
        await client.aclose()

    asyncio.run(main())


def test_redis_outage_does_not_block_and_loses_nothing_buffered(redis_proc) -> None:
    async def main() -> None:
        client = aioredis.from_url(redis_proc.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        errors: list[str] = []
        pub = RedisStreamPublisher(client, retry_initial=0.05, retry_max=0.2,
                                   on_error=lambda op, exc: errors.append(op))
        await pub.publish(make_result("t", 0))
        assert await pub.flush(5)
        redis_proc.stop()
        t0 = time.monotonic()
        for n in range(1, 40):
            await pub.publish(make_result("t", n))
        assert time.monotonic() - t0 < 0.1, "publish() waited on the dead Redis"
        await asyncio.sleep(0.5)
        assert errors and set(errors) == {"xadd"}
        assert not await pub.flush(0.1)
        redis_proc.start()  # an empty Redis on the same port: the buffered results arrive, in order
        assert await pub.flush(10)
        entries = await client.xrange(pub.stream_for("t"))
        assert [parse_entry(*e).frame_number for e in entries] == list(range(1, 40))
        await pub.close()
        await client.aclose()

    asyncio.run(main())


def test_bad_input_is_rejected_clearly() -> None:
    with pytest.raises(TypeError):
        result_fields({"track_id": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schema"):
        parse_entry(b"1-0", {b"track_id": b"x", b"frame_number": b"not-a-number"})
    with pytest.raises(ValueError):
        RedisStreamPublisher(object(), maxlen=0)
    ts = Timestamp()
    assert result_fields(pb.TrackResult(track_id="x", capture_time=ts))["capture_time"] == ""
