"""The figures of issue 8 ("What it must show"), each measured here, in one run, against real parts:
redis-server, `lorat-serve` processes on loopback, a TCP latency proxy, signals to real pids.

    .venv/bin/python bench/faults.py [--quick]

    lease theft       a paused owner resumes after another server took its tracks: what it wrote after,
                      how fast it closed its camera, whether every queued frame was answered
    fuzz              10,000 malformed requests beside a healthy track: crashes, INTERNAL/UNKNOWN answers,
                      boxes vs a run without the fuzz, server memory growth (and after a second 10,000)
    redis latency     throughput of the frame path with Redis direct vs behind +5 ms per round trip
                      (in process, a fake engine that takes 4 ms per batch, so the figure is the frame path)
    redis paused 30 s tracks stopped, results released while their state could not be written, health
    idle + soak       an idle push track stopped after its timeout; 16 tracks for 5 minutes: memory;
                      after stopping all: per-track keys without TTL, lease keys, per-track metric series

`--quick` shortens the pause (5 s), the soak (30 s) and the fuzz (2,000). Writes bench/results/faults.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from lorat.v1 import tracker_pb2 as pb  # noqa: E402

from lorat_infer import TrackingEngine, build_model, save_merged  # noqa: E402
from server.state.record import decode_record  # noqa: E402
from tests.faults.fuzz import caller, requests  # noqa: E402
from tests.faults.harness import ProxyProcess, pause, resume, rss_bytes  # noqa: E402
from tests.rtsp.conftest import GST_OK, GstRtspServer, free_port  # noqa: E402
from tests.service.conftest import RedisProc, ServerProc, box_pb, frame_pb, make_frames, xywh  # noqa: E402

ROWS: list[tuple[str, str, str, str]] = []  # (item, target, measured, verdict)


def row(item: str, target: str, measured: str, ok: bool) -> None:
    ROWS.append((item, target, measured, "met" if ok else "NOT met"))
    print(f"{item}: {measured} ({'met' if ok else 'NOT met'})", flush=True)


def health(s: ServerProc, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(s.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


# -- lease theft -------------------------------------------------------------------------------------------

def lease_theft(ckpt: Path, tmp: Path) -> None:
    redis = RedisProc().start()
    frames, boxes = make_frames(21, 6)
    a = ServerProc(redis.url, ckpt, tmp / "a.log", lease_ttl_s=1.0, max_batch_wait_ms=2500, instance_id="a").start()
    b = ServerProc(redis.url, ckpt, tmp / "b.log", lease_ttl_s=1.0, instance_id="b").start()
    r = redis.client()
    cam = None
    try:
        a.stub.StartTrack(pb.StartTrackRequest(track_id="t", first_frame=frame_pb(frames[0]), initial_box=box_pb(
            boxes[0]), options=pb.TrackOptions(overload_policy=pb.FIFO, max_queue=8, max_frame_age_seconds=60)))
        a.stub.PushFrame(pb.PushFrameRequest(track_id="t", frame=frame_pb(frames[1])), timeout=30)
        if GST_OK:
            cam = GstRtspServer(free_port())
            cam.start()
            a.stub.StartTrack(pb.StartTrackRequest(track_id="cam", rtsp=pb.RtspSource(url=cam.url),
                                                   initial_box=pb.Box(x=40, y=30, width=40, height=40)), timeout=60)

        def answer(f):  # type: ignore[no-untyped-def]
            try:
                a.stub.PushFrame(pb.PushFrameRequest(track_id="t", frame=frame_pb(f)), timeout=60)
                return "OK", ""
            except grpc.RpcError as exc:
                return exc.code().name, exc.details()

        with ThreadPoolExecutor(3) as pool:
            queued = [pool.submit(answer, frames[i]) for i in (2, 3, 4)]
            time.sleep(0.8)
            pause(a.proc.pid)
            time.sleep(1.5)
            b.stub.PushFrame(pb.PushFrameRequest(track_id="t", frame=frame_pb(frames[2])), timeout=30)
            deadline = time.monotonic() + 30
            while cam is not None and time.monotonic() < deadline and not any(
                    t.track_id == "cam" for t in b.stub.ListTracks(pb.ListTracksRequest()).tracks):
                time.sleep(0.1)
            snapshot = r.hgetall("lorat:track:{t}")
            cam_snapshot = r.hgetall("lorat:track:{cam}") if cam else None
            resumed = time.time()
            resume(a.proc.pid)
            answers = [q.result(timeout=60) for q in queued]
        time.sleep(3.0)
        equal = r.hgetall("lorat:track:{t}") == snapshot
        # B writes the camera track's state itself; A's must not appear: its epoch stays B's.
        cam_ok = cam is None or r.hget("lorat:track:{cam}", "epoch") == cam_snapshot.get(b"epoch")
        row("Lease theft: old owner's writes after it resumed", "none (Redis state byte-equal to the new owner's)",
            f"state byte-equal: {equal}; camera track epoch unchanged: {cam_ok}", equal and cam_ok)
        ok_answers = sum(code == "UNAVAILABLE" and "'b'" in msg for code, msg in answers)
        row("Lease theft: frames the old owner had queued", "every one answered",
            f"{ok_answers}/{len(answers)} answered UNAVAILABLE naming the new owner", ok_answers == len(answers))
        if cam is not None:
            lines = [ln for ln in (tmp / "a.log").read_text().splitlines()
                     if "source state track_id=cam" in ln and "->stopped" in ln]
            closed = (datetime.strptime(re.match(r"ts=(\S+ \S+)", lines[-1]).group(1),  # type: ignore[union-attr]
                                        "%Y-%m-%d %H:%M:%S,%f").timestamp() - resumed) if lines else float("inf")
            row("Lease theft: old owner's camera closed after it resumed", "within 1 s", f"{closed:.3f} s",
                closed < 1.0)
        else:
            row("Lease theft: old owner's camera closed", "within 1 s", "not measured (no GStreamer RTSP)", False)
    finally:
        a.kill()
        b.kill()
        if cam is not None:
            cam.kill()
        redis.stop()


# -- fuzz --------------------------------------------------------------------------------------------------

def fuzz(ckpt: Path, tmp: Path, n: int) -> None:
    redis = RedisProc().start()
    frames, boxes = make_frames(41, 40)
    s = ServerProc(redis.url, ckpt, tmp / "fuzz.log", max_frame_width=640, max_frame_height=480,
                   max_message_bytes=4_000_000).start()

    def track(tid: str) -> list:
        s.stub.StartTrack(pb.StartTrackRequest(track_id=tid, first_frame=frame_pb(frames[0]),
                                               initial_box=box_pb(boxes[0])))
        out = []
        for f in frames[1:]:
            out.append(xywh(s.stub.PushFrame(pb.PushFrameRequest(track_id=tid, frame=frame_pb(f)), timeout=60).box))
            time.sleep(0.05)
        s.stub.StopTrack(pb.StopTrackRequest(track_id=tid))
        return out

    try:
        calm = track("calm")
        call = caller(s.channel)
        body = requests(seed=11, healthy="healthy")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda mb: call(*mb), itertools.islice(body, 300)))
        time.sleep(11)  # the server hands freed heap back every 10 s (malloc_trim): compare settled figures
        before = rss_bytes(s.proc.pid)
        codes: collections.Counter = collections.Counter()
        healthy: list = []
        t = threading.Thread(target=lambda: healthy.extend(track("healthy")))
        t.start()
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            for code in pool.map(lambda mb: call(*mb), itertools.islice(body, n)):
                codes[code.name] += 1
        seconds = time.monotonic() - t0
        t.join(300)
        time.sleep(11)
        after = rss_bytes(s.proc.pid)
        alive = s.proc.poll() is None
        bad = codes["INTERNAL"] + codes["UNKNOWN"]
        same = len(healthy) == len(calm) and all((h == c).all() for h, c in zip(healthy, calm))
        growth = (after - before) / before * 100
        summary = ", ".join(f"{k} {v}" for k, v in codes.most_common())
        row(f"{n:,} fuzzed requests: crash / INTERNAL or UNKNOWN", "no crash, none",
            f"server alive: {alive}; INTERNAL+UNKNOWN: {bad} ({summary}; {seconds:.0f} s)", alive and bad == 0)
        row("Fuzz: healthy track's boxes vs a run without the fuzz", "identical",
            f"{len(healthy)} boxes, identical: {same}", same)
        row("Fuzz: server memory growth (RSS, each read 11 s after the traffic)", "< 5 %",
            f"{before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB ({growth:+.1f} %)", growth < 5)
        with ThreadPoolExecutor(8) as pool:  # is it bounded? the same fuzz again, same server
            list(pool.map(lambda mb: call(*mb), itertools.islice(body, n)))
        time.sleep(11)
        again = rss_bytes(s.proc.pid)
        growth2 = (again - before) / before * 100
        row(f"Fuzz: server memory after another {n:,} (bounded?)", "< 5 % from the same baseline",
            f"{before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB -> {again / 2**20:.0f} MiB ({growth2:+.1f} % "
            f"after {2 * n:,})", growth2 < 5)
    finally:
        s.kill()
        redis.stop()


# -- Redis latency: the frame path, in process ---------------------------------------------------------

@dataclass
class _Res:
    box_xyxy: np.ndarray
    score: float


class FakeExecutor:
    """Takes `compute_s` per batch without using the CPU (as an accelerator would)."""

    max_in_flight = 1

    def __init__(self, state: object, compute_s: float) -> None:
        self.state = state
        self.compute_s = compute_s
        self.busy = 0.0

    async def initialize(self, frames, boxes):  # type: ignore[no-untyped-def]
        return [self.state for _ in frames]

    async def step(self, states, frames):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        await asyncio.sleep(self.compute_s)
        self.busy += time.perf_counter() - t0
        return [(s, _Res(s.box_xyxy, 0.9)) for s in states], time.perf_counter() - t0


async def _frame_path(redis_url: str, state: object, seconds: float, tracks: int, inflight: int) -> tuple[float, float]:
    from server.core import TrackManager
    from server.metrics import Metrics
    from server.settings import Settings
    from server.state.store import RedisStateStore

    settings = Settings(max_batch_size=tracks, max_batch_wait_ms=1.0, fifo_max_queue=inflight + 1,
                        default_policy="fifo", fifo_max_age_s=60.0, track_idle_timeout_s=0,
                        max_pending_decodes=4096)
    ex = FakeExecutor(state, compute_s=0.004)
    store = RedisStateStore(redis_url, f"bench-{time.monotonic_ns()}", timeout_s=2.0)
    m = TrackManager(settings, ex, "fake", Metrics(), store)
    m.start()
    rgb = np.zeros((48, 64, 3), np.uint8)
    raw = pb.Frame(raw=pb.RawImage(format=pb.RawImage.RGB24, width=64, height=48, data=rgb.tobytes()))
    ids = []
    for _ in range(tracks):
        tid, _ = await m.start_track(pb.StartTrackRequest(first_frame=raw, initial_box=pb.Box(x=5, y=5, width=20,
                                                                                               height=20)))
        ids.append(tid)
    done = 0
    stop_at = time.monotonic() + seconds

    async def client(tid: str) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            fut = await m.push(tid, raw)
            res = await fut
            if res.status == pb.TRACKING:
                done += 1

    await asyncio.sleep(0)
    ex.busy = 0.0
    t0 = time.monotonic()
    await asyncio.gather(*(client(t) for t in ids for _ in range(inflight)))
    wall = time.monotonic() - t0
    for tid in ids:
        await m.stop_track(tid)
    for task in m._tasks:
        task.cancel()
    await store.close()
    return done / wall, ex.busy / wall


async def _grpc_clients(port: int, seconds: float, tracks: int, inflight: int) -> float:
    """Closed-loop async clients, `inflight` frames outstanding per track; -> tracked frames per second."""
    from lorat.v1 import tracker_pb2_grpc as pb_grpc

    frames, boxes = make_frames(71, 8)
    msgs = [frame_pb(f) for f in frames]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.TrackerStub(ch)
        ids = []
        for i in range(tracks):
            resp = await stub.StartTrack(pb.StartTrackRequest(
                track_id=f"lat{i}", first_frame=msgs[0], initial_box=box_pb(boxes[0]),
                options=pb.TrackOptions(overload_policy=pb.FIFO, max_queue=inflight + 1, max_frame_age_seconds=60)))
            ids.append(resp.track_id)
        done = 0
        stop_at = time.monotonic() + seconds

        async def client(tid: str, k: int) -> None:
            nonlocal done
            n = k
            while time.monotonic() < stop_at:
                res = await stub.PushFrame(pb.PushFrameRequest(track_id=tid, frame=msgs[1 + n % 7]), timeout=60)
                n += 1
                done += res.status == pb.TRACKING
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        await asyncio.gather(*(client(t, k) for t in ids for k in range(inflight)))
        wall = time.monotonic() - t0
        for tid in ids:
            await stub.StopTrack(pb.StopTrackRequest(track_id=tid))
        return done / wall


def redis_latency_server(ckpt: Path, tmp: Path, seconds: float) -> None:
    """The same figure end to end: a real server process (tiny model) and gRPC clients in this process."""
    redis = RedisProc().start()
    proxy = ProxyProcess(redis.port, delay_s=0.0025).start()
    try:
        rates = {}
        for name, url in (("direct", redis.url), ("+5 ms", proxy.url)):
            s = ServerProc(url, ckpt, tmp / f"lat-{name}.log", max_batch_wait_ms=2, publish_streams="false",
                           max_pending_decodes=512).start()
            try:
                rates[name] = asyncio.run(_grpc_clients(s.port, seconds, tracks=16, inflight=8))
            finally:
                s.kill()
        ratio = rates["+5 ms"] / rates["direct"]
        row("Redis +5 ms per round trip: end-to-end throughput vs direct Redis (lorat-serve, tiny model, "
            "16 tracks x 8 frames in flight, gRPC)", ">= 90 %",
            f"{rates['+5 ms']:.0f} vs {rates['direct']:.0f} frames/s = {ratio * 100:.0f} %", ratio >= 0.9)
    finally:
        proxy.stop()
        redis.stop()


def redis_latency(seconds: float) -> None:
    torch.manual_seed(0)
    engine = TrackingEngine(build_model("tiny"), device="cpu", precision="fp32")
    (state,) = engine.initialize([np.zeros((48, 64, 3), np.uint8)], [[5, 5, 20, 20]])
    redis = RedisProc().start()
    proxy = ProxyProcess(redis.port, delay_s=0.0025).start()  # +5 ms per round trip (own process)
    try:
        runs: dict[str, list[tuple[float, float]]] = {"direct": [], "+5 ms": []}
        for _ in range(3):  # alternate, so that the load of a shared machine hits both alike
            runs["direct"].append(asyncio.run(_frame_path(redis.url, state, seconds, tracks=16, inflight=8)))
            runs["+5 ms"].append(asyncio.run(_frame_path(proxy.url, state, seconds, tracks=16, inflight=8)))
        direct, busy_direct = statistics.median(r[0] for r in runs["direct"]), statistics.median(
            r[1] for r in runs["direct"])
        slow, busy_slow = statistics.median(r[0] for r in runs["+5 ms"]), statistics.median(
            r[1] for r in runs["+5 ms"])
        ratio = slow / direct
        row("Redis +5 ms per round trip: frame-path throughput vs direct Redis (same run, 3 alternating runs "
            "each, medians; fake 4 ms engine, 16 tracks x 8 frames in flight)", ">= 90 %",
            f"{slow:.0f} vs {direct:.0f} frames/s = {ratio * 100:.0f} % (engine busy {busy_slow * 100:.0f} % vs "
            f"{busy_direct * 100:.0f} %)", ratio >= 0.9)
    finally:
        proxy.stop()
        redis.stop()


# -- Redis paused ------------------------------------------------------------------------------------------

def redis_paused(ckpt: Path, tmp: Path, pause_s: float) -> None:
    redis = RedisProc().start()
    frames, boxes = make_frames(31, 400)
    s = ServerProc(redis.url, ckpt, tmp / "pause.log", lease_ttl_s=10.0).start()
    client = redis.client()
    ids = [f"p{i}" for i in range(4)]
    try:
        for tid in ids:
            s.stub.StartTrack(pb.StartTrackRequest(track_id=tid, first_frame=frame_pb(frames[0]),
                                                   initial_box=box_pb(boxes[0])))
        got: dict[str, list[float]] = {tid: [] for tid in ids}
        stop = threading.Event()

        def pusher(tid: str) -> None:
            for f in itertools.cycle(frames[1:]):
                if stop.is_set():
                    return
                s.stub.PushFrame(pb.PushFrameRequest(track_id=tid, frame=frame_pb(f)), timeout=pause_s + 60)
                got[tid].append(time.monotonic())
                time.sleep(0.05)

        threads = [threading.Thread(target=pusher, args=(tid,)) for tid in ids]
        for t in threads:
            t.start()
        time.sleep(2.0)
        pause(redis.proc.pid)
        t_pause = time.monotonic()
        time.sleep(1.0)
        degraded = health(s, "redis") == health_pb2.HealthCheckResponse.NOT_SERVING
        serving = health(s, "") == health_pb2.HealthCheckResponse.SERVING
        time.sleep(max(0.0, pause_s - 1.0))
        t_resume = time.monotonic()
        resume(redis.proc.pid)
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join(60)
        during = sum(1 for tid in ids for t in got[tid] if t_pause + 0.6 < t < t_resume)
        statuses = [s.stub.GetTrack(pb.GetTrackRequest(track_id=tid)).status for tid in ids]
        stopped = sum(st != pb.TRACKING for st in statuses)
        stored = [decode_record(client.hget(f"lorat:track:{{{tid}}}", "state"))[1]["server"]["frames_processed"]
                  for tid in ids]
        delivered = [len(got[tid]) for tid in ids]
        unwritten = sum(max(0, d - st) for d, st in zip(delivered, stored))
        row(f"Redis paused {pause_s:g} s: tracks stopped", "none", f"{stopped} of {len(ids)}", stopped == 0)
        row(f"Redis paused {pause_s:g} s: results delivered whose state was never written", "none",
            f"{during} results released during the pause; {unwritten} delivered beyond the stored state "
            f"({sum(delivered)} delivered in all)", during == 0 and unwritten == 0)
        row(f"Redis paused {pause_s:g} s: health shows the degradation", "yes",
            f"health 'redis' NOT_SERVING: {degraded}; readiness still SERVING: {serving}", degraded and serving)
    finally:
        s.kill()
        redis.stop()


# -- idle timeout, soak, nothing left -------------------------------------------------------------------

def idle_and_soak(ckpt: Path, tmp: Path, soak_s: float) -> None:
    redis = RedisProc().start()
    frames, boxes = make_frames(61, 60)
    s = ServerProc(redis.url, ckpt, tmp / "soak.log", track_idle_timeout_s=2.0, ended_retention_s=600,
                   result_stream_ttl_s=600).start()
    r = redis.client()
    try:
        s.stub.StartTrack(pb.StartTrackRequest(track_id="idle", first_frame=frame_pb(frames[0]),
                                               initial_box=box_pb(boxes[0])))
        t0 = time.monotonic()
        while s.stub.GetTrack(pb.GetTrackRequest(track_id="idle")).status == pb.TRACKING:
            time.sleep(0.1)
        row("An idle push track is stopped after its timeout", "yes",
            f"stopped after {time.monotonic() - t0:.1f} s (--track-idle-timeout-s 2)", True)
        ids = [f"s{i}" for i in range(16)]
        for tid in ids:
            s.stub.StartTrack(pb.StartTrackRequest(track_id=tid, first_frame=frame_pb(frames[0]),
                                                   initial_box=box_pb(boxes[0])))
        stop = threading.Event()
        counts = collections.Counter()

        def pusher(tid: str) -> None:
            for f in itertools.cycle(frames[1:]):
                if stop.is_set():
                    return
                s.stub.PushFrame(pb.PushFrameRequest(track_id=tid, frame=frame_pb(f)), timeout=60)
                counts[tid] += 1

        threads = [threading.Thread(target=pusher, args=(tid,)) for tid in ids]
        for t in threads:
            t.start()
        warm = min(30.0, soak_s / 5)
        time.sleep(warm)
        start_rss = rss_bytes(s.proc.pid)
        time.sleep(soak_s - warm)
        end_rss = rss_bytes(s.proc.pid)
        stop.set()
        for t in threads:
            t.join(60)
        growth = (end_rss - start_rss) / start_rss * 100
        row(f"Soak: 16 tracks for {soak_s:g} s, server memory", "no growth",
            f"{start_rss / 2**20:.0f} MiB after {warm:.0f} s warm-up -> {end_rss / 2**20:.0f} MiB ({growth:+.1f} %; "
            f"{sum(counts.values())} frames)", growth < 5)
        for tid in ids:
            s.stub.StopTrack(pb.StopTrackRequest(track_id=tid))
        time.sleep(1.0)
        series = sum(1 for ln in s.metrics_text().splitlines() if "track_id=" in ln and not ln.startswith("#"))
        leases = len(list(r.scan_iter("lorat:lease:*")))
        no_ttl = [k.decode() for pattern in ("lorat:track:*", "lorat:lease:*", "lorat:results:*")
                  for k in r.scan_iter(pattern) if r.pttl(k) < 0]
        listed = len(s.stub.ListTracks(pb.ListTracksRequest()).tracks)
        row("After stopping all tracks: per-track state", "only documented retention",
            f"per-track metric series: {series}; lease keys: {leases}; per-track keys without a TTL: "
            f"{len(no_ttl)}; tracks listed: {listed}",
            series == 0 and leases == 0 and not no_ttl)
    finally:
        s.kill()
        redis.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 s pause, 30 s soak, 2,000 fuzzed requests")
    ap.add_argument("--out", default=str(ROOT / "bench/results/faults.md"))
    args = ap.parse_args()
    pause_s, soak_s, n_fuzz = (5.0, 30.0, 2000) if args.quick else (30.0, 300.0, 10_000)
    os.environ["LORAT_HTTP_PORT"] = "-1"  # no web console: several servers run side by side
    torch.manual_seed(1234)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ckpt = tmp / "tiny.safetensors"
        save_merged(build_model("tiny").eval(), ckpt)
        t0 = time.monotonic()
        load0 = "/".join(f"{v:.2f}" for v in os.getloadavg())
        lease_theft(ckpt, tmp)
        redis_latency(5.0 if not args.quick else 3.0)
        redis_latency_server(ckpt, tmp, 10.0 if not args.quick else 5.0)
        redis_paused(ckpt, tmp, pause_s)
        fuzz(ckpt, tmp, n_fuzz)
        idle_and_soak(ckpt, tmp, soak_s)
        total = time.monotonic() - t0
    cmd = "bench/faults.py" + (" --quick" if args.quick else "")
    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    lines = ["# Fault figures (issue 8)", "",
             f"`.venv/bin/python {cmd}` on this machine, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{total:.0f} s in all; load average at the start {load0}, at the end {load} (1/5/15 min; "
             f"{os.cpu_count()} cores shared with other work). Real redis-server and lorat-serve processes on "
             "loopback (tiny model).", "",
             "| what | target | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {v} |" for a, b, c, v in ROWS]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
