"""`lorat-demo`: make a synthetic video with ground truth, then track it with `lorat-track`.

    python -m lorat_infer.cli.demo --output out/     # writes out/demo.mp4, groundtruth.txt, results, render

Shows the whole path (video decode, tracking, results file, rendered video, OPE metrics) without any data.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..eval.datasets import write_boxes
from ..eval.synthetic import generate_sequence
from . import track
from .video import VideoWriter


def write_demo_video(output: Path, seed: int = 7, frames: int = 90, size: tuple[int, int] = (320, 240),
                     fps: float = 30.0) -> tuple[Path, Path]:
    """Synthetic sequence -> `demo.mp4` (H.264) and `groundtruth.txt` (x,y,w,h per frame) in `output`."""
    output.mkdir(parents=True, exist_ok=True)
    seq = generate_sequence(seed, num_frames=frames, size=size)
    video, gt = output / "demo.mp4", output / "groundtruth.txt"
    with VideoWriter(video, fps=fps, crf=16) as writer:
        for frame in seq.frames:
            writer.write(frame)
    write_boxes(gt, seq.boxes)
    return video, gt


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lorat-demo", description=__doc__.splitlines()[0])
    p.add_argument("--output", "-o", default="demo-output", help="folder for the video and results")
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--checkpoint", help="merged checkpoint (default: the packaged default model)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.output)
    video, gt = write_demo_video(out, seed=args.seed, frames=args.frames)
    print(f"synthetic video: {video} ({args.frames} frames), ground truth: {gt}", file=sys.stderr)
    cmd = [str(video), "--eval", str(gt), "--output", str(out / "results.txt"),
           "--render", str(out / "tracked.mp4")]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    if args.no_progress:
        cmd.append("--no-progress")
    return track.main(cmd)


if __name__ == "__main__":
    sys.exit(main())
