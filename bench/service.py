"""Service throughput vs the raw batched engine, measured in the same run.

N concurrent closed-loop clients (each pushes a 640x480 JPEG, waits for its result, pushes the next) over
loopback gRPC to a `lorat-serve` process; the ceiling is `TrackingEngine.step` on already-decoded frames at
the same batch sizes, same model, same machine, same run. Also: per-track memory with 100 idle tracks.

Model: the "S-224" variant (ViT-S/14, 12 blocks, 224 px search) with random weights: its forward dominates
a frame's cost as it would in a real deployment (weights do not change the cost).

    .venv/bin/python bench/service.py [--clients 1 4 8 16] [--seconds 6] [--variant S-224]
Writes the table to bench/results/service.md.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import psutil
import redis
import torch
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc
from PIL import Image

from lorat_infer import TrackingEngine, build_model, save_merged
from lorat_infer.eval.synthetic import generate_sequence
from server.state.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[1]


def jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def start_server(ckpt: Path, redis_url: str, max_batch: int) -> tuple[subprocess.Popen, int, int, grpc.Channel]:
    port, mport = free_port(), free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--grpc-port", str(port), "--metrics-port", str(mport), "--redis-url",
         redis_url, "--checkpoint", str(ckpt), "--max-batch-size", str(max_batch), "--max-batch-wait-ms", "10",
         "--max-tracks", "512", "--log-level", "WARNING", "--publish-streams", "false", "--http-port", "-1",
         "--max-pending-decodes", "1024", "--track-idle-timeout-s", "0"],
        cwd=ROOT, env=env)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.TrackerStub(channel)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            stub.ListTracks(pb.ListTracksRequest(), timeout=1)
            return proc, port, mport, channel
        except grpc.RpcError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def engine_ceiling(engine: TrackingEngine, frames: list[np.ndarray], box, batch: int, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Frames per second of engine.step alone at this batch size (decoded frames, no I/O)."""
    states = engine.initialize([frames[0]] * batch, [box] * batch)
    engine.step(states, frames[1:1 + batch] if batch < len(frames) else [frames[1]] * batch)  # warm-up
    n, t0 = 0, time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds or n < 2:
        batch_frames = [frames[(i + k) % len(frames)] for k in range(batch)]
        states = [s for s, _ in engine.step(states, batch_frames)]
        n += 1
        i += 1
    return n * batch / (time.perf_counter() - t0)


def run_clients(stub: pb_grpc.TrackerStub, n: int, frames_jpeg: list[bytes], box, seconds: float  # type: ignore[no-untyped-def]
                ) -> tuple[int, list[float], float]:
    ids = []
    for i in range(n):
        resp = stub.StartTrack(pb.StartTrackRequest(
            first_frame=pb.Frame(encoded=frames_jpeg[0]), initial_box=pb.Box(x=box[0], y=box[1], width=box[2],
                                                                              height=box[3]),
            options=pb.TrackOptions(overload_policy=pb.EVERY_FRAME), labels={"bench": str(i)}))
        ids.append(resp.track_id)
    latencies: list[float] = []
    done = [0]
    lock = threading.Lock()
    stop_at = [0.0]
    warm = threading.Barrier(n + 1, action=lambda: stop_at.__setitem__(0, time.monotonic() + seconds))

    def client(tid: str, offset: int) -> None:
        k = offset
        stub.PushFrame(pb.PushFrameRequest(track_id=tid, frame=pb.Frame(encoded=frames_jpeg[1])))  # warm-up
        warm.wait()
        while time.monotonic() < stop_at[0]:
            t0 = time.perf_counter()
            res = stub.PushFrame(pb.PushFrameRequest(track_id=tid, frame=pb.Frame(
                encoded=frames_jpeg[1 + k % (len(frames_jpeg) - 1)])))
            dt = time.perf_counter() - t0
            k += 1
            if res.status == pb.TRACKING:
                with lock:
                    latencies.append(dt)
                    done[0] += 1

    threads = [threading.Thread(target=client, args=(tid, i)) for i, tid in enumerate(ids)]
    for t in threads:
        t.start()
    warm.wait()
    t_start = stop_at[0] - seconds
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t_start
    for tid in ids:
        stub.StopTrack(pb.StopTrackRequest(track_id=tid))
    return done[0], latencies, elapsed


def idle_track_memory(stub: pb_grpc.TrackerStub, ps: psutil.Process, redis_url: str, frames_jpeg: list[bytes],
                      box, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(server RSS KiB, Redis KiB) per idle track, from n tracks started on a warmed-up server."""
    r = redis.Redis.from_url(redis_url)
    request = pb.StartTrackRequest(first_frame=pb.Frame(encoded=frames_jpeg[0]),
                                   initial_box=pb.Box(x=box[0], y=box[1], width=box[2], height=box[3]))
    for _ in range(3):  # warm-up: allocator pools, first-call caches
        stub.StopTrack(pb.StopTrackRequest(track_id=stub.StartTrack(request).track_id))
    time.sleep(0.5)
    rss0, red0 = ps.memory_info().rss, r.info("memory")["used_memory"]
    ids = [stub.StartTrack(request).track_id for _ in range(n)]
    time.sleep(0.5)
    rss1, red1 = ps.memory_info().rss, r.info("memory")["used_memory"]
    for tid in ids:
        stub.StopTrack(pb.StopTrackRequest(track_id=tid))
    return (rss1 - rss0) / n / 1024, (red1 - red0) / n / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--variant", default="S-224")
    ap.add_argument("--idle-tracks", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "bench/results/service.md"))
    args = ap.parse_args()

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.manual_seed(0)
    model = build_model(args.variant).eval()
    tmp = Path(tempfile.mkdtemp(prefix="lorat-bench-"))
    ckpt = tmp / "model.safetensors"
    save_merged(model, ckpt)
    seq = generate_sequence(0, num_frames=16, size=(640, 480))
    frames = seq.frames
    box = [float(v) for v in seq.boxes[0]]
    frames_jpeg = [jpeg(f) for f in frames]
    # The ceiling decodes nothing: give it the same pixels the server sees after JPEG decoding.
    decoded = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in frames_jpeg]

    rows = []
    with EmbeddedRedis() as emb:
        proc, _port, mport, channel = start_server(ckpt, emb.url, max(args.clients))
        ps = psutil.Process(proc.pid)
        stub = pb_grpc.TrackerStub(channel)
        try:
            # Per-track memory first, on a fresh process (later load leaves freed memory in the allocator).
            per_track_kib, per_track_redis_kib = idle_track_memory(stub, ps, emb.url, frames_jpeg, box,
                                                                   args.idle_tracks)
            engine = TrackingEngine(model, device="cpu", precision="fp32")
            for n in args.clients:
                # Ceiling measured before and after the service window: other load on the machine hits both.
                ceil_a = engine_ceiling(engine, decoded, box, n, args.seconds / 2)
                before = scrape(mport)
                ps.cpu_percent(None)
                count, lat, elapsed = run_clients(stub, n, frames_jpeg, box, args.seconds)
                cpu = ps.cpu_percent(None)
                rss = ps.memory_info().rss / 2**20
                after = scrape(mport)
                ceil_b = engine_ceiling(engine, decoded, box, n, args.seconds / 2)
                ceiling = (ceil_a + ceil_b) / 2
                batches = metric(after, "lorat_batch_size_count") - metric(before, "lorat_batch_size_count")
                bframes = metric(after, "lorat_batch_size_sum") - metric(before, "lorat_batch_size_sum")
                fps = count / elapsed
                lat_ms = sorted(x * 1000 for x in lat) or [float("nan")]
                p99 = lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))]
                rows.append((n, fps, ceiling, fps / ceiling, statistics.median(lat_ms), p99,
                             bframes / max(batches, 1), cpu, rss))
                print(f"N={n}: {fps:.2f} fps vs engine {ceiling:.2f} fps ({ceil_a:.2f}/{ceil_b:.2f}) "
                      f"({100 * fps / ceiling:.0f}%), p50 {statistics.median(lat_ms):.0f} ms p99 {p99:.0f} ms, "
                      f"mean batch {bframes / max(batches, 1):.2f}, cpu {cpu:.0f}%, rss {rss:.0f} MiB", flush=True)
        finally:
            channel.close()
            proc.terminate()
            proc.wait(30)

    cfg = model.config
    nz = cfg.template_grid[0] * cfg.template_grid[1]
    token_kib = nz * cfg.embed_dim * 4 / 1024
    lines = [
        f"# Service benchmark ({args.variant}, random weights, fp32, CPU, {psutil.cpu_count()} cores)",
        "",
        f"Command: `.venv/bin/python bench/service.py --seconds {args.seconds:g}`; 640x480 JPEG frames, closed-loop "
        "clients over loopback gRPC (every_frame policy), server max batch "
        f"{max(args.clients)}, max wait 10 ms. Engine ceiling: `TrackingEngine.step` on decoded frames at batch N, "
        "same model, same run (mean of a window before and one after the service window).",
        "",
        "| clients N | service fps | engine fps (batch N) | service/engine | p50 ms | p99 ms | mean batch | "
        "server CPU % | server RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, fps, ceil, ratio, p50, p99, mb, cpu, rss in rows:
        lines.append(f"| {n} | {fps:.2f} | {ceil:.2f} | {100 * ratio:.0f}% | {p50:.0f} | {p99:.0f} | {mb:.2f} | "
                     f"{cpu:.0f} | {rss:.0f} |")
    lines += [
        "",
        f"Idle tracks: {args.idle_tracks} tracks cost {per_track_kib:.0f} KiB of server RSS each and "
        f"{per_track_redis_kib:.0f} KiB of Redis memory each (template tokens: {nz} x {cfg.embed_dim} float32 = "
        f"{token_kib:.0f} KiB).",
    ]
    load = os.getloadavg()
    lines += [
        "",
        f"Machine load average at the end of the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) "
        f"on {psutil.cpu_count()} cores; other jobs' load hits the engine windows and the service window "
        "differently, so ratios above 100% are noise, not a faster service.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
