"""Malformed requests, as a careless or hostile caller sends them (shared by the test and the bench)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from lorat.v1 import tracker_pb2 as pb

METHODS = ("StartTrack", "PushFrame", "StopTrack", "GetTrack", "ListTracks")
BAD_IDS = ("x\n", "", "a" * 200, "../etc", "id with space", "\u00e9t\u00e9", "x" * 129)
BAD_URLS = ("file:///etc/hostname", "http://127.0.0.1:1/x", "rtsp://", "rtsp:///nohost", "RTSP",
            "concat:file:///etc/passwd", "rtsp://u:pw@127.0.0.1:1/x\n", "x" * 5000, "udp://127.0.0.1:9")


def _raw_frame(rng: random.Random) -> pb.Frame:
    width, height = rng.choice([(160, 1), (0, 5), (5, 0), (70000, 2), (4, 4)])
    stride = rng.choice([0, 2**32 - 1, 1, width * 3 + 1])
    fmt = rng.choice([pb.RawImage.RGB24, pb.RawImage.BGR24, 0, 7])
    return pb.Frame(raw=pb.RawImage(format=fmt, width=width, height=height, stride=stride,
                                    data=rng.randbytes(rng.choice([0, 10, 510, 48]))))


def _frame(rng: random.Random) -> pb.Frame:
    kind = rng.randrange(5)
    if kind == 0:
        return _raw_frame(rng)
    if kind == 1:
        return pb.Frame(encoded=rng.randbytes(rng.randrange(0, 400)))
    if kind == 2:
        return pb.Frame(h264=rng.randbytes(rng.randrange(0, 200)))
    if kind == 3:
        frame = pb.Frame(encoded=b"\x89PNG\r\n\x1a\n" + rng.randbytes(50))
        frame.capture_time.CopyFrom(Timestamp(seconds=rng.choice([-(2**40), 2**40, 253402300800]), nanos=0))
        return frame
    return pb.Frame()


def _start(rng: random.Random) -> pb.StartTrackRequest:
    req = pb.StartTrackRequest(track_id=rng.choice((*BAD_IDS, "fz")),
                               initial_box=pb.Box(x=rng.choice([float("nan"), 1.0, float("inf")]), y=1,
                                                  width=rng.choice([0.0, -5.0, 10.0]), height=10))
    choice = rng.randrange(6)
    if choice == 0:
        req.rtsp.url = rng.choice(BAD_URLS)
    elif choice == 1:
        req.rtsp.url = "rtsp://127.0.0.1:1/x"
        req.rtsp.options["protocol_whitelist"] = "file,rtsp"
        req.rtsp.options[rng.choice(["rtsp_flags", "timeout", "f"])] = "listen"
    elif choice == 2:
        req.first_frame.CopyFrom(_frame(rng))
        req.model = "m" * rng.choice([20000, 300, 5])
    elif choice == 3:
        req.first_frame.CopyFrom(_frame(rng))
        for i in range(rng.choice([20000, 40])):
            req.labels[f"k{i}"] = "v"
    elif choice == 4:
        req.first_frame.CopyFrom(_frame(rng))
        req.labels["big"] = "x" * (1 << 20)
    else:
        req.first_frame.CopyFrom(_frame(rng))
        req.options.max_queue = 2**32 - 1
        req.options.max_frame_age_seconds = rng.choice([float("nan"), float("inf"), -1.0, 1e300])
        req.options.overload_policy = rng.choice([0, 9])
    return req


def requests(seed: int, healthy: str) -> Iterator[tuple[str, bytes]]:
    """(method, serialized body) pairs; never a valid frame for `healthy` (that would change its boxes)."""
    rng = random.Random(seed)
    while True:
        r = rng.random()
        if r < 0.15:
            yield rng.choice(METHODS), rng.randbytes(rng.randrange(1, 300))  # not a protobuf at all
        elif r < 0.45:
            yield "StartTrack", _start(rng).SerializeToString()
        elif r < 0.8:
            target = rng.choice((*BAD_IDS, healthy, "nope"))
            yield "PushFrame", pb.PushFrameRequest(track_id=target, frame=_frame(rng)).SerializeToString()
        elif r < 0.9:
            yield "StopTrack", pb.StopTrackRequest(track_id=rng.choice((*BAD_IDS, "nope"))).SerializeToString()
        else:
            yield "GetTrack", pb.GetTrackRequest(track_id=rng.choice(BAD_IDS)).SerializeToString()


def caller(channel: grpc.Channel) -> Callable[[str, bytes], grpc.StatusCode]:
    """method, body -> the status code the server answered (OK on success)."""
    calls = {m: channel.unary_unary(f"/lorat.v1.Tracker/{m}", request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b) for m in METHODS}

    def call(method: str, body: bytes) -> grpc.StatusCode:
        try:
            calls[method](body, timeout=30)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()
    return call
