"""`lorat-export`: the authors' release files -> one safetensors file that `load_model(path)` reads.

    lorat-export --variant B-224 --backbone dinov2_vitb14_pretrain.pth --adapter lorat_b224.bin \
        --output lorat-b224.safetensors --dtype bf16
    lorat-export --checkpoint mixformerv2_small.pth.tar --output mixformerv2-s.safetensors
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, load_official, save_merged
from ..mixformer.checkpoint import load_authors_checkpoint, save_mixformer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorat-export", description="Turn a LoRAT or MixFormerV2 release into one "
                                "safetensors file.")
    p.add_argument("--variant", help="LoRAT: e.g. B-224, L-378")
    p.add_argument("--backbone", help="LoRAT: DINOv2 backbone in Meta's format (.pth)")
    p.add_argument("--adapter", help="LoRAT: the authors' release file (adapter only, safetensors)")
    p.add_argument("--checkpoint", help="MixFormerV2: the authors' checkpoint (e.g. mixformerv2_base.pth.tar)")
    p.add_argument("--output", "-o", required=True, help="output .safetensors file")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="stored weight dtype (default fp32)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    lorat_args = (args.variant, args.backbone, args.adapter)
    mixformer = args.checkpoint is not None
    if not ((mixformer and not any(lorat_args)) or (not mixformer and None not in lorat_args)):
        parser.error("pass either --checkpoint (MixFormerV2) or all of --variant, --backbone, --adapter (LoRAT)")
    try:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        if args.checkpoint is not None:
            model = load_authors_checkpoint(args.checkpoint)
            save_mixformer(model, args.output, dtype=DTYPES[args.dtype],
                           extra_metadata={"source_checkpoint": Path(args.checkpoint).name})
        else:
            model = load_official(args.variant, args.backbone, args.adapter, merge=True)
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
