"""Both tracker families side by side on this CPU: frames/s of the per-frame network step, fp32 and bf16,
with and without the template cache, at batch 1 and 8; and whether MixFormerV2-S tracks in real time.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/families.py

Timed (random weights; speed does not depend on the values):
- MixFormerV2 "no cache": the full forward `model(template, online_template, search)`, as the authors'
  tracker runs it every frame; "cache": `forward_cached(cache, search)` with the per-track keys and values of
  both templates computed beforehand (what the engine runs).
- LoRAT "no cache": `model(template, search, mask)` (the template embedded every frame); "cache":
  `forward_tokens(template_tokens, search)`. LoRAT's blocks attend jointly, so only the embedding is cached.
bf16 casts the weights once, as the engine does (MixFormerV2's heads stay float32).
Each row's baseline ("no cache") is measured in the same run, interleaved with the cached timing, so the
saving is a ratio of two numbers taken under the same load. The real-time check runs `lorat_infer.Tracker`
end to end (OpenCV crop, network, map-back) on a 640x480 synthetic video at batch 1.
Writes a markdown table to bench/results/families.md (or --output).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lorat_infer import Tracker, build_model
from lorat_infer.eval.synthetic import generate_sequence
from lorat_infer.flops import lorat_flops
from lorat_infer.mixformer.flops import mixformer_macs

RESULTS = Path(__file__).parent / "results" / "families.md"
MODELS = ("MixFormerV2-S", "MixFormerV2-B", "S-224", "B-224")
REAL_TIME_FPS = 25.0


def timed(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def cast(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model as the engine runs it: weights cast once (not autocast per call); MixFormerV2's heads
    stay float32 as its engine family keeps them."""
    if precision == "fp32":
        return model
    out = copy.deepcopy(model)
    for p in out.parameters():
        p.data = p.data.to(torch.bfloat16)
    if hasattr(out, "box_head"):
        out.box_head.float()
        out.score_head.float()
    return out


def steps(name: str, model: torch.nn.Module, batch: int, dtype: torch.dtype
          ) -> tuple[Callable[[], object], Callable[[], object]]:
    """(full per-frame forward, cached per-frame forward) on random inputs."""
    cfg = model.config
    z = torch.randn(batch, 3, cfg.template_size, cfg.template_size, dtype=dtype)
    x = torch.randn(batch, 3, cfg.search_size, cfg.search_size, dtype=dtype)
    if name.startswith("MixFormerV2"):
        oz = torch.randn_like(z)
        cache = model.template_cache(z, oz)
        return (lambda: model(z, oz, x)), (lambda: model.forward_cached(cache, x))
    mask = torch.zeros(batch, *cfg.template_grid, dtype=torch.long)
    tokens = model.embed_template(z, mask)
    return (lambda: model(z, x, mask)), (lambda: model.forward_tokens(tokens, x))


def counted_gflop(name: str, model: torch.nn.Module) -> tuple[float, float]:
    """(full, cached) GFLOP of one frame as torch's FlopCounterMode counts the calls actually made (matmuls,
    convolutions, attention): a measurement of the work, independent of machine load."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    full, cached = steps(name, model, 1, torch.float32)
    out = []
    for fn in (full, cached):
        # the math attention backend: its matmuls are counted (the CPU flash kernel is not)
        with torch.inference_mode(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
            fn()
        out.append(counter.get_total_flops() / 1e9)
    return out[0], out[1]


def gflop(name: str, cached: bool) -> float:
    if name.startswith("MixFormerV2"):
        return 2 * mixformer_macs(name, cached) / 1e9
    return lorat_flops(name, include_template_embed=not cached) / 1e9


def tracker_fps(precision: str, frames: int) -> tuple[float, float, int]:
    """One MixFormerV2-S track (Tracker, batch 1) end to end: frames/s (wall clock), CPU seconds per frame
    (all threads of this process: what the frame costs whatever else runs), online-template updates."""
    torch.manual_seed(0)
    model = build_model("MixFormerV2-S").eval()
    seq = generate_sequence(21, frames + 3, size=(640, 480))
    tracker = Tracker(model, precision=precision, update_interval=10)
    tracker.initialize(seq.frames[0], seq.boxes[0])
    for frame in seq.frames[1:3]:  # warm-up
        tracker.track(frame)
    times = []
    cpu0 = time.process_time()
    for frame in seq.frames[3:]:
        t0 = time.perf_counter()
        tracker.track(frame)
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / frames
    return 1 / statistics.median(times), cpu, tracker.state.online_updates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--tracker-frames", type=int, default=40)
    p.add_argument("--output", default=str(RESULTS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows, savings, counted = [], {}, {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(name).eval()
        counted[name] = counted_gflop(name, model)
        for precision in args.precisions.split(","):
            run_model = cast(model, precision)
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                with torch.inference_mode():
                    full, cached = steps(name, run_model, batch, dtype)
                    t_full, t_cached = [], []
                    for _ in range(args.repeats):  # interleaved: both see the same machine load
                        t_full += timed(full, warmup=1 if not t_full else 0, repeats=1)
                        t_cached += timed(cached, warmup=1 if not t_cached else 0, repeats=1)
                fps_full = batch / min(t_full)  # best of the repeats: the least disturbed by other load
                fps_cached = batch / min(t_cached)
                saving = 1 - fps_full / fps_cached
                savings[(name, precision, batch)] = saving
                rows.append(f"| {name} | {precision} | {batch} | {gflop(name, False):.1f} / {gflop(name, True):.1f} "
                            f"| {fps_full:.1f} | {fps_cached:.1f} | {100 * saving:.0f}% "
                            f"| {100 * (1 - gflop(name, True) / gflop(name, False)):.0f}% |")
                print(rows[-1], flush=True)
        del model
    realtime = []
    for precision in args.precisions.split(","):
        fps, cpu, updates = tracker_fps(precision, args.tracker_frames)
        verdict = "yes" if fps >= REAL_TIME_FPS else "no"
        bound = torch.get_num_threads() / cpu
        realtime.append(f"| MixFormerV2-S | {precision} | {fps:.1f} | {1000 * cpu:.0f} | {bound:.0f} | {verdict} "
                        f"| {updates} |")
        print(realtime[-1], flush=True)

    work = [f"| {name} | {full:.2f} | {cached:.2f} | {100 * (1 - cached / full):.1f}% |"
            for name, (full, cached) in counted.items()]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    command = "OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/families.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else "")
    text = "\n".join([
        "# Tracker families on this CPU",
        "",
        f"`{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}.",
        "Random weights. Per-frame network step only (crops excluded), best of "
        f"{args.repeats} timed calls after 1 warm-up; full and cached calls interleaved. GFLOP = 2 x analytic MACs "
        "per frame (full / cached). MixFormerV2's full forward is the authors' per-frame call; LoRAT's 'no cache' "
        "re-embeds the template (its blocks attend jointly, so only the embedding can be cached).",
        "",
        "| model | precision | batch | GFLOP/frame full / cached | frames/s no cache | frames/s cache | "
        "measured saving (time) | analytic saving (FLOP) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Work per frame at batch 1 as `torch.utils.flop_counter.FlopCounterMode` counts it (every matmul, "
        "convolution and attention call actually made; independent of the machine's load):",
        "",
        "| model | GFLOP full | GFLOP cached | counted saving |",
        "|---|---:|---:|---:|",
        *work,
        "",
        f"Real time (>= {REAL_TIME_FPS:g} frames/s) at batch 1: `lorat_infer.Tracker` end to end (OpenCV crop, "
        f"cached network step, map-back, online-template rule with update_interval 10) on a 640x480 synthetic "
        f"video, {args.tracker_frames} frames after 2 warm-up frames; frames/s = 1 / median time per frame.",
        "",
        "CPU ms/frame is the process's CPU time (all threads) per frame; threads / CPU s per frame is the "
        "frame rate those cores would give if nothing else ran (an upper bound: it assumes perfect scaling).",
        "",
        "| model | precision | frames/s (wall) | CPU ms/frame | frames/s bound on idle cores | real time (wall)? "
        "| online-template updates |",
        "|---|---|---:|---:|---:|---|---:|",
        *realtime,
        "",
        f"Total bench time {time.perf_counter() - started:.0f} s; load average at the end {load} (on 2 cores: "
        "above 2, other processes shared the CPU and absolute frames/s are deflated; the savings are ratios "
        "taken under the same load).",
        "",
    ])
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
