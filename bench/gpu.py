"""The engine on an NVIDIA GPU: B-224 frames/s and share of the bf16 peak per mode, host time, service, drift.

    .venv/bin/python bench/gpu.py                    # needs a CUDA device; finishes in under 5 minutes
    .venv/bin/python bench/gpu.py --batches 16,32 --skip-service

1. B-224 (random LeCun-scaled weights, as bench/model.py) at batch 16, 32, 64, 128 in four modes: eager,
   `torch.compile`d, CUDA graphs per batch bucket, compiled + graphs; weights in the engine's auto
   precision (fp16 on CUDA) and, for the graphs mode, bf16. Frames/s of `engine.step` on decoded 640x480
   frames (crops included), achieved TFLOP/s from the analytic count, and its share of the bf16 dense peak:
   the nominal peak when the GPU is known (H100/H200 SXM 989, H100 PCIe 756, A100 312, L40S 362 TFLOP/s) and
   the best bf16 `torch.mm` rate measured in this run.
2. Per-step host time: wall time of `engine.launch` (host prep + enqueue; the device work is asynchronous).
3. The service's frames/s with 64 closed-loop clients pushing 640x480 JPEGs (`lorat-serve --device cuda`,
   max batch 64).
4. The boxes' drift from fp32 on the CPU over a sequence (one track), for fp16 and bf16 on the GPU.

Prints one table and writes it to bench/results/gpu.md (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lorat_infer import TrackingEngine, save_merged  # noqa: E402
from lorat_infer.eval.synthetic import generate_sequence  # noqa: E402
from lorat_infer.flops import lorat_flops  # noqa: E402

OUT = ROOT / "bench" / "results" / "gpu.md"
NOMINAL_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
                       "L4": 121.0, "A10": 125.0}
MODES = {  # name -> (compile, cuda_graphs)
    "eager": (False, False),
    "compiled": (True, False),
    "graphs": (False, True),
    "compiled+graphs": (True, True),
}


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def nominal_peak(name: str) -> float | None:
    for key, value in NOMINAL_BF16_TFLOPS.items():  # "H100 PCIe" before "H100" by insertion order
        if key in name:
            return value
    return None


def measured_peak(device: torch.device) -> float:
    """Best bf16 `torch.mm` TFLOP/s on 8192^3."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        torch.mm(a, b)
    torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.mm(a, b)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * n**3 / best / 1e12


def engine_rate(model, device, mode: str, precision: str, batch: int, frames, boxes, seconds: float  # type: ignore[no-untyped-def]
                ) -> tuple[float, float]:
    """(frames/s, host us per step in launch) for one engine configuration.

    Two groups of `batch` tracks alternate with two steps in flight, as the server runs them
    (executor.max_in_flight = 2): group A's step is launched before group B's previous one is finished."""
    compile_, graphs = MODES[mode]
    engine = TrackingEngine(model, device=device, precision=precision, compile=compile_, cuda_graphs=graphs)
    groups = [engine.initialize([frames[0]] * batch, [boxes] * batch) for _ in range(2)]
    for k in range(3):  # warm-up: compilation and graph capture for this bucket
        for g in range(2):
            groups[g], _ = engine.step_arrays(groups[g], [frames[1 + k % (len(frames) - 1)]] * batch)
    torch.cuda.synchronize(device)
    launches: list[float] = []
    pending: list = [None, None]
    steps, k = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < 10:
        g = k % 2
        if pending[g] is not None:
            groups[g], _ = engine.finish(pending[g])
        batch_frames = [frames[1 + (k + i) % (len(frames) - 1)] for i in range(batch)]
        ta = time.perf_counter()
        pending[g] = engine.launch(groups[g], batch_frames)
        launches.append(time.perf_counter() - ta)
        steps += 1
        k += 1
    for g in range(2):
        if pending[g] is not None:
            engine.finish(pending[g])
    torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    return steps * batch / elapsed, 1e6 * statistics.median(launches)


def service_rate(model, clients: int, seconds: float) -> float:  # type: ignore[no-untyped-def]
    import grpc
    from lorat.v1 import tracker_pb2 as pb
    from lorat.v1 import tracker_pb2_grpc as pb_grpc

    from server.state.embedded import EmbeddedRedis, free_port

    svc = _load("service")

    tmp = Path(tempfile.mkdtemp(prefix="lorat-gpu-"))
    ckpt = tmp / "b224.safetensors"
    save_merged(model.cpu(), ckpt)
    seq = generate_sequence(0, num_frames=16, size=(640, 480))
    box = [float(v) for v in seq.boxes[0]]
    frames_jpeg = [svc.jpeg(f) for f in seq.frames]
    with EmbeddedRedis() as emb:
        port, mport = free_port(), free_port()
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "LORAT_HTTP_PORT": "-1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--grpc-port", str(port), "--metrics-port", str(mport),
             "--redis-url", emb.url, "--checkpoint", str(ckpt), "--device", "cuda", "--max-batch-size",
             str(clients), "--max-batch-wait-ms", "2", "--max-tracks", "512", "--log-level", "WARNING",
             "--publish-streams", "false", "--decode-threads", str(min(8, os.cpu_count() or 1))],
            cwd=ROOT, env=env)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            stub = pb_grpc.TrackerStub(channel)
            deadline = time.monotonic() + 180
            while True:
                try:
                    stub.ListTracks(pb.ListTracksRequest(), timeout=1)
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("server did not start") from None
                    time.sleep(0.5)
            count, _lat, elapsed = svc.run_clients(stub, clients, frames_jpeg, box, seconds)
            return count / elapsed
        finally:
            channel.close()
            proc.terminate()
            with contextlib.suppress(Exception):
                proc.wait(timeout=30)


def drift(model, device, frames: int) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    """Mean / worst |box - fp32 CPU box| (px) over a sequence, per GPU precision."""
    seq = generate_sequence(11, num_frames=frames + 1)
    tracked = {}
    for key, dev, precision in (("fp32 cpu", "cpu", "fp32"), ("fp16", device, "fp16"), ("bf16", device, "bf16")):
        engine = TrackingEngine(model, device=dev, precision=precision)
        (s,) = engine.initialize([seq.frames[0]], [seq.boxes[0]])
        boxes = []
        for f in seq.frames[1:]:
            ((s, r),) = engine.step([s], [f])
            boxes.append(r.box_xyxy)
        tracked[key] = np.stack(boxes)
    return {k: (float(np.abs(tracked[k] - tracked["fp32 cpu"]).mean()),
                float(np.abs(tracked[k] - tracked["fp32 cpu"]).max())) for k in ("fp16", "bf16")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="16,32,64,128")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--seconds", type=float, default=3.0, help="per (mode, batch) cell")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--service-seconds", type=float, default=10.0)
    ap.add_argument("--drift-frames", type=int, default=30)
    ap.add_argument("--skip-service", action="store_true")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu.py needs an NVIDIA GPU (torch.cuda.is_available() is False); nothing measured.")
        return 2
    t_start = time.perf_counter()
    device = torch.device("cuda", torch.cuda.current_device())
    name = torch.cuda.get_device_name(device)
    model = _load("model").random_model("B-224").to(device)
    flop = lorat_flops("B-224", include_template_embed=False)
    nominal = nominal_peak(name)
    measured = measured_peak(device)
    peak = nominal or measured
    nominal_text = f"{nominal:.0f}" if nominal else "unknown"
    seq = generate_sequence(0, num_frames=8, size=(640, 480))
    frames, box = seq.frames, [float(v) for v in seq.boxes[0]]
    batches = [int(b) for b in args.batches.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    lines = [
        "# LoRAT B-224 on a GPU",
        "",
        f"`python bench/gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"GPU: {name}; torch {torch.__version__}; bf16 dense peak: nominal "
        f"{nominal_text} TFLOP/s, measured `torch.mm` 8192^3 {measured:.0f} "
        f"TFLOP/s; share column uses {'the nominal' if nominal else 'the measured'} peak. {flop / 1e9:.1f} "
        "GFLOP per frame (analytic). Frames/s of engine.step on 640x480 frames, crops included; host = median "
        "wall time of engine.launch per step.",
        "",
        "| mode | weights | batch | frames/s | TFLOP/s | share of bf16 peak | host us/step | host us/frame |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in modes:
        precisions = ["fp16", "bf16"] if mode == "graphs" else ["fp16"]
        for precision in precisions:
            for batch in batches:
                try:
                    fps, host = engine_rate(model, device, mode, precision, batch, frames, box, args.seconds)
                except Exception as exc:  # report, keep going
                    lines.append(f"| {mode} | {precision} | {batch} | failed: {type(exc).__name__}: "
                                 f"{str(exc)[:80]} | | | | |")
                    print(lines[-1], flush=True)
                    continue
                tflops = fps * flop / 1e12
                lines.append(f"| {mode} | {precision} | {batch} | {fps:.0f} | {tflops:.0f} | "
                             f"{100 * tflops / peak:.1f}% | {host:.0f} | {host / batch:.1f} |")
                print(lines[-1], flush=True)
    if not args.skip_service:
        try:
            rate = service_rate(model, args.clients, args.service_seconds)
            lines += ["", f"Service: {args.clients} clients pushing 640x480 JPEGs: **{rate:.0f} frames/s**."]
        except Exception as exc:
            lines += ["", f"Service run failed: {type(exc).__name__}: {exc}"]
        print(lines[-1], flush=True)
    if args.drift_frames:
        d = drift(model, device, args.drift_frames)
        lines += ["", f"Drift from fp32 on the CPU over {args.drift_frames} frames (one track, synthetic 320x240, "
                  "random weights): " + "; ".join(f"{k} mean {m:.2f} px, worst {w:.2f} px" for k, (m, w)
                                                  in d.items()) + "."]
    lines += ["", f"Total bench time {time.perf_counter() - t_start:.0f} s."]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
