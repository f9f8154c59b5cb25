"""Held-out synthetic benchmark of the built-in default model, against random weights and a still box.

    .venv/bin/python bench/eval_default.py            # table to stdout and bench/results/eval_default.md

The benchmark seed (20261121) is used nowhere in training (training sequences come from
`default_rng([seed, offset, id])` streams, validation from seeds 777000/778000). Every sequence has scale
change, a passing occluder that covers up to half the object, and a look-alike distractor. Two domains:
"blobs" (stage 1's) and "stripes" with faster motion (stage 2's LoRA adaptation).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without reinstalling

import torch

from lorat_infer import LoRAT, load_model
from lorat_infer.eval.synthetic import generate_benchmark
from lorat_train.evaluate import evaluate_auc, initial_box_auc

HELD_OUT_SEED = 20261121
DOMAINS = {"blobs": {}, "stripes": {"speed": 0.02}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="merged model file (default: the packaged default model)")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=PATH",
                        help="more merged models to list, e.g. stage1=runs/default-stage1/model.safetensors")
    parser.add_argument("--sequences", type=int, default=24)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/eval_default.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_model(args.model) if args.model else load_model()
    torch.manual_seed(0)
    models: list[tuple[str, LoRAT | None]] = [("default model" if not args.model else args.model, model)]
    for item in args.extra:
        name, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            print(f"--extra {item!r}: expected NAME=PATH to an existing merged file", file=sys.stderr)
            return 2
        models.append((name, load_model(path)))
    models += [("same architecture, random weights", LoRAT(model.config).eval()), ("initial box kept", None)]

    benches = {d: generate_benchmark(args.seed, args.sequences, args.frames, domain=d, **opts)
               for d, opts in DOMAINS.items()}
    rows = []
    for name, m in models:
        t0 = time.perf_counter()
        aucs = [initial_box_auc(seqs) if m is None else evaluate_auc(m, seqs) for seqs in benches.values()]
        rows.append((name, aucs, time.perf_counter() - t0))
        print(f"  {name}: {', '.join(f'{a:.3f}' for a in aucs)} ({rows[-1][2]:.0f} s)", file=sys.stderr)

    cfg = model.config
    header = (f"Held-out synthetic benchmark: seed {args.seed}, {args.sequences} sequences x {args.frames} frames "
              f"per domain, 320x240, scale change + occlusion + distractor. Model: {cfg.name}, D={cfg.embed_dim}, "
              f"depth {cfg.depth}, patch {cfg.patch_size}, template {cfg.template_size} px, search "
              f"{cfg.search_size} px.\n\n")
    table = "| model | success AUC, blobs | success AUC, stripes (fast) | mean |\n|---|---|---|---|\n"
    for name, aucs, _ in rows:
        table += f"| {name} | {aucs[0]:.3f} | {aucs[1]:.3f} | {sum(aucs) / len(aucs):.3f} |\n"
    print(header + table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["bench/eval_default.py", *(argv if argv is not None else sys.argv[1:])])
    out.write_text(f"# Default model on the held-out synthetic benchmark\n\n`{command}`\n\n{header}{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
