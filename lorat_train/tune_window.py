"""Choose the built-in model's motion priors on tuning data: the Hann-window weight of LoRAT's selection and
the size learning rate.

    python -m lorat_train.tune_window --model runs/default-hold/model.safetensors [--size-lrs 1,0.6] [--write]

The tracker picks the score-map cell maximising `score * (1 - w) + hann * w`, then moves the box's size by
`size_lr` of the predicted change (log space; 1 = LoRAT as published). Both live in the model's config
(`LoRATConfig.window_weight`, `LoRATConfig.size_lr`, carried in the merged file's metadata), so a model can
ship its own. Every pair of the two grids is scored.
The tuning data is **never** the real evaluation set (`bench/data/real`) nor the held-out synthetic seed that
`bench/eval_default.py` reports: photo clips from a seed stream used nowhere else (stage 4's training mix:
40 % held targets, 30 % parts of a bigger thing, see `lorat_train.photos`) and synthetic "blobs" / "stripes"
from seed 31337. The chosen weight maximises the mean success AUC over the three groups; `--write` stores it
in the model file's metadata.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from lorat_infer import load_model
from lorat_infer.engine import TrackingEngine
from lorat_infer.eval.runner import run_sequences
from lorat_infer.eval.synthetic import generate_benchmark

from .photos import generate_photo_sequence, load_library

TUNE_PHOTO_SEED = 515151  # photo clips: used by nothing else (training 12/13 + offsets, validation 424242/3)
TUNE_SYNTH_SEED = 31337  # synthetic: not the reported held-out seed 20261121
WEIGHTS = (0.2, 0.3, 0.45, 0.55, 0.65, 0.75, 0.85)


class _Clip:
    def __init__(self, name: str, frames: list[np.ndarray], boxes: np.ndarray) -> None:
        self.name, self.frames, self.boxes = name, frames, boxes


def tuning_sets(photos: str, count: int, frames: int) -> dict[str, list]:
    library = load_library(photos)
    clips = []
    for i in range(count):
        seq = generate_photo_sequence(np.random.default_rng([TUNE_PHOTO_SEED, 11, i]), library, frames, 0.4, 0.3)
        if np.all(np.isfinite(seq.boxes[0])):
            clips.append(_Clip(f"photo-{i}", seq.frames, seq.boxes))
    return {"photo clips": clips,
            "blobs": generate_benchmark(TUNE_SYNTH_SEED, count, 60, domain="blobs"),
            "stripes": generate_benchmark(TUNE_SYNTH_SEED, count, 60, domain="stripes", speed=0.02)}


def score(model: torch.nn.Module, sets: dict[str, list], weight: float, size_lr: float = 1.0) -> dict[str, float]:
    engine = TrackingEngine(model, precision="fp32", params={"window_weight": weight, "size_lr": size_lr})
    return {name: float(np.mean([r.metrics.auc for r in run_sequences(engine, seqs, batch_size=8)]))
            for name, seqs in sets.items()}


def write_params(path: str, **params: float) -> None:
    """Rewrite the merged file with these tracker parameters in its config metadata (weights untouched)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(path, framework="pt") as f:
        metadata = dict(f.metadata() or {})
    tensors = load_file(path)
    config = json.loads(metadata["config"])
    config.update(params)
    metadata["config"] = json.dumps(config)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="merged model file")
    parser.add_argument("--photos", default="~/.cache/lorat-data/photos")
    parser.add_argument("--count", type=int, default=24, help="sequences per group")
    parser.add_argument("--frames", type=int, default=40, help="frames per photo clip")
    parser.add_argument("--weights", default=",".join(map(str, WEIGHTS)))
    parser.add_argument("--size-lrs", default="1", help="size learning rates to try (1 = no damping)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="store the best pair in the model file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    sets = tuning_sets(os.path.expanduser(args.photos), args.count, args.frames)
    print(f"current window_weight {model.config.window_weight}, size_lr {model.config.size_lr}", file=sys.stderr)
    rows = []
    grid = itertools.product((float(x) for x in args.weights.split(",")), [float(x) for x in args.size_lrs.split(",")])
    for w, lr in grid:
        aucs = score(model, sets, w, lr)
        rows.append((w, lr, aucs, float(np.mean(list(aucs.values())))))
        print(f"w={w:.2f} size_lr={lr:.2f}: " + ", ".join(f"{k} {v:.3f}" for k, v in aucs.items())
              + f" -> mean {rows[-1][3]:.3f}", flush=True)
    best = max(rows, key=lambda r: r[3])
    print(f"best window_weight {best[0]:.2f}, size_lr {best[1]:.2f} (mean tuning AUC {best[3]:.3f})")
    if args.write:
        write_params(str(Path(args.model)), window_weight=best[0], size_lr=best[1])
        print(f"wrote window_weight {best[0]:.2f}, size_lr {best[1]:.2f} into {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
