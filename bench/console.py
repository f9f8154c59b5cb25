"""Cost of the web console's live view: tracking frames/s with one open live view vs none, same run.

A `lorat-serve` process (built-in default model unless --checkpoint) holds K push tracks; K closed-loop
clients push raw 640x480 frames as fast as the server answers (policy every_frame). Phases alternate
"no view" / "one live view open" (a WebSocket client on /api/tracks/t0/live that reads every message, as
a browser would) in ABBA order so that drift in the machine's speed hits both alike; medians compared.
Throughput is the server's own lorat_frames_processed_total over each phase; on a machine shared with
other work it is noisy, so the server process's CPU time per tracked frame (psutil) is reported too: what
a view adds there is its cost on a machine that tracks as fast as it can.

    .venv/bin/python bench/console.py [--tracks 4] [--seconds 12] [--rounds 2] [--checkpoint PATH]
Writes the table to bench/results/console.md. Target: the view costs at most 5% of frames/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import psutil
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc

from lorat_infer.eval.synthetic import generate_sequence
from server.state.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]


def raw(rgb: np.ndarray) -> pb.Frame:
    h, w = rgb.shape[:2]
    return pb.Frame(raw=pb.RawImage(format=pb.RawImage.RGB24, width=w, height=h, data=rgb.tobytes()))


def processed(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
               if ln.startswith("lorat_frames_processed_total "))


class View(threading.Thread):
    """A live-view client in its own thread: reads every message until told to stop."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.frames = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.ws_connect(self.url) as ws:
            while not self.stop_flag.is_set():
                try:
                    msg = await asyncio.wait_for(ws.receive(), 0.5)
                except asyncio.TimeoutError:
                    continue
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.frames += 1
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--checkpoint", default="")
    ap.add_argument("--out", default=str(ROOT / "bench/results/console.md"))
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    seq = generate_sequence(3, num_frames=48, size=(w, h))
    frames = [raw(f) for f in seq.frames]

    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    cmd = [sys.executable, "-m", "server", "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
           "--http-port", str(http_port), "--publish-streams", "false"]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    log = open("/tmp/bench-console-server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[
            ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)])
        stub = pb_grpc.TrackerStub(channel)
        grpc.channel_ready_future(channel).result(timeout=120)
        deadline = time.monotonic() + 120
        while True:
            try:
                stub.ListTracks(pb.ListTracksRequest(), timeout=2)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        b = seq.boxes[0]
        for k in range(args.tracks):
            stub.StartTrack(pb.StartTrackRequest(
                track_id=f"t{k}", first_frame=frames[0], initial_box=pb.Box(x=b[0], y=b[1], width=b[2], height=b[3]),
                options=pb.TrackOptions(overload_policy=pb.EVERY_FRAME)), timeout=60)
        stop = threading.Event()

        def client(k: int) -> None:
            i = 1
            while not stop.is_set():
                stub.PushFrame(pb.PushFrameRequest(track_id=f"t{k}", frame=frames[i % len(frames)]), timeout=60)
                i += 1

        pushers = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(args.tracks)]
        for t in pushers:
            t.start()
        time.sleep(3)  # warm up
        rows: dict[str, list[float]] = {"none": [], "view": []}
        cpu_ms: dict[str, list[float]] = {"none": [], "view": []}
        server = psutil.Process(proc.pid)
        view_fps: list[float] = []
        for rnd in range(args.rounds):
            for cond in (("none", "view") if rnd % 2 == 0 else ("view", "none")):  # ABBA: drift hits both
                view = None
                if cond == "view":
                    view = View(f"ws://127.0.0.1:{http_port}/api/tracks/t0/live")
                    view.start()
                    time.sleep(1.0)  # the view is up and streaming
                n0, t0, c0 = processed(metrics_port), time.monotonic(), sum(server.cpu_times()[:2])
                v0 = view.frames if view else 0
                time.sleep(args.seconds)
                n1, t1, c1 = processed(metrics_port), time.monotonic(), sum(server.cpu_times()[:2])
                rows[cond].append((n1 - n0) / (t1 - t0))
                cpu_ms[cond].append((c1 - c0) / max(1.0, n1 - n0) * 1000)
                if view is not None:
                    view_fps.append((view.frames - v0) / (t1 - t0))
                    view.stop_flag.set()
                    view.join(5)
                    time.sleep(1.0)
                print(cond, f"{rows[cond][-1]:.1f} frames/s", flush=True)
        stop.set()
        for t in pushers:
            t.join(60)
    finally:
        proc.terminate()
        proc.wait(30)
    none, view = statistics.median(rows["none"]), statistics.median(rows["view"])
    change = (view - none) / none * 100
    cpu_none, cpu_view = statistics.median(cpu_ms["none"]), statistics.median(cpu_ms["view"])
    cpu_change = (cpu_none / cpu_view - 1) * 100  # frames/s a CPU-bound server keeps, in %
    lines = [
        "# Web console: live view cost",
        "",
        f"`python bench/console.py --tracks {args.tracks} --seconds {args.seconds:g} --rounds {args.rounds} "
        f"--size {args.size}{' --checkpoint ' + args.checkpoint if args.checkpoint else ''}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; model: "
        f"{'built-in default' if not args.checkpoint else args.checkpoint}, {args.tracks} push tracks, raw "
        f"{args.size} frames, closed-loop clients on the same machine.",
        "",
        "| condition | tracking frames/s (per phase, in order) | median | server CPU ms per frame (median) "
        "| live view frames/s |",
        "|---|---|---|---|---|",
        f"| no view open | {', '.join(f'{v:.1f}' for v in rows['none'])} | {none:.1f} | {cpu_none:.2f} | - |",
        f"| one live view open (track t0) | {', '.join(f'{v:.1f}' for v in rows['view'])} | {view:.1f} | "
        f"{cpu_view:.2f} | {statistics.mean(view_fps):.1f} |",
        "",
        f"Throughput with one open view: **{change:+.1f}%**; from CPU time per frame (what a CPU-bound server "
        f"keeps): **{cpu_change:+.1f}%** (target: no worse than -5%).",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
