"""`lorat-train --config configs/xxx.yaml`: one training run (resumes from its output dir by default).

`lorat-train --check-data PATH...` validates training footage without training: every bad sequence, file
and line is named, and the exit status is 1 when anything is unusable (0 when all is well). With
`--config` and no PATH it checks the config's data and held-out sources. Multi-GPU:
`torchrun --nproc_per_node N -m lorat_train.cli --config ...`.
"""

from __future__ import annotations

import argparse
import sys

from .config import load_config


def check_data(paths: list[str], mode: str) -> int:
    from .footage import check_paths

    report = check_paths(paths, mode=mode)
    print(report.format())
    return 1 if report.errors else 0


def evaluate(config: object) -> int:
    """Held-out success AUC of the start point (mode full: weights exactly as loaded, nothing added)."""
    from .trainer import Trainer

    config.mode = "full"  # type: ignore[attr-defined]
    config.val.keep_best = False  # type: ignore[attr-defined]
    trainer = Trainer(config)  # type: ignore[arg-type]
    try:
        auc = trainer.validate()
        print(f"held-out success AUC {auc:.4f} over {len(trainer.val_sequences())} sequences "
              f"(start: {trainer.start_point})")
    finally:
        trainer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lorat-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML (or JSON) training config")
    parser.add_argument("--check-data", nargs="*", metavar="PATH",
                        help="validate footage (folders, videos with box files, COCO JSON) and exit")
    parser.add_argument("--check-mode", choices=("full", "headers"), default="full",
                        help="full: decode every frame (finds corrupt files); headers: sizes only")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--init-checkpoint", help="override init_checkpoint (a merged .safetensors file)")
    parser.add_argument("--backbone", help="override backbone (a Meta-format DINOv2 file)")
    parser.add_argument("--adapter", help="override adapter (an authors'-format adapter file)")
    parser.add_argument("--device", help="override device (auto, cpu, cuda)")
    parser.add_argument("--steps", type=int, help="stop after this many steps (the schedule keeps its length)")
    parser.add_argument("--evaluate", action="store_true",
                        help="only track the held-out sequences (val) with the start model, exactly as loaded "
                             "(no fresh LoRA), and print the success AUC")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in output_dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.check_data is not None and args.check_data:
        return check_data(args.check_data, args.check_mode)
    if not args.config:
        parser.error("--config is required (or --check-data PATH...)")
    try:
        config = load_config(args.config)
    except (OSError, ValueError) as exc:
        print(f"lorat-train: bad config {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.check_data is not None:
        from .footage import Report, read_path

        sources = [s for s in [*config.data.sources, *config.val.sources] if s.type != "synthetic"]
        if not sources:
            print("lorat-train: the config names no data files (synthetic sources only)")
            return 0
        report = Report()
        for s in sources:
            read_path(s.root, report, mode=args.check_mode, kind=s.type, images=s.images)
        print(report.format())
        return 1 if report.errors else 0
    for key in ("output_dir", "init_checkpoint", "backbone", "adapter", "device"):
        if getattr(args, key):
            setattr(config, key, getattr(args, key))
    from .footage import DataError
    from .trainer import train  # torch import after argument errors are reported

    try:
        if args.evaluate:
            return evaluate(config)
        train(config, resume=not args.fresh, progress=not args.no_progress, steps=args.steps)
    except DataError as exc:
        print(f"lorat-train: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
