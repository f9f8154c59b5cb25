"""Model speed against the machine's own matmul ceiling, fp32 against bf16, and bf16's box drift.

    .venv/bin/python bench/model.py                       # tiny, S-224, B-224 at batch 1, 4, 8
    .venv/bin/python bench/model.py --variants B-224 --profile

What is timed is the per-frame work of a running track, `model.forward_tokens` with the template tokens
precomputed (as the service and the engine do). GFLOP/s uses the analytic count of `lorat_infer.flops`
(2 x MACs). The ceiling is measured in the same run: the best fp32 `torch.mm` rate on large square
matrices, so the "% of ceiling" column is a ratio of two numbers taken under the same load. Absolute times
on a shared machine are noisy; the ratios are what to compare. Writes a markdown table to
bench/results/model.md (or --output).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lorat_infer import Tracker, build_model, load_model
from lorat_infer.eval.synthetic import generate_sequence
from lorat_infer.flops import lorat_flops
from lorat_infer.loading import default_model_path

RESULTS = Path(__file__).parent / "results" / "model.md"


def timed(fn: Callable[[], object], warmup: int, repeats: int, min_warmup_s: float = 0.5) -> list[float]:
    """Wall times of `repeats` calls after at least `warmup` calls and `min_warmup_s` seconds of warm-up."""
    t0, done = time.perf_counter(), 0
    while done < warmup or time.perf_counter() - t0 < min_warmup_s:
        fn()
        done += 1
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def matmul_rate(dtype: torch.dtype, n: int, repeats: int) -> float:
    """Best GFLOP/s of an n x n x n `torch.mm`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    best = min(timed(lambda: torch.mm(a, b), warmup=2, repeats=repeats))
    return 2 * n**3 / best / 1e9


def autocast(precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def random_model(variant: str) -> torch.nn.Module:
    """Random weights scaled like a trained network's: LeCun-normal Linear weights (std 1/sqrt(fan_in))
    and LayerScale 1. With the training init (std 0.02, LayerScale 1e-5) every block is nearly the
    identity and the head nearly constant, so bf16 rounding would not show in the boxes. Timing does not
    depend on the values."""
    torch.manual_seed(0)
    model = build_model(variant).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, module.in_features**-0.5)
        for name, param in model.named_parameters():
            if name.endswith(("ls1.gamma", "ls2.gamma")):
                param.fill_(1.0)
    return model


def bench_forward(variant: str, batch: int, precision: str, warmup: int, repeats: int
                  ) -> tuple[dict[str, float], torch.Tensor]:
    """Per-frame timing of `forward_tokens`, and the boxes (crop pixels) of the last call."""
    model = random_model(variant)
    cfg = model.config
    template = torch.randn(batch, 3, cfg.template_size, cfg.template_size)
    search = torch.randn(batch, 3, cfg.search_size, cfg.search_size)
    mask = torch.zeros(batch, *cfg.template_grid)
    with torch.inference_mode():
        tokens = model.embed_template(template, mask)

        out: dict[str, torch.Tensor] = {}

        def step() -> None:
            with autocast(precision):
                out.update(model.forward_tokens(tokens, search))

        times = timed(step, warmup, repeats)
    per_frame_best = min(times) / batch
    per_frame_median = statistics.median(times) / batch
    flops = lorat_flops(variant, include_template_embed=False)
    stats = {
        "best_ms": 1e3 * per_frame_best,
        "median_ms": 1e3 * per_frame_median,
        "gflops": flops / per_frame_best / 1e9,
    }
    return stats, out["boxes"].float() * cfg.search_size


def box_drift(model_spec: str, frames: int) -> tuple[str, float, float, float]:
    """Run one Tracker in fp32 and one in bf16 over a synthetic sequence; max/mean box difference in px."""
    if Path(model_spec).is_file():
        model, label = load_model(model_spec), Path(model_spec).name
    else:
        model, label = random_model(model_spec), f"{model_spec} (random weights, see random_model)"
    seq = generate_sequence(11, num_frames=frames)
    boxes = {}
    for precision in ("fp32", "bf16"):
        tracker = Tracker(model, device="cpu", precision=precision)
        tracker.initialize(seq.frames[0], seq.boxes[0])
        boxes[precision] = np.stack([tracker.track(f)[0] for f in seq.frames[1:]])
    diff = np.abs(boxes["bf16"] - boxes["fp32"])
    return label, float(diff.max()), float(diff.mean()), float(np.abs(boxes["fp32"] - seq.boxes[1:]).mean())


def profile_forward(variant: str, batch: int, rows: int = 14) -> str:
    """Where the time of one fp32 forward goes, by operator (self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    model = random_model(variant)
    cfg = model.config
    search = torch.randn(batch, 3, cfg.search_size, cfg.search_size)
    with torch.inference_mode():
        tokens = model.embed_template(torch.randn(batch, 3, cfg.template_size, cfg.template_size),
                                      torch.zeros(batch, *cfg.template_grid))
        model.forward_tokens(tokens, search)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.forward_tokens(tokens, search)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="tiny,S-224,B-224", help="comma-separated (add L-224 etc. if you wait)")
    p.add_argument("--batch-sizes", default="1,4,8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--no-bf16", action="store_true", help="fp32 only")
    p.add_argument("--drift-model", default=None,
                   help="variant or checkpoint for the bf16 box drift (default: the packaged model, else B-224)")
    p.add_argument("--drift-frames", type=int, default=30, help="0 skips the drift run")
    p.add_argument("--profile", action="store_true", help="profile the largest variant at the largest batch")
    p.add_argument("--target", type=float, default=80.0, help="%% of the fp32 matmul rate wanted at the largest batch")
    p.add_argument("--output", default=str(RESULTS))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    precisions = ["fp32"] if args.no_bf16 else ["fp32", "bf16"]

    t_start = time.perf_counter()
    ceiling = {"fp32": matmul_rate(torch.float32, args.matmul_size, 5)}
    if "bf16" in precisions:
        ceiling["bf16"] = matmul_rate(torch.bfloat16, args.matmul_size, 5)
    lines = [
        "# LoRAT model speed",
        "",
        f"`python bench/model.py {' '.join(argv if argv is not None else sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}.",
        f"Ceiling measured in this run: fp32 `torch.mm` {args.matmul_size}^3 = **{ceiling['fp32']:.1f} GFLOP/s**"
        + (f"; bf16 `torch.mm` = {ceiling['bf16']:.1f} GFLOP/s" if "bf16" in ceiling else "") + ".",
        "Timed: `forward_tokens` (template tokens precomputed), per frame, best of "
        f"{args.repeats} after {args.warmup} warm-up; GFLOP/s from the analytic count (2 x MACs) and the best time.",
        "",
        "The % column divides by the fp32 matmul rate re-measured just before each row (the machine is shared,",
        "so its rate drifts; the row's own ceiling is shown).",
        "",
        "| variant | GFLOP/frame | batch | fp32 ms/frame (median) | fp32 GFLOP/s | matmul GFLOP/s | % of matmul |"
        + (" bf16 ms/frame | bf16 speed-up | bf16 box Δ max / mean (crop px) |" if "bf16" in precisions else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if "bf16" in precisions else ""),
    ]
    fp32_pct: dict[tuple[str, int], float] = {}
    for variant in variants:
        gflop = lorat_flops(variant, include_template_embed=False) / 1e9
        for batch in batches:
            # Best of 12 short matmuls around the row: a short run is likelier to catch a quiet moment than
            # a long forward, so this errs towards a high ceiling (a low % rather than a flattering one).
            local = matmul_rate(torch.float32, args.matmul_size, 6)
            r, boxes32 = bench_forward(variant, batch, "fp32", args.warmup, args.repeats)
            local = max(local, matmul_rate(torch.float32, args.matmul_size, 6))
            pct = 100 * r["gflops"] / local
            fp32_pct[(variant, batch)] = pct
            row = (f"| {variant} | {gflop:.2f} | {batch} | {r['best_ms']:.1f} ({r['median_ms']:.1f}) | "
                   f"{r['gflops']:.1f} | {local:.1f} | {pct:.0f}% |")
            if "bf16" in precisions:
                b, boxes16 = bench_forward(variant, batch, "bf16", args.warmup, args.repeats)
                delta = (boxes16 - boxes32).abs()
                row += (f" {b['best_ms']:.1f} | {r['best_ms'] / b['best_ms']:.2f}x | "
                        f"{delta.max():.2f} / {delta.mean():.3f} |")
            lines.append(row)
            print(row, flush=True)

    if args.drift_frames > 0 and "bf16" in precisions:
        spec = args.drift_model or (str(default_model_path()) if default_model_path().is_file() else "B-224")
        label, dmax, dmean, err = box_drift(spec, args.drift_frames)
        lines += [
            "",
            f"bf16 against fp32 boxes, one Tracker each, model {label}, {args.drift_frames}-frame synthetic "
            f"sequence (seed 11, 320x240): **max {dmax:.2f} px, mean {dmean:.3f} px** over x, y, w, h "
            f"(for scale: fp32's mean distance to the ground truth is {err:.1f} px).",
        ]

    big = max(batches)
    headline = [(v, fp32_pct[(v, big)]) for v in variants if not v.startswith("tiny")]
    if headline:
        lines += ["", f"Target: at batch {big}, fp32 reaches >= {args.target:.0f}% of the fp32 matmul rate:"]
        lines += [f"- {v}: {pct:.0f}% ({'met' if pct >= args.target else 'NOT met'})" for v, pct in headline]
    if args.profile:
        variant = [v for v in variants if not v.startswith("tiny")][-1] if headline else variants[-1]
        lines += ["", f"Profile of one fp32 forward, {variant}, batch {big}:", "", "```",
                  profile_forward(variant, big), "```"]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines += ["", f"Total bench time {time.perf_counter() - t_start:.0f} s; load average at the end {load} "
              f"(on {os.cpu_count()} cores: above that, other processes shared the CPU and absolute times are "
              "inflated; the % column compares against a ceiling measured under the same load)."]

    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
