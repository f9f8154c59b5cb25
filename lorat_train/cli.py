"""`lorat-train --config configs/xxx.yaml`: one training run (resumes from its output dir by default)."""

from __future__ import annotations

import argparse
import sys

from .config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lorat-train", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML (or JSON) training config")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--init-checkpoint", help="override init_checkpoint (a merged .safetensors file)")
    parser.add_argument("--steps", type=int, help="stop after this many steps (the schedule keeps optim.steps)")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in output_dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except (OSError, ValueError) as exc:
        print(f"lorat-train: bad config {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.output_dir:
        config.output_dir = args.output_dir
    if args.init_checkpoint:
        config.init_checkpoint = args.init_checkpoint
    from .trainer import train  # torch import after argument errors are reported

    train(config, resume=not args.fresh, progress=not args.no_progress, steps=args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
