"""A refused call is freed when it ends: no reference cycle keeps it (and its request) until a full garbage
collection. grpc.aio's `context.abort()` made one per refused call (the AbortError it keeps on the call holds the
handler's frames); the server refuses by setting the status instead (server/errors.py `refuse`). Over
bench/faults.py's 10,000 malformed requests those cycles held +30 MiB of protobuf arenas."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import grpc
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc

from server.security import BearerAuth, TokenFile
from server.service import TrackerService, add_to_server

SERVER_SIDE = ("RPCState", "_ServicerContext", "AbortError")  # types only the server side of a call creates


async def _refused_calls(interceptors: list, metadata: tuple) -> list[grpc.StatusCode]:
    """Refused calls of every kind against a TrackerService with no manager (it answers 'starting' or, behind
    `interceptors`, UNAUTHENTICATED); the server-side objects they left as cyclic garbage are counted after."""
    server = grpc.aio.server(interceptors=interceptors)
    add_to_server(TrackerService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    codes = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.TrackerStub(channel)
            big = pb.StartTrackRequest(track_id="t", labels={"big": "x" * 100_000})
            raw = channel.unary_unary("/lorat.v1.Tracker/GetTrack", request_serializer=lambda b: b,
                                      response_deserializer=lambda b: b)
            calls = [lambda: stub.StartTrack(big, metadata=metadata),
                     lambda: stub.PushFrame(pb.PushFrameRequest(track_id="bad id\n"), metadata=metadata),
                     lambda: stub.StopTrack(pb.StopTrackRequest(track_id="t"), metadata=metadata),
                     lambda: raw(b"\xff\xff\xff", metadata=metadata)]  # not a protobuf
            for _ in range(5):
                for call in calls:
                    try:
                        await call()
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as exc:
                        codes.append(exc.code())
            watch = stub.WatchTracks(pb.WatchTracksRequest(), metadata=metadata)
            try:
                async for _ in watch:
                    pass
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
    finally:
        await server.stop(None)
    return codes


def _cyclic_garbage(interceptors: list, metadata: tuple) -> tuple[list[grpc.StatusCode], int]:
    gc.collect()
    gc.disable()  # nothing is collected behind our back: what is left over is exactly what needs the collector
    try:
        codes = asyncio.run(_refused_calls(interceptors, metadata))
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = sum(type(o).__name__ in SERVER_SIDE for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    return codes, left


def test_refused_calls_leave_no_cycles() -> None:
    codes, left = _cyclic_garbage([], ())
    assert set(codes) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INVALID_ARGUMENT}, codes
    assert grpc.StatusCode.INVALID_ARGUMENT in codes  # the unparseable body
    assert len(codes) == 21
    assert left == 0, f"{left} server-side call objects were left for the garbage collector"


def test_unauthenticated_calls_leave_no_cycles(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("right\n")
    codes, left = _cyclic_garbage([BearerAuth(TokenFile(str(tokens)))], (("authorization", "Bearer wrong"),))
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 21
    assert left == 0, f"{left} server-side call objects were left for the garbage collector"
