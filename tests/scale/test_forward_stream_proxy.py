"""The PushFrames proxy's owner stream (server/stream_proxy.py) against a real in-process gRPC "owner" on
loopback that misbehaves on purpose: answers in order, an owner that never answers (a paused replica: the
frames fail UNAVAILABLE after the owner timeout, not a hang), an owner that ends the stream with its own
status, and an owner that goes away with frames in flight (UNAVAILABLE, and the track's owner is looked up
again next time). The caller's token and the forwarded mark reach the owner."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc

from server.errors import ServiceError
from server.forward import MARK, Forwarder
from server.stream_proxy import OwnerStream


class Owner(pb_grpc.TrackerServicer):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.metadata: list[tuple[str, str]] = []
        self.received = 0

    async def PushFrames(self, request_iterator, context):  # type: ignore[no-untyped-def]
        self.metadata = list(context.invocation_metadata())
        async for req in request_iterator:
            self.received += 1
            if self.mode == "answer":
                yield pb.TrackResult(track_id=req.track_id, frame_number=self.received, source_pts=req.frame.pts)
            elif self.mode == "refuse":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "track 't' is STOPPED")
            # "silent" and "vanish": read, never answer


class Context:
    """What the proxy reads from the caller's server-side context."""

    def invocation_metadata(self) -> tuple:
        return (("authorization", "Bearer tok"), ("x-other", "not passed"))

    def time_remaining(self) -> float:
        return 30.0


async def _with_owner(mode: str, body) -> Owner:  # type: ignore[no-untyped-def]
    owner = Owner(mode)
    server = grpc.aio.server()
    pb_grpc.add_TrackerServicer_to_server(owner, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    dropped: list[str] = []
    fwd = Forwarder(None, SimpleNamespace(instance="me"), max_message_bytes=1 << 20,  # type: ignore[arg-type]
                    owner_timeout_s=1.0)
    fwd.drop = dropped.append  # type: ignore[method-assign]
    stream = OwnerStream(fwd, f"127.0.0.1:{port}", Context())
    try:
        await body(stream, server, dropped)
    finally:
        await stream.close()
        await fwd.close()
        await server.stop(None)
    return owner


def _req(k: int) -> pb.PushFrameRequest:
    return pb.PushFrameRequest(track_id="t", frame=pb.Frame(encoded=b"x", pts=k))


def test_results_come_back_in_order_with_the_callers_token() -> None:
    async def body(stream, server, dropped) -> None:  # type: ignore[no-untyped-def]
        futs = [await stream.send(_req(k)) for k in (10, 11, 12)]
        results = await asyncio.wait_for(asyncio.gather(*futs), 10)
        assert [(r.frame_number, r.source_pts) for r in results] == [(1, 10), (2, 11), (3, 12)]

    owner = asyncio.run(_with_owner("answer", body))
    meta = dict(owner.metadata)
    assert meta["authorization"] == "Bearer tok" and meta[MARK] == "me" and "x-other" not in meta


def test_a_silent_owner_fails_the_waiting_frames_unavailable() -> None:
    async def body(stream, server, dropped) -> None:  # type: ignore[no-untyped-def]
        fut = await stream.send(_req(1))
        with pytest.raises(ServiceError) as err:
            await asyncio.wait_for(fut, 10)  # owner_timeout_s is 1 s: the watchdog answers, not this timeout
        assert err.value.code == grpc.StatusCode.UNAVAILABLE and "did not answer" in err.value.message
        assert dropped == ["t"]  # the owner is looked up again next time
        with pytest.raises(ServiceError):  # the failed stream takes no more frames (the proxy opens a new one)
            await stream.send(_req(2))

    asyncio.run(_with_owner("silent", body))


def test_the_owners_status_ends_the_stream_with_that_status() -> None:
    async def body(stream, server, dropped) -> None:  # type: ignore[no-untyped-def]
        fut = await stream.send(_req(1))
        with pytest.raises(ServiceError) as err:
            await asyncio.wait_for(fut, 10)
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "STOPPED" in err.value.message
        assert dropped == []

    asyncio.run(_with_owner("refuse", body))


def test_an_owner_that_goes_away_fails_frames_in_flight_unavailable() -> None:
    async def body(stream, server, dropped) -> None:  # type: ignore[no-untyped-def]
        futs = [await stream.send(_req(k)) for k in (1, 2)]
        await asyncio.sleep(0.2)
        await server.stop(None)  # the owner process is gone: its streams end at once
        for fut in futs:
            with pytest.raises(ServiceError) as err:
                await asyncio.wait_for(fut, 10)
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert dropped and set(dropped) == {"t"}

    asyncio.run(_with_owner("vanish", body))
