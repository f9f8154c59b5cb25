"""Write a trained model in both formats: our merged single file, and the authors' two-file release.

Release = adapter-only safetensors (`token_type_embed`, `*.lora.{A,B}`, `head.*`, scalars `lora_alpha`,
`use_rslora`) plus the frozen backbone in Meta's DINOv2 layout (a torch.save'd plain state dict with
`pos_embed` (1, 1+G*G, D) holding a cls entry, `cls_token`, `mask_token`), so that
`lorat_infer.load_model(config, backbone=..., adapter=...)` rebuilds the same network.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from lorat_infer.checkpoint import save_merged
from lorat_infer.lora import merge_lora
from lorat_infer.model import LoRAT

from .config import LoRAOptions
from .setup import is_lora_param

ADAPTER_PREFIXES = ("token_type_embed", "head.")


def merged_copy(model: LoRAT) -> LoRAT:
    """An eval-mode copy with every adapter folded in (the training model is left untouched)."""
    out = copy.deepcopy(model).cpu()
    for block in out.blocks:  # drop training-only forward wrappers (activation checkpointing)
        block.__dict__.pop("forward", None)
    return merge_lora(out).eval()


def export_merged(model: LoRAT, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_merged(merged_copy(model), path, extra_metadata=dict(metadata or {}))
    return path


def release_state(model: LoRAT, lora: LoRAOptions | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(backbone in Meta format, adapter-only state) of a (possibly LoRA-wrapped, unmerged) model."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    adapter: dict[str, torch.Tensor] = {}
    backbone: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if is_lora_param(key) or key.startswith(ADAPTER_PREFIXES):
            adapter[key] = value
        else:
            backbone[key.replace(".linear.", ".")] = value
    has_lora = any(is_lora_param(k) for k in adapter)
    if has_lora:
        if lora is None:
            raise ValueError("the model carries LoRA adapters: pass their LoRA settings")
        adapter["lora_alpha"] = torch.tensor(float(lora.alpha))
        adapter["use_rslora"] = torch.tensor(bool(lora.use_rslora))
    pos = backbone.pop("pos_embed")
    dim = pos.shape[-1]
    backbone["pos_embed"] = torch.cat([torch.zeros(1, 1, dim, dtype=pos.dtype), pos], dim=1)
    backbone["cls_token"] = torch.zeros(1, 1, dim, dtype=pos.dtype)
    backbone["mask_token"] = torch.zeros(1, dim, dtype=pos.dtype)
    return backbone, adapter


def export_release(model: LoRAT, out_dir: str | Path, lora: LoRAOptions | None, write_backbone: bool = True,
                   backbone_source: str = "") -> tuple[Path | None, Path, Path]:
    """Write `adapter.bin` (safetensors content, as the authors name it), `config.json` and, unless the run
    started from a Meta-format backbone it did not change (`write_backbone=False`), `backbone.pth`.

    `config.json` holds the LoRATConfig fields; `backbone_source` (the file to pair the adapter with) is
    written beside it as `backbone.txt`, so `config.json` stays `LoRATConfig.from_dict`-able.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backbone, adapter = release_state(model, lora)
    adapter_path = out_dir / "adapter.bin"
    backbone_path: Path | None = None
    if write_backbone:
        backbone_path = out_dir / "backbone.pth"
        torch.save(backbone, backbone_path)
    elif backbone_source:
        (out_dir / "backbone.txt").write_text(str(Path(backbone_source).resolve()) + "\n")
    save_file(adapter, str(adapter_path))
    config_path = out_dir / "config.json"
    config_path.write_text(json.dumps(model.config.to_dict(), indent=2))
    return backbone_path, adapter_path, config_path
