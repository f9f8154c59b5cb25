"""`lorat-export`: the authors' two files -> one merged safetensors file that `load_model(path)` reads.

    lorat-export --variant B-224 --backbone dinov2_vitb14_pretrain.pth --adapter lorat_b224.bin \
        --output lorat-b224.safetensors --dtype bf16
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, load_official, save_merged

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorat-export", description="Merge LoRAT's release into one checkpoint file.")
    p.add_argument("--variant", required=True, help="e.g. B-224, L-378")
    p.add_argument("--backbone", required=True, help="DINOv2 backbone in Meta's format (.pth)")
    p.add_argument("--adapter", required=True, help="the authors' release file (adapter only, safetensors)")
    p.add_argument("--output", "-o", required=True, help="output .safetensors file")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="stored weight dtype (default fp32)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = load_official(args.variant, args.backbone, args.adapter, merge=True)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        save_merged(model, args.output, dtype=DTYPES[args.dtype],
                    extra_metadata={"source_adapter": Path(args.adapter).name,
                                    "source_backbone": Path(args.backbone).name})
    except (CheckpointError, FileNotFoundError, KeyError, ValueError) as exc:
        print(f"lorat-export: error: {exc}", file=sys.stderr)
        return 2
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output}: {model.config.name}, {params / 1e6:.1f} M parameters, {args.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
