"""The engine's frame path against the previous engine's, measured in the same run (CPU).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/hotpath.py            # everything, a few minutes
    .venv/bin/python bench/hotpath.py --skip-service --skip-b224          # host path only

1. Host path: for batches 1, 8, 32 on 640x480 and 1920x1080 synthetic frames (objects of the generator's
   default size, 16 % x 20 % of the frame), the host time per frame outside the forward pass (crop, copies,
   state, selection, post-processing, results) and the engine's frames/s with the `tiny` model (random
   weights), for the previous engine (`LegacyEngine` below: a frozen copy of the crop/step code this
   engine replaced, commit d71a371) and the new one: in fp32 and with precision "auto" as one batched
   forward on torch's intra-op threads (`cpu_workers=1`), and "new auto" as it runs by default (a batch of
   8 or more split into data-parallel chunks, one per torch thread, each on one intra-op thread). The
   forward is timed by wrapping `model.forward_tokens` (synchronous on CPU); host = step - forward, measured
   on the one-forward fp32 engine (with concurrent chunks, "outside the forward" has no wall-time meaning).
   The frames/s target compares the default engine ("new auto") with the previous one.
   Steps of the engines alternate so load on the shared machine hits all of them alike; medians of the
   rounds are reported. `--compiled` adds "new auto compiled" (`compile=True`: inductor compiles the
   forward and selection, one batched forward per step); its compile time is reported apart.
2. Service frames/s with the `tiny` model at 8 and 32 closed-loop clients pushing 640x480 JPEGs, next to
   the engine's own frames/s on the decoded frames (bench/service.py's machinery).
3. B-224 at batch 8, fp32 weights against bf16 weights cast once (the engine's forward + selection), and
   the box drift of bf16 from fp32 over a 60-frame sequence (one track; random LeCun-scaled weights as in
   bench/model.py, so rounding shows; boxes of a random model wander, so drift is an upper bound).

Writes the tables to bench/results/hotpath.md (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import importlib.util
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lorat_infer import TrackingEngine, build_model, save_merged  # noqa: E402
from lorat_infer.eval.synthetic import generate_sequence  # noqa: E402

OUT = ROOT / "bench" / "results" / "hotpath.md"


# ---------------------------------------------------------------------------------------------------------
# The previous engine's crop and step, frozen (lorat_infer/crop.py + engine.py at d71a371, trimmed to what a
# step runs). Do not "improve" this: it is the baseline.

_RASTER_EPS = 1e-4
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _rasterize(boxes: np.ndarray) -> np.ndarray:
    out = np.array(boxes, dtype=np.float64, copy=True)
    out[..., 2:] += 1 - _RASTER_EPS
    return np.floor(out)


def _clip(boxes: np.ndarray, sizes_wh) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.clip(boxes, 0, np.tile(np.asarray(sizes_wh, dtype=np.float64), 2))


def _siamfc(boxes: np.ndarray, factor: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    wh = boxes[..., 2:] - boxes[..., :2]
    area = wh + (factor - 1) * wh.sum(axis=-1, keepdims=True) * 0.5
    scale = np.repeat(np.sqrt(float(size) ** 2 / area.prod(axis=-1, keepdims=True)), 2, axis=-1)
    return scale, size / 2.0 - (boxes[..., :2] + boxes[..., 2:]) * 0.5 * scale


def _min_size(boxes: np.ndarray, min_size: float) -> np.ndarray:
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = np.maximum(boxes[..., 2:] - boxes[..., :2], min_size) / 2
    return np.concatenate([centre - half, centre + half], axis=-1)


def _legacy_crop_frame(frame: torch.Tensor, scale, translation, out: int, pad: torch.Tensor):  # type: ignore[no-untyped-def]
    h, w = frame.shape[0], frame.shape[1]
    crop = pad.to(torch.float32).view(3, 1, 1).expand(3, out, out).clone()
    out_box = np.array([0.0, 0.0, w, h]) * np.tile(scale, 2) + np.tile(translation, 2)
    out_box = _rasterize(_clip(out_box, (out, out))).astype(np.int64)
    if not (out_box[0] < out_box[2] and out_box[1] < out_box[3]):
        return crop, scale, translation
    in_box = (out_box - np.tile(translation, 2)) / np.tile(scale, 2)
    in_box = _clip(_rasterize(in_box), (w, h)).astype(np.int64)
    if not (in_box[0] < in_box[2] and in_box[1] < in_box[3]):
        return crop, scale, translation
    region = frame[in_box[1]: in_box[3], in_box[0]: in_box[2]].permute(2, 0, 1).unsqueeze(0).float()
    oh, ow = int(out_box[3] - out_box[1]), int(out_box[2] - out_box[0])
    resized = F.interpolate(region, size=(oh, ow), mode="bilinear", align_corners=False)
    crop[:, out_box[1]: out_box[3], out_box[0]: out_box[2]] = resized[0]
    rs = (out_box[2:] - out_box[:2]) / (in_box[2:] - in_box[:2])
    return crop, rs.astype(np.float64), (out_box[:2] - in_box[:2] * rs).astype(np.float64)


class LegacyEngine:
    """The previous TrackingEngine's step: per-track CPU crops in float, fp32 weights (precision auto on a
    CPU was fp32), tokens re-stacked per step, two blocking readbacks, one result object per track.
    Its template step is the new engine's (only the per-frame path is compared)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()
        self.config = model.config
        hx, wx = self.config.search_grid
        window = torch.outer(torch.hann_window(hx, periodic=False), torch.hann_window(wx, periodic=False))
        self.window = window.flatten()

    @torch.inference_mode()
    def step(self, states: Sequence, frames: Sequence[np.ndarray]) -> list:
        import dataclasses

        from lorat_infer.engine import TrackResult, check_frame

        for f in frames:
            check_frame(f)
        tensors = [torch.from_numpy(np.ascontiguousarray(f)) for f in frames]
        cfg = self.config
        prev = np.stack([s.box_xyxy for s in states])
        scale, translation = _siamfc(_min_size(prev, cfg.min_box_size), cfg.search_factor, cfg.search_size)
        pads = torch.from_numpy(np.stack([s.pad_color for s in states]).astype(np.float32))
        crops, ss, ts = [], [], []
        for i, t in enumerate(tensors):
            c, s, tt = _legacy_crop_frame(t, scale[i], translation[i], cfg.search_size, pads[i])
            crops.append(c)
            ss.append(s)
            ts.append(tt)
        crops_t = torch.stack(crops)
        real_s, real_t = np.stack(ss), np.stack(ts)
        tokens = torch.stack([s.template_tokens.float() for s in states])
        mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_STD).view(1, 3, 1, 1)
        out = self.model.forward_tokens(tokens, (crops_t / 255.0 - mean) / std)
        n = out["score_map"].shape[0]
        probs = out["score_map"].float().sigmoid().flatten(1)
        w = cfg.window_weight
        idx = torch.argmax(probs * (1 - w) + self.window * w, dim=1)
        rows = torch.arange(n)
        conf = probs[rows, idx].cpu().double().numpy()
        chosen = (out["boxes"].float().flatten(1, 2)[rows, idx] * cfg.search_size).cpu().double().numpy()
        sizes = np.array([[f.shape[1], f.shape[0]] for f in frames], dtype=np.float64)
        boxes = _clip((chosen - np.tile(real_t, 2)) / np.tile(real_s, 2), sizes)
        valid = np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        results = []
        for i, state in enumerate(states):
            box = boxes[i] if valid[i] else state.box_xyxy
            new = dataclasses.replace(state, box_xyxy=box, frame_index=state.frame_index + 1)
            results.append((new, TrackResult(box_xyxy=box, score=float(conf[i]), updated=bool(valid[i]))))
        return results


# ---------------------------------------------------------------------------------------------------------


class ForwardClock:
    """Accumulates the wall and process-CPU time of `model.forward_tokens` (an instance attribute shadows
    the method)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        inner = model.forward_tokens

        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            t0, c0 = time.perf_counter(), time.process_time()
            out = inner(*args, **kwargs)
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0
            return out

        model.forward_tokens = timed  # type: ignore[method-assign]


def tracks(size: tuple[int, int], batch: int, frames: int = 6) -> tuple[list[list[np.ndarray]], list[list[float]]]:
    """`batch` tracks over 4 synthetic sequences (different objects, same frame size)."""
    seqs = [generate_sequence(100 + k, frames, size=size) for k in range(min(4, batch))]
    videos = [seqs[i % len(seqs)].frames for i in range(batch)]
    boxes = [[float(v) for v in seqs[i % len(seqs)].boxes[0]] for i in range(batch)]
    return videos, boxes


def host_path(size: tuple[int, int], batch: int, seconds: float, model: torch.nn.Module, compiled: bool = False
              ) -> dict[str, dict]:
    """Per engine: medians of host us/frame outside the forward (wall and process CPU) and frames/s (per
    wall second and per CPU second). `compiled` adds "new auto compiled" (`compile=True`): its first step
    (the compile) is timed apart as "compile_s" and never counted; its forward is not clocked (the clock's
    Python timers would break the compiled graph)."""
    videos, boxes = tracks(size, batch)
    engines = {  # each on its own copy of the weights, so each forward clock wraps one engine's model
        "previous": LegacyEngine(copy.deepcopy(model)),
        "new fp32": TrackingEngine(copy.deepcopy(model), device="cpu", precision="fp32", cpu_workers=1),
        "new auto one forward": TrackingEngine(copy.deepcopy(model), device="cpu", precision="auto", cpu_workers=1),
        "new auto": TrackingEngine(copy.deepcopy(model), device="cpu", precision="auto"),
    }
    if compiled:
        engines["new auto compiled"] = TrackingEngine(copy.deepcopy(model), device="cpu", precision="auto",
                                                      compile=True)
    init = engines["new fp32"]
    runs: dict[str, dict] = {}
    for name, engine in engines.items():
        maker = engine if isinstance(engine, TrackingEngine) else init
        states = maker.initialize([v[0] for v in videos], boxes)
        t, compile_s = 1, None
        if name == "new auto compiled":
            t0 = time.perf_counter()
            states = [s for s, _ in engine.step(states, [v[1] for v in videos])]
            t, compile_s = 2, time.perf_counter() - t0
        clock = ForwardClock(engine.model) if compile_s is None else SimpleNamespace(seconds=0.0, cpu_seconds=0.0)
        runs[name] = {"engine": engine, "states": states, "clock": clock, "t": t, "compile_s": compile_s,
                      "host": [], "host_cpu": [], "fps": [], "fps_cpu": []}
    stop = time.perf_counter() + seconds
    rounds = 0
    while rounds < 4 or (time.perf_counter() < stop and rounds < 400):
        for run in runs.values():
            t = run["t"]
            frames = [v[1 + (t - 1) % (len(v) - 1)] for v in videos]
            clock = run["clock"]
            fwd0, fwd_cpu0 = clock.seconds, clock.cpu_seconds
            t0, c0 = time.perf_counter(), time.process_time()
            pairs = run["engine"].step(run["states"], frames)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            run["states"] = [s for s, _ in pairs]
            run["t"] = t + 1
            if rounds > 0:  # the first round warms up
                run["host"].append((wall - (clock.seconds - fwd0)) / batch)
                run["host_cpu"].append((cpu - (clock.cpu_seconds - fwd_cpu0)) / batch)
                run["fps"].append(batch / wall)
                run["fps_cpu"].append(batch / max(cpu, 1e-9))
        rounds += 1
    return {name: {"host_us": 1e6 * statistics.median(r["host"]), "host_cpu_us": 1e6 * statistics.median(r["host_cpu"]),
                   "fps": statistics.median(r["fps"]), "fps_cpu": statistics.median(r["fps_cpu"]),
                   "rounds": len(r["host"]), "compile_s": r["compile_s"]} for name, r in runs.items()}


def steady_heap() -> bool:
    """glibc: serve large blocks from the heap and never trim it (mmap threshold 32 MiB, its maximum).

    The previous engine allocates a float copy of every track's source region (about 12 MB at 1080p) per
    step; with glibc's adaptive threshold these were fresh page-faulting mmaps or heap blocks depending on
    what ran before in the process (batch 8 at 1080p: 662 minor faults and 4751 us CPU per frame, or none
    and 3002 us), so its cost, and every ratio, moved between runs. A fixed threshold gives it (and the new
    engine) a warm heap every time: the baseline at its best, independent of history."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def _service_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_service", ROOT / "bench" / "service.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def service_rows(clients: list[int], seconds: float) -> list[tuple[int, float, float]]:
    """(clients, service frames/s, engine frames/s on the same decoded frames) with the tiny model."""
    svc = _service_module()
    from lorat.v1 import tracker_pb2_grpc as pb_grpc

    from server.state.embedded import EmbeddedRedis

    torch.manual_seed(0)
    model = build_model("tiny").eval()
    tmp = Path(tempfile.mkdtemp(prefix="lorat-hotpath-"))
    ckpt = tmp / "tiny.safetensors"
    save_merged(model, ckpt)
    seq = generate_sequence(0, num_frames=16, size=(640, 480))
    box = [float(v) for v in seq.boxes[0]]
    frames_jpeg = [svc.jpeg(f) for f in seq.frames]
    decoded = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in frames_jpeg]
    rows = []
    os.environ["LORAT_HTTP_PORT"] = "-1"  # no web console in the measured server (and no port clash)
    with EmbeddedRedis() as emb:
        proc, _port, _mport, channel = svc.start_server(ckpt, emb.url, max(clients))
        try:
            stub = pb_grpc.TrackerStub(channel)
            engine = TrackingEngine(model, device="cpu")  # what the server runs: precision auto
            for n in clients:
                ceil_a = svc.engine_ceiling(engine, decoded, box, n, seconds / 2)
                count, _lat, elapsed = svc.run_clients(stub, n, frames_jpeg, box, seconds)
                ceil_b = svc.engine_ceiling(engine, decoded, box, n, seconds / 2)
                rows.append((n, count / elapsed, (ceil_a + ceil_b) / 2))
        finally:
            channel.close()
            proc.terminate()
            with contextlib.suppress(Exception):
                proc.wait(timeout=20)
    return rows


def _random_b224() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("bench_model", ROOT / "bench" / "model.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.random_model("B-224")


def b224_rows(steps: int, drift_frames: int) -> dict[str, float]:
    """fp32 vs bf16 weights at batch 8 (frames/s of engine.step), and bf16's drift over a sequence."""
    model = _random_b224()
    videos, boxes = tracks((640, 480), 8, frames=4)
    out: dict[str, float] = {}
    engines = {p: TrackingEngine(model, device="cpu", precision=p) for p in ("fp32", "bf16")}
    states = {p: e.initialize([v[0] for v in videos], boxes) for p, e in engines.items()}
    times: dict[str, list[float]] = {p: [] for p in engines}
    cpu: dict[str, list[float]] = {p: [] for p in engines}
    for k in range(steps + 1):
        for p, e in engines.items():  # alternate: shared-machine load hits both
            frames = [v[1 + k % 3] for v in videos]
            t0, c0 = time.perf_counter(), time.process_time()
            states[p] = [s for s, _ in e.step(states[p], frames)]
            if k:
                times[p].append(time.perf_counter() - t0)
                cpu[p].append(time.process_time() - c0)
    for p in engines:
        out[f"{p}_fps"] = 8 / statistics.median(times[p])
        out[f"{p}_fps_cpu"] = 8 / statistics.median(cpu[p])
    seq = generate_sequence(11, num_frames=drift_frames + 1)
    tracked = {}
    for p, e in engines.items():
        (s,) = e.initialize([seq.frames[0]], [seq.boxes[0]])
        got = []
        for f in seq.frames[1:]:
            ((s, r),) = e.step([s], [f])
            got.append(r.box_xyxy)
        tracked[p] = np.stack(got)
    d = np.abs(tracked["bf16"] - tracked["fp32"])
    out["drift_mean"], out["drift_max"] = float(d.mean()), float(d.max())
    per_frame = d.max(axis=1)
    out["drift_first10_max"] = float(per_frame[:10].max())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=4.0, help="per (frame size, batch) cell")
    ap.add_argument("--clients", default="8,32")
    ap.add_argument("--service-seconds", type=float, default=6.0)
    ap.add_argument("--b224-steps", type=int, default=4)
    ap.add_argument("--drift-frames", type=int, default=60)
    ap.add_argument("--skip-service", action="store_true")
    ap.add_argument("--skip-b224", action="store_true")
    ap.add_argument("--compiled", action="store_true", help="add \"new auto compiled\" (compile=True, inductor "
                    "on the CPU) to the frames/s columns; its compile time is reported apart")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (and crop gather threads); "
                    "0 = torch's default")
    ap.add_argument("--default-malloc", action="store_true", help="keep glibc's adaptive mmap threshold "
                    "(the previous engine's cost then depends on what ran before it; see steady_heap)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    steady = False if args.default_malloc else steady_heap()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    batches = [int(b) for b in args.batches.split(",")]
    cmd = "python bench/hotpath.py" + ("" if not (argv if argv is not None else sys.argv[1:]) else
                                       " " + " ".join(argv if argv is not None else sys.argv[1:]))
    columns = "new fp32 one forward / new auto one forward / **new auto** (default: chunks)" + (
        " / new auto compiled" if args.compiled else "")
    lines = [
        "# Frame path: host time outside the forward, previous engine vs new (same run)",
        "",
        f"`OMP_WAIT_POLICY=PASSIVE {cmd}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other work), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Model `tiny` (random weights), synthetic frames, objects 16 % x 20 % "
        "of the frame. host = step time - `forward_tokens` time, per frame, as wall time and as process CPU "
        "time (all threads; robust to other processes taking the cores); medians over alternating rounds. "
        "frames/s per wall second and per CPU second. \"new auto\" = precision auto (here: "
        f"{TrackingEngine(model, device='cpu').precision}). Heap: "
        + ("glibc mmap threshold fixed at 32 MiB, no trimming (`steady_heap`: every engine on a warm heap)."
           if steady else "glibc's defaults (the previous engine's cost depends on the process history)."),
        "",
        "| frames | batch | host us/frame wall: previous / new fp32 (reduction) | host us/frame CPU: previous / "
        f"new fp32 (reduction) | frames/s wall: previous / {columns} (new auto / previous) | frames per CPU-s: "
        f"previous / {columns} (new auto / previous) | rounds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    summary = {}
    compile_times: list[str] = []
    for size in ((640, 480), (1920, 1080)):
        for batch in batches:
            r = host_path(size, batch, args.seconds, model, compiled=args.compiled)
            prev, new32, auto = r["previous"], r["new fp32"], r["new auto"]
            red = prev["host_us"] / max(new32["host_us"], 1e-9)
            red_cpu = prev["host_cpu_us"] / max(new32["host_cpu_us"], 1e-9)
            new: tuple[dict, ...] = (new32, r["new auto one forward"], auto)
            if args.compiled:
                new += (r["new auto compiled"],)
                compile_times.append(f"{size[0]}x{size[1]} batch {batch}: {r['new auto compiled']['compile_s']:.1f} s")
            spd = auto["fps"] / prev["fps"]
            spd_cpu = auto["fps_cpu"] / prev["fps_cpu"]
            summary[(size, batch)] = (red, red_cpu, spd, spd_cpu)
            lines.append(
                f"| {size[0]}x{size[1]} | {batch} | {prev['host_us']:.0f} / {new32['host_us']:.0f} ({red:.1f}x) | "
                f"{prev['host_cpu_us']:.0f} / {new32['host_cpu_us']:.0f} ({red_cpu:.1f}x) | {prev['fps']:.0f} / "
                + " / ".join(f"{e['fps']:.0f}" for e in new) + f" ({spd:.2f}x) | {prev['fps_cpu']:.0f} / "
                + " / ".join(f"{e['fps_cpu']:.0f}" for e in new) + f" ({spd_cpu:.2f}x) | {prev['rounds']} |")
            print(lines[-1], flush=True)
    if compile_times:
        lines += ["", "\"new auto compiled\": first step (inductor compile, not counted above): "
                  + "; ".join(compile_times) + "."]
    key = ((1920, 1080), 32)
    if key in summary:
        red, red_cpu, spd, spd_cpu = summary[key]

        def verdict(x: float, target: float) -> str:
            return "met" if x >= target else "NOT met"

        lines += [
            "",
            f"Targets at batch 32 on 1920x1080: host time per frame >= 5x lower: **{red:.1f}x** wall "
            f"({verdict(red, 5)}), **{red_cpu:.1f}x** CPU ({verdict(red_cpu, 5)}); engine frames/s >= 4x the "
            f"previous (the default engine, new auto): **{spd:.2f}x** wall ({verdict(spd, 4)}), **{spd_cpu:.2f}x** per "
            f"CPU-second ({verdict(spd_cpu, 4)}).",
        ]
    if not args.skip_service:
        clients = [int(c) for c in args.clients.split(",")]
        lines += [
            "",
            "## Service (tiny model, closed-loop clients pushing 640x480 JPEGs, one lorat-serve process)",
            "",
            "| clients | service frames/s | engine alone frames/s (same frames, batch = clients) | service / engine |",
            "|---:|---:|---:|---:|",
        ]
        try:
            for n, svc_fps, eng_fps in service_rows(clients, args.service_seconds):
                lines.append(f"| {n} | {svc_fps:.0f} | {eng_fps:.0f} | {100 * svc_fps / eng_fps:.0f}% |")
                print(lines[-1], flush=True)
        except Exception as exc:  # keep the other measurements
            lines.append(f"| service run failed: {type(exc).__name__}: {exc} | | | |")
    if not args.skip_b224:
        r = b224_rows(args.b224_steps, args.drift_frames)
        speed = r["bf16_fps"] / r["fp32_fps"]
        speed_cpu = r["bf16_fps_cpu"] / r["fp32_fps_cpu"]
        lines += [
            "",
            "## B-224 at batch 8: fp32 weights vs bf16 weights cast once (engine.step, 640x480 frames)",
            "",
            "| fp32 frames/s | bf16 frames/s | bf16 speed-up (wall) | frames per CPU-s fp32 / bf16 (speed-up) | "
            f"bf16 box drift over {args.drift_frames} frames: mean / worst (px) |",
            "|---:|---:|---:|---:|---:|",
            f"| {r['fp32_fps']:.2f} | {r['bf16_fps']:.2f} | {speed:.2f}x | {r['fp32_fps_cpu']:.2f} / "
            f"{r['bf16_fps_cpu']:.2f} ({speed_cpu:.2f}x) | {r['drift_mean']:.3f} / {r['drift_max']:.3f} |",
            "",
            f"Target: bf16 >= 1.6x fp32: **{speed:.2f}x** wall ({'met' if speed >= 1.6 else 'NOT met'}), "
            f"**{speed_cpu:.2f}x** per CPU-second ({'met' if speed_cpu >= 1.6 else 'NOT met'}). Drift: one "
            "track, synthetic 320x240 sequence (seed 11), random LeCun-scaled weights; the worst drift within "
            f"the first 10 frames was {r['drift_first10_max']:.2f} px (a random model's boxes wander, so later "
            "frames amplify small differences).",
        ]
        print("\n".join(lines[-5:]), flush=True)
    load = os.getloadavg()
    lines += ["", f"Total bench time {time.perf_counter() - t_start:.0f} s; load average (1, 5, 15 min) at the "
              f"start {load_start[0]:.1f}, {load_start[1]:.1f}, {load_start[2]:.1f}, at the end {load[0]:.1f}, "
              f"{load[1]:.1f}, {load[2]:.1f} on {os.cpu_count()} cores (the bench's own threads count in it)."]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
