"""Where a pushed frame's CPU time goes in the service: CPU milliseconds per frame of each server thread
(decode pool, engine, event loop, ...), the clients and Redis, with the `tiny` model (closed-loop clients
pushing 640x480 JPEGs over loopback gRPC; bench/service.py's machinery).

    .venv/bin/python bench/service_cpu.py [--clients 32] [--seconds 20] [--py-spy /path/to/py-spy]

Per-thread CPU comes from /proc/<pid>/task/*/stat; the thread names from one `py-spy dump` (a profiler that
is not a project dependency: `pip install --target DIR py-spy`); without it the server is one total.
Prints a markdown table (nothing is written).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lorat_infer import build_model, save_merged  # noqa: E402
from lorat_infer.eval.synthetic import generate_sequence  # noqa: E402


def _service_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_service", ROOT / "bench" / "service.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def thread_cpu(pid: int) -> dict[str, float]:
    """Native thread id -> CPU seconds (user + system)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_names(pid: int, py_spy: str | None) -> dict[str, str]:
    """Native thread id -> Python thread name, pool suffixes (_0, _1) dropped."""
    if not py_spy:
        return {}
    dump = subprocess.run([py_spy, "dump", "-p", str(pid), "--nonblocking"], capture_output=True, text=True,
                          timeout=60).stdout
    names = {}
    for m in re.finditer(r"Thread (\d+) \((?:idle|active)[^)]*\): \"([^\"]+)\"", dump):
        names[m.group(1)] = re.sub(r"_\d+$", "", m.group(2))
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--py-spy", default=shutil.which("py-spy"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["LORAT_HTTP_PORT"] = "-1"
    svc = _service_module()
    from lorat.v1 import tracker_pb2_grpc as pb_grpc

    from server.state.embedded import EmbeddedRedis

    torch.manual_seed(0)
    ckpt = Path(tempfile.mkdtemp(prefix="lorat-svc-cpu-")) / "tiny.safetensors"
    save_merged(build_model("tiny").eval(), ckpt)
    seq = generate_sequence(0, num_frames=16, size=(640, 480))
    box = [float(v) for v in seq.boxes[0]]
    frames_jpeg = [svc.jpeg(f) for f in seq.frames]
    settle = min(4.0, args.seconds / 3)
    with EmbeddedRedis() as emb:
        proc, _port, mport, channel = svc.start_server(ckpt, emb.url, args.clients)
        try:
            stub = pb_grpc.TrackerStub(channel)
            me = psutil.Process()
            port = emb.url.rsplit(":", 1)[1].split("/")[0]
            redis = [p for p in psutil.process_iter(["name", "cmdline"])
                     if "redis-server" in (p.info["name"] or "") and port in " ".join(p.info["cmdline"] or [])]
            got: dict[str, tuple] = {}
            clients = threading.Thread(target=lambda: got.setdefault(
                "run", svc.run_clients(stub, args.clients, frames_jpeg, box, args.seconds)))
            clients.start()
            processed = "lorat_frames_processed_total"
            while svc.metric(svc.scrape(mport), processed) < 2 * args.clients:  # past start-up and warm-up
                time.sleep(0.2)
            time.sleep(settle)
            names = thread_names(proc.pid, args.py_spy)
            cpu0 = thread_cpu(proc.pid)
            others0 = [sum(p.cpu_times()[:2]) for p in (me, *redis)]
            frames0 = svc.metric(svc.scrape(mport), processed)
            time.sleep(args.seconds - 2 * settle)
            cpu1 = thread_cpu(proc.pid)
            others1 = [sum(p.cpu_times()[:2]) for p in (me, *redis)]
            frames = svc.metric(svc.scrape(mport), processed) - frames0
            clients.join()
            count, _lat, elapsed = got["run"]
        finally:
            channel.close()
            proc.terminate()
            proc.wait(timeout=20)
    per_thread: collections.Counter[str] = collections.Counter()
    for tid, seconds in cpu1.items():
        per_thread[names.get(tid, "server (unnamed native threads)" if names else "server")] += \
            seconds - cpu0.get(tid, 0.0)
    rows = [(name, s) for name, s in per_thread.most_common() if s > 0]
    rows.append(("clients (this process: gRPC stubs)", others1[0] - others0[0]))
    rows.append(("redis-server", sum(others1[1:]) - sum(others0[1:])))
    print(f"{args.clients} clients: {count / elapsed:.0f} frames/s; load average {os.getloadavg()[0]:.1f}\n")
    print("| thread | CPU ms per frame |\n|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {1e3 * seconds / frames:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
