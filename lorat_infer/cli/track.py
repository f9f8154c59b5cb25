"""`lorat-track`: follow one object through a video file or an image folder.

    lorat-track video.mp4 --box 120,80,60,40 --output boxes.txt --render out.mp4 --eval groundtruth.txt

Results: one `x,y,w,h` line per frame (frame 1 holds the initial box, as benchmark results files do).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..engine import InvalidInput
from ..eval.datasets import DatasetError, read_boxes, write_boxes
from ..eval.metrics import evaluate_sequence, format_table
from ..tracker import Tracker
from .video import FrameSource, SourceError, VideoWriter, draw_box


class UsageError(ValueError):
    """Bad command-line input; printed without a traceback."""


def parse_box(text: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError as exc:
        raise UsageError(f"--box must be x,y,w,h numbers, got {text!r}") from exc
    if len(values) != 4:
        raise UsageError(f"--box must have 4 values x,y,w,h, got {len(values)}: {text!r}")
    return np.asarray(values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorat-track", description="Track one object with LoRAT through a video.")
    p.add_argument("source", help="a video file (anything FFmpeg reads) or a folder of images (LaSOT img/ too)")
    p.add_argument("--box", help="initial box x,y,w,h in pixels on the first frame (default: first line of "
                   "--eval, or the folder's groundtruth.txt)")
    model = p.add_argument_group("model (default: the packaged default model)")
    model.add_argument("--checkpoint", help="merged single-file checkpoint (.safetensors, see lorat-export)")
    model.add_argument("--variant", help="variant of the authors' release, e.g. B-224 (with --backbone/--adapter)")
    model.add_argument("--backbone", help="DINOv2 backbone in Meta's format (e.g. dinov2_vitb14_pretrain.pth)")
    model.add_argument("--adapter", help="the authors' LoRAT release file (adapter only)")
    p.add_argument("--output", "-o", help="results file: one x,y,w,h line per frame")
    p.add_argument("--render", help="write an H.264 mp4 with the box and score drawn on every frame")
    p.add_argument("--eval", dest="eval_gt", help="ground-truth file (x,y,w,h per line): print OPE metrics")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="fp32, or autocast to bf16/fp16 (auto: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def load_tracker_model(args: argparse.Namespace) -> torch.nn.Module:
    """The model the flags ask for; the packaged default (or its random fallback) when none."""
    from ..loading import load_model

    official = [args.variant, args.backbone, args.adapter]
    if args.checkpoint and any(official):
        raise UsageError("give either --checkpoint or --variant/--backbone/--adapter, not both")
    if any(official):
        if not all(official):
            raise UsageError("the authors' release needs all of --variant, --backbone and --adapter")
        return load_model(args.variant, backbone=args.backbone, adapter=args.adapter)
    if args.checkpoint:
        return load_model(args.checkpoint)
    from ..defaults import RandomWeightsWarning, default_tracker_model

    with warnings.catch_warnings():  # the function also logs it; print it once
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return default_tracker_model()


def initial_box(args: argparse.Namespace) -> np.ndarray:
    if args.box:
        return parse_box(args.box)
    candidates = [Path(args.eval_gt)] if args.eval_gt else []
    candidates.append(Path(args.source) / "groundtruth.txt")
    for path in candidates:
        if path.is_file():
            return read_boxes(path)[0]
    raise UsageError("--box x,y,w,h is required (no --eval file or groundtruth.txt to take it from)")


def track(args: argparse.Namespace) -> dict[str, float] | None:
    box = initial_box(args)
    source = FrameSource(args.source)
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError("--max-frames must be >= 1")
    gt = read_boxes(args.eval_gt) if args.eval_gt else None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tracker = Tracker(load_tracker_model(args), device=device, precision=args.precision)

    total = source.length
    if args.max_frames is not None:
        total = min(total, args.max_frames) if total else args.max_frames
    boxes, scores = [], []
    writer = VideoWriter(args.render, fps=source.fps) if args.render else None
    try:
        bar = tqdm(total=total, unit="frame", disable=args.no_progress, desc="lorat-track", file=sys.stderr)
        for i, frame in enumerate(source):
            if args.max_frames is not None and i >= args.max_frames:
                break
            if i == 0:
                tracker.initialize(frame, box)
                result, score = np.asarray(box, dtype=np.float64), 1.0
            else:
                result, score = tracker.track(frame)
            boxes.append(result)
            scores.append(score)
            if writer:
                gt_box = gt[i] if gt is not None and i < len(gt) else None
                writer.write(draw_box(frame, result, score, gt_box, frame_index=i))
            bar.update(1)
        bar.close()
    finally:
        if writer:
            writer.close()
    if not boxes:
        raise SourceError(f"{args.source}: no frames decoded")
    pred = np.stack(boxes)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        write_boxes(args.output, pred)
        print(f"wrote {len(pred)} boxes to {args.output}", file=sys.stderr)
    if args.render:
        print(f"rendered {len(pred)} frames to {args.render}", file=sys.stderr)
    if gt is None:
        return None
    n = min(len(gt), len(pred))
    if len(gt) != len(pred):
        print(f"note: {len(gt)} ground-truth boxes for {len(pred)} frames; scoring the first {n}", file=sys.stderr)
    metrics = evaluate_sequence(pred[:n], gt[:n], name=Path(args.source).stem)
    print(format_table([metrics]))
    return metrics.summary()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        track(args)
    except (UsageError, SourceError, DatasetError, InvalidInput, FileNotFoundError, ValueError) as exc:
        print(f"lorat-track: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
