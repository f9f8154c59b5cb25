"""Forwarded streams (issue 11, part B): PushFrames and WatchTracks sent to a replica that does not hold the
track, against the same sent to its owner, in one run on one machine.

Two `lorat-serve` replicas (a holds the tracks, b does not) on a real 3-node Redis Cluster started here, the
tiny random-weights model (the figures measure the serving path, not the model):

- PushFrames round trip: one frame written, its result read, next frame (ping-pong on one open stream), to a
  (direct) and to b (forwarded down b's stream to a); rounds alternate so that load changes hit both alike;
- PushFrames throughput: N frames written without waiting (EVERY_FRAME track), frames/s until the last result;
- WatchTracks delivery: result publish_time (set by the owner) to its arrival at a watcher, for a watch on a
  (its in-memory hub) and one on b (the track's Redis result stream).

Writes bench/results/forward.md. Usage: .venv/bin/python bench/forward_stream.py [--rounds 6 --frames 40]
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import grpc  # noqa: E402
import torch  # noqa: E402
from lorat.v1 import tracker_pb2 as pb  # noqa: E402

from lorat_infer import build_model, save_merged  # noqa: E402
from tests.scale.cluster import RedisClusterProc  # noqa: E402
from tests.service.conftest import ServerProc, box_pb, frame_pb, make_frames, metric_value  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class PingPong:
    """One open PushFrames stream: push a frame, wait for its result."""

    def __init__(self, server: ServerProc) -> None:
        self.q: queue.Queue = queue.Queue()
        self.responses = server.stub.PushFrames(iter(self.q.get, None), timeout=600)

    def push(self, req: pb.PushFrameRequest) -> tuple[float, pb.TrackResult]:
        t0 = time.perf_counter()
        self.q.put(req)
        result = next(self.responses)
        return (time.perf_counter() - t0) * 1000, result

    def close(self) -> None:
        self.q.put(None)
        self.responses.cancel()


def start(server: ServerProc, tid: str, frames: list, boxes) -> None:  # type: ignore[no-untyped-def]
    server.stub.StartTrack(pb.StartTrackRequest(track_id=tid, first_frame=frame_pb(frames[0]),
                                                initial_box=box_pb(boxes[0]),
                                                options=pb.TrackOptions(overload_policy=pb.EVERY_FRAME)),
                           timeout=30)


def burst(server: ServerProc, tid: str, encoded: list[pb.Frame], n: int) -> float:
    """Frames/s of `n` frames written at once on one stream (every one answered)."""
    reqs = [pb.PushFrameRequest(track_id=tid, frame=encoded[k % len(encoded)]) for k in range(n)]
    t0 = time.perf_counter()
    results = list(server.stub.PushFrames(iter(reqs), timeout=600))
    elapsed = time.perf_counter() - t0
    assert len(results) == n and all(r.status == pb.TRACKING for r in results), "a frame was not tracked"
    return n / elapsed


def watch_delays(servers: dict[str, ServerProc], tid: str, encoded: list[pb.Frame], n: int) -> dict[str, list]:
    """publish_time -> arrival at a watcher on the owner (a) and on the other replica (b), in ms."""
    delays: dict[str, list[float]] = {"a": [], "b": []}
    calls = {}
    threads = []
    for name in ("a", "b"):
        calls[name] = servers[name].stub.WatchTracks(pb.WatchTracksRequest(track_ids=[tid]), timeout=600)

        def follow(name: str = name) -> None:
            try:
                for r in calls[name]:
                    if r.status == pb.TRACKING and r.HasField("publish_time"):
                        now = time.time()
                        delays[name].append((now - (r.publish_time.seconds + r.publish_time.nanos / 1e9)) * 1000)
            except grpc.RpcError:
                pass

        threads.append(threading.Thread(target=follow, daemon=True))
        threads[-1].start()
    time.sleep(2.0)  # both watches subscribed
    for k in range(n):
        servers["a"].stub.PushFrame(pb.PushFrameRequest(track_id=tid, frame=encoded[k % len(encoded)]), timeout=30)
        time.sleep(0.02)
    deadline = time.monotonic() + 30
    while min(len(v) for v in delays.values()) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    for call in calls.values():
        call.cancel()
    return delays


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--frames", type=int, default=40, help="frames per round and mode (ping-pong)")
    ap.add_argument("--burst", type=int, default=200, help="frames per throughput burst")
    args = ap.parse_args()
    load0 = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="lorat-fwd-bench-"))
    torch.manual_seed(1234)
    ckpt = work / "tiny.safetensors"
    save_merged(build_model("tiny").eval(), ckpt)
    frames, boxes = make_frames(5, 12)
    encoded = [frame_pb(f) for f in frames[1:]]
    cluster = RedisClusterProc().start()
    servers: dict[str, ServerProc] = {}
    try:
        for name in ("a", "b"):
            servers[name] = ServerProc(cluster.url, str(ckpt), work / f"{name}.log", instance_id=name,
                                       redis_cluster="true", max_batch_wait_ms=2, http_port=-1).start()
        start(servers["a"], "bench-pp", frames, boxes)
        lat: dict[str, list[float]] = {"direct": [], "forwarded": []}
        streams = {"direct": PingPong(servers["a"]), "forwarded": PingPong(servers["b"])}
        for mode in streams:  # warm-up: channels, owner lookup, the forward stream
            for k in range(5):
                streams[mode].push(pb.PushFrameRequest(track_id="bench-pp", frame=encoded[k]))
        for rnd in range(args.rounds):
            for mode in (("direct", "forwarded") if rnd % 2 == 0 else ("forwarded", "direct")):
                for k in range(args.frames):
                    ms, result = streams[mode].push(pb.PushFrameRequest(track_id="bench-pp",
                                                                        frame=encoded[k % len(encoded)]))
                    assert result.status == pb.TRACKING
                    lat[mode].append(ms)
        for s in streams.values():
            s.close()
        start(servers["a"], "bench-burst", frames, boxes)
        rates: dict[str, list[float]] = {"direct": [], "forwarded": []}
        burst(servers["b"], "bench-burst", encoded, 20)  # warm-up
        for rnd in range(2):
            for mode in (("direct", "forwarded") if rnd % 2 == 0 else ("forwarded", "direct")):
                rates[mode].append(burst(servers["a" if mode == "direct" else "b"], "bench-burst", encoded,
                                         args.burst))
        start(servers["a"], "bench-watch", frames, boxes)
        delays = watch_delays(servers, "bench-watch", encoded, 60)
        counted = metric_value(servers["b"].metrics_text(), "lorat_forwarded_calls_total", 'method="PushFrames"')
        expected = 5 + args.rounds * args.frames + 20 + 2 * args.burst
        assert counted == expected, f"b forwarded {counted} PushFrames frames, expected {expected}"
    finally:
        for s in servers.values():
            s.kill()
        cluster.stop()
    load1 = os.getloadavg()

    rows = []
    for mode in ("direct", "forwarded"):
        v = lat[mode]
        where = "to the owner" if mode == "direct" else "via the other replica"
        rows.append(f"| PushFrames round trip, {mode} ({where}) | {len(v)} | {statistics.median(v):.1f} | "
                    f"{pct(v, 0.9):.1f} | {pct(v, 0.99):.1f} |")
    extra = statistics.median(lat["forwarded"]) - statistics.median(lat["direct"])
    for name, label in (("a", "on the owner (hub)"), ("b", "on the other replica (Redis stream)")):
        v = delays[name]
        rows.append(f"| WatchTracks delivery {label} | {len(v)} | {statistics.median(v):.1f} | {pct(v, 0.9):.1f} | "
                    f"{pct(v, 0.99):.1f} |")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        "# Forwarded streams: direct vs through another replica",
        "",
        f"`.venv/bin/python bench/forward_stream.py --rounds {args.rounds} --frames {args.frames} --burst {args.burst}`"
        f", {when}, {os.cpu_count()} cores shared with other work, load average {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at the end. Two replicas on a 3-node Redis Cluster, tiny model, 160x120 PNG frames, "
        "all on one machine (loopback): the forwarded figures add one loopback hop and the proxy's work.",
        "",
        "| figure (ms) | n | median | p90 | p99 |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Forwarding adds **{extra:+.1f} ms** to the median PushFrames round trip (b counted {counted:.0f} "
        "forwarded PushFrames frames: every frame sent to it went to a).",
        "",
        "| PushFrames burst (frames/s, EVERY_FRAME, all written at once) | runs | median |",
        "|---|---|---|",
        f"| direct (to the owner) | {len(rates['direct'])} | {statistics.median(rates['direct']):.1f} |",
        f"| forwarded (via the other replica) | {len(rates['forwarded'])} | "
        f"{statistics.median(rates['forwarded']):.1f} |",
        "",
    ])
    out = ROOT / "bench" / "results" / "forward.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
