"""Train stage 3 of the built-in default model (real photographs) with the `photos` data source registered.

    python -m lorat_train.default_real [--config configs/default-real.yaml] [--steps N] [--no-progress]

`lorat_train.data.build_source` knows the file layouts; the photo clips of `lorat_train.photos` are added
here (wrapping it) so the generic trainer needs no knowledge of them. Gathers the photos first when the
cache is empty, writes the held-out photo clips used for validation, then trains (resuming from the run's
checkpoint when there is one) and exports the merged model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import data as data_module
from .config import load_config
from .photos import PhotoPool, write_held_out

_build_source = data_module.build_source


def build_source(options, seed, *args, **kwargs):  # same signature as data.build_source
    """`type: photos` -> PhotoPool; everything else as before."""
    if options.type == "photos":
        return PhotoPool(options, seed)
    return _build_source(options, seed, *args, **kwargs)


def register() -> None:
    data_module.build_source = build_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default-real.yaml")
    parser.add_argument("--steps", type=int, default=None, help="stop early at this step (resumable)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    for source in [*config.data.sources, *config.val.sources]:
        source.root = os.path.expanduser(source.root)
    photo_roots = [s.root for s in config.data.sources if s.type == "photos"]
    if photo_roots and not any(Path(r.split(":")[0]).is_dir() for r in photo_roots):
        from .gather import gather

        gather(Path(photo_roots[0].split(":")[0]).parent)
    for source in config.val.sources:
        if not Path(source.root).is_dir() and photo_roots:
            print(f"writing held-out photo clips to {source.root}", flush=True)
            write_held_out(photo_roots[0], source.root, seed=424242 + source.seed_offset, count=12, num_frames=40,
                           hold=float(source.options.get("hold", 0.0)))
    register()
    from .trainer import train

    train(config, progress=not args.no_progress, steps=args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
