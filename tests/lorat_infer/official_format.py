"""Writers for checkpoint files in exactly the authors' formats, filled with random values.

The real files (Meta's DINOv2 `*_pretrain.pth` and the LoRAT release `*.bin`) cannot be downloaded here, so
tests make look-alikes with the same key names, shapes, containers and scalar entries.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from lorat_infer.config import LoRATConfig
from lorat_infer.model import LoRAT


def write_dinov2_backbone(path: Path, config: LoRATConfig, source_grid: int = 10, seed: int = 0) -> dict:
    """A Meta-format DINOv2 state dict (cls/mask tokens, pos_embed with a cls entry) saved with torch.save."""
    gen = torch.Generator().manual_seed(seed)
    model = LoRAT(config)
    dim = config.embed_dim
    state: dict[str, torch.Tensor] = {
        "cls_token": torch.randn(1, 1, dim, generator=gen),
        "pos_embed": torch.randn(1, 1 + source_grid * source_grid, dim, generator=gen) * 0.02,
        "mask_token": torch.zeros(1, dim),
    }
    for key, value in model.state_dict().items():
        if key.startswith(("patch_embed.", "blocks.", "norm.")):
            is_norm_gain = key.endswith(("norm1.weight", "norm2.weight", "norm.weight"))
            state[key] = torch.randn(value.shape, generator=gen) * 0.05 + (1.0 if is_norm_gain else 0.0)
    torch.save(state, path)
    return state


def write_release_adapter(path: Path, config: LoRATConfig, rank: int = 4, alpha: float = 8.0,
                          use_rslora: bool = False, seed: int = 1) -> dict:
    """An adapter-only LoRAT release file: safetensors content whatever the file is called."""
    gen = torch.Generator().manual_seed(seed)
    dim = config.embed_dim
    model = LoRAT(config)
    state: dict[str, torch.Tensor] = {"token_type_embed": torch.randn(3, dim, generator=gen) * 0.02}
    for i, block in enumerate(model.blocks):
        for slot in ("q", "k", "v"):
            state[f"blocks.{i}.attn.qkv.{slot}.lora.A"] = torch.randn(rank, dim, generator=gen) * 0.02
            state[f"blocks.{i}.attn.qkv.{slot}.lora.B"] = torch.randn(dim, rank, generator=gen) * 0.02
        mlp_names = ("w12", "w3") if config.mlp == "swiglu" else ("fc1", "fc2")
        targets = [("attn.proj", block.attn.proj)] + [(f"mlp.{n}", getattr(block.mlp, n)) for n in mlp_names]
        for name, linear in targets:
            state[f"blocks.{i}.{name}.lora.A"] = torch.randn(rank, linear.in_features, generator=gen) * 0.02
            state[f"blocks.{i}.{name}.lora.B"] = torch.randn(linear.out_features, rank, generator=gen) * 0.02
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            state[key] = torch.randn(value.shape, generator=gen) * 0.05
    state["lora_alpha"] = torch.tensor(alpha)
    state["use_rslora"] = torch.tensor(use_rslora)
    save_file(state, str(path))
    return state
