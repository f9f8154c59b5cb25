"""The built-in default model on real video and on the held-out synthetic benchmark, next to the previous
built-in model (synthetic-only), random weights and the keep-the-first-box baseline, in one run.

    .venv/bin/python bench/eval_default.py      # tables to stdout and bench/results/eval_default.md

Real set (`bench/real_set.py`, boxes in bench/data/real/): pedestrians in OpenCV's `vtest.avi` and faces in
`Megamind.avi` (Debian `opencv-doc`), every frame tracked, every 5th frame scored; never used in
training. Synthetic set: seed 20261121 (used nowhere in training), 24 sequences x 60 frames per domain, with
scale change, an occluder and a look-alike distractor; "blobs" and "stripes" with faster motion.
Also: frames/s at batch 1 (`Tracker`, fp32, --threads threads), how well the confidence separates frames
with IoU > 0.5 from the rest on the real set, and (--render) mp4 videos of two real sequences.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without reinstalling

import numpy as np
import torch

from bench.real_set import RealSequence, load_real_set
from lorat_infer import LoRAT, Tracker, load_model
from lorat_infer.eval.metrics import SequenceMetrics, evaluate_sequence
from lorat_infer.eval.runner import SequenceRun, run_sequences
from lorat_infer.eval.synthetic import generate_benchmark

HELD_OUT_SEED = 20261121
DOMAINS = {"blobs": {}, "stripes": {"speed": 0.02}}
PREVIOUS = "lorat_infer/default_model/lorat-synthetic.safetensors"
LOST_CONFIDENCE = 0.05  # the server's --lost-confidence default


def keep_first(sequences: list) -> list[SequenceMetrics]:
    out = []
    for s in sequences:
        gt = np.asarray(s.boxes, dtype=np.float64)
        out.append(evaluate_sequence(np.repeat(gt[:1], len(gt), axis=0), gt, name=getattr(s, "name", "")))
    return out


def track(model: torch.nn.Module, sequences: list) -> list[SequenceRun]:
    return run_sequences(model, sequences, batch_size=8, precision="fp32")


def mean(metrics: list[SequenceMetrics], key: str) -> float:
    return float(np.mean([getattr(m, key) for m in metrics]))


def frames_per_second(model: torch.nn.Module, seq: RealSequence, frames: int = 60) -> float:
    """One Tracker, batch 1, fp32, on real 768x576 frames (crop + model + map back)."""
    tracker = Tracker(model)
    tracker.initialize(seq.frames[0], seq.boxes[0])
    for f in seq.frames[1:6]:
        tracker.track(f)  # warm-up
    n = min(frames, len(seq.frames) - 1)
    t0 = time.perf_counter()
    for f in seq.frames[1:n + 1]:
        tracker.track(f)
    return n / (time.perf_counter() - t0)


def calibration(runs: list[SequenceRun]) -> dict[str, float]:
    """Confidence vs IoU > 0.5 over the scored real frames (frame 0, the given box, left out)."""
    scores, good = [], []
    for r in runs:
        ious = r.metrics.ious
        for t in range(1, len(ious)):
            if np.isfinite(ious[t]):
                scores.append(r.scores[t])
                good.append(ious[t] > 0.5)
    s, g = np.asarray(scores), np.asarray(good, dtype=bool)
    pos, neg = s[g], s[~g]
    # ROC AUC: probability that a good frame scores above a bad one (ties count half)
    roc = float(((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
                if len(pos) and len(neg) else float("nan"))
    best_t, best_acc = 0.0, 0.0
    for t in np.unique(s):
        acc = float(((s >= t) == g).mean())
        if acc > best_acc:
            best_t, best_acc = float(t), acc
    return {"frames": len(s), "good": int(g.sum()), "roc_auc": roc, "threshold": best_t, "accuracy": best_acc,
            "majority": float(max(g.mean(), 1 - g.mean())) if len(g) else float("nan"),
            "good_above_t": float((pos >= best_t).mean()) if len(pos) else float("nan"),
            "bad_below_t": float((neg < best_t).mean()) if len(neg) else float("nan"),
            "bad_below_lost": float((neg < LOST_CONFIDENCE).mean()) if len(neg) else float("nan"),
            "good_below_lost": float((pos < LOST_CONFIDENCE).mean()) if len(pos) else float("nan"),
            "median_good": float(np.median(pos)) if len(pos) else float("nan"),
            "median_bad": float(np.median(neg)) if len(neg) else float("nan")}


def render(seq: RealSequence, run: SequenceRun, path: Path, width: int = 384) -> None:
    """A small H.264 mp4 (PyAV): prediction green with its confidence, ground truth blue on scored frames."""
    import av
    from PIL import Image, ImageDraw

    scale = width / seq.frames[0].shape[1]
    size = (width, 2 * round(seq.frames[0].shape[0] * scale / 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": "30", "preset": "veryslow"}
        for t, frame in enumerate(seq.frames):
            img = Image.fromarray(frame).resize(size)
            draw = ImageDraw.Draw(img)
            if np.all(np.isfinite(seq.boxes[t])):
                x, y, w, h = seq.boxes[t] * scale
                draw.rectangle([x, y, x + w, y + h], outline=(40, 120, 255), width=2)
            x, y, w, h = run.boxes[t] * scale
            draw.rectangle([x, y, x + w, y + h], outline=(0, 255, 0), width=2)
            draw.text((4, 4), f"{seq.name} frame {t}  confidence {run.scores[t]:.2f}", fill=(255, 255, 0))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="merged model file (default: the packaged default model)")
    parser.add_argument("--previous", default=PREVIOUS, help="the previous built-in model ('' to leave out)")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=PATH",
                        help="more merged models to list, e.g. best=runs/default-real/model.safetensors")
    parser.add_argument("--sequences", type=int, default=24)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--render", default="", help="folder for mp4 videos of two real sequences (e.g. bench/results)")
    parser.add_argument("--out", default="bench/results/eval_default.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_model(args.model) if args.model else load_model()
    torch.manual_seed(0)
    models: list[tuple[str, LoRAT | None]] = [("**default model**" if not args.model else args.model, model)]
    named = ([("previous built-in model (synthetic only)", args.previous)] if args.previous else []) + [
        tuple(item.partition("=")[::2]) for item in args.extra]
    for name, path in named:
        if not path or not Path(path).is_file():
            print(f"{name}: expected an existing merged file, got {path!r}", file=sys.stderr)
            return 2
        models.append((name, load_model(path)))
    models += [("same architecture, random weights", LoRAT(model.config).eval()), ("keep the first box", None)]

    real = load_real_set()
    synth = {d: generate_benchmark(args.seed, args.sequences, args.frames, domain=d, **o) for d, o in DOMAINS.items()}
    rows = []
    default_runs: list[SequenceRun] = []
    for name, m in models:
        t0 = time.perf_counter()
        if m is None:
            real_m = keep_first(real)
            synth_m = {d: keep_first(s) for d, s in synth.items()}
        else:
            runs = track(m, real)
            if not default_runs:
                default_runs = runs
            real_m = [r.metrics for r in runs]
            synth_m = {d: [r.metrics for r in track(m, s)] for d, s in synth.items()}
        rows.append((name, real_m, synth_m))
        print(f"  {name}: real {mean(real_m, 'auc'):.3f}, " + ", ".join(
            f"{d} {mean(v, 'auc'):.3f}" for d, v in synth_m.items()) + f" ({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr)

    cfg = model.config
    names = [s.name for s in real]
    real_t = ("| model | " + " | ".join(names) + " | **mean AUC** | mean precision (20 px) | mean norm. precision |\n"
              + "|---" * (len(names) + 4) + "|\n")
    for name, real_m, _ in rows:
        real_t += (f"| {name} | " + " | ".join(f"{m.auc:.3f}" for m in real_m)
                   + f" | **{mean(real_m, 'auc'):.3f}** | {mean(real_m, 'precision'):.3f} | "
                   f"{mean(real_m, 'norm_precision'):.3f} |\n")
    frames_t = "| sequence | video | frames tracked | frames scored |\n|---|---|---|---|\n" + "".join(
        f"| {s.name} | {s.name.split('-')[0]} | {len(s.frames)} | {int(s.annotated.sum())} |\n" for s in real)
    synth_t = ("| model | AUC blobs | AUC stripes (fast) | **mean AUC** | mean precision | mean norm. precision |\n"
               "|---|---|---|---|---|---|\n")
    for name, _, synth_m in rows:
        allm = [m for v in synth_m.values() for m in v]
        synth_t += (f"| {name} | " + " | ".join(f"{mean(v, 'auc'):.3f}" for v in synth_m.values())
                    + f" | **{mean(allm, 'auc'):.3f}** | {mean(allm, 'precision'):.3f} | "
                    f"{mean(allm, 'norm_precision'):.3f} |\n")
    cal = calibration(default_runs)
    fps = frames_per_second(model, real[0])
    cal_t = (f"Scored real frames after the first: {cal['frames']}, of which {cal['good']} with IoU > 0.5. "
             f"ROC AUC of the confidence for IoU > 0.5: **{cal['roc_auc']:.3f}** (0.5 = no information). "
             f"Best threshold {cal['threshold']:.3f}: {cal['accuracy']:.1%} of frames classified right "
             f"(always guessing the majority class: {cal['majority']:.1%}); {cal['good_above_t']:.1%} of good "
             f"frames above it, {cal['bad_below_t']:.1%} of bad frames below it. Median confidence: good frames "
             f"{cal['median_good']:.3f}, bad frames {cal['median_bad']:.3f}. At the server's LOST threshold "
             f"({LOST_CONFIDENCE}): {cal['bad_below_lost']:.1%} of bad frames and {cal['good_below_lost']:.1%} of "
             "good frames fall below it.\n")
    header = (f"Model: {cfg.name}, D={cfg.embed_dim}, depth {cfg.depth}, patch {cfg.patch_size}, template "
              f"{cfg.template_size} px, search {cfg.search_size} px; selection: Hann-window weight "
              f"{cfg.window_weight:g}, size learning rate {cfg.size_lr:g} (1 = none). Speed at batch 1 "
              f"(`Tracker`, fp32, {args.threads} threads, 768x576 frames, end to end): **{fps:.0f} frames/s** on "
              f"{os.cpu_count()} shared cores.\n\n")
    text = (header + "## Real video (success AUC per sequence)\n\n" + real_t + "\n" + frames_t
            + f"\n## Held-out synthetic (seed {args.seed}, {args.sequences} x {args.frames} frames per domain)\n\n"
            + synth_t + "\n## Confidence on the real set (default model)\n\n" + cal_t)
    print(text)
    if args.render:
        for seq, run in zip(real, default_runs):
            if seq.name in ("vtest-woman-grass", "megamind-man-face"):
                render(seq, run, Path(args.render) / f"real-{seq.name}.mp4")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["bench/eval_default.py", *(argv if argv is not None else sys.argv[1:])])
    out.write_text(f"# Default model: real video and held-out synthetic benchmark\n\n`{command}`\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
