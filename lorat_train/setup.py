"""Which weights train: everything ("full"), or LoRA + token-type table + head ("lora", the LoRAT recipe)."""

from __future__ import annotations

from torch import nn

from lorat_infer.lora import apply_lora
from lorat_infer.model import LoRAT

from .config import LoRAOptions

TRAINABLE_IN_LORA_MODE = ("token_type_embed", "head.")


def is_lora_param(name: str) -> bool:
    return ".lora." in name


def prepare_model(model: LoRAT, mode: str, lora: LoRAOptions) -> LoRAT:
    """Wrap/freeze in place. LoRA mode: frozen patch embed, blocks, norms, LayerScale, pos embed, final norm."""
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if mode != "lora":
        raise ValueError(f"mode must be 'full' or 'lora', got {mode!r}")
    apply_lora(model, lora.rank, lora.alpha, lora.use_rslora)
    for name, p in model.named_parameters():
        p.requires_grad_(is_lora_param(name) or name.startswith(TRAINABLE_IN_LORA_MODE))
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
