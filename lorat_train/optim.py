"""AdamW with the usual ViT decay rules and a warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimOptions

# Parameters that never get weight decay besides 0/1-D tensors (norms, biases, LayerScale): embeddings.
NO_DECAY_NAMES = ("pos_embed", "token_type_embed", "cls_token", "mask_token")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or any(n in name for n in NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, options: OptimOptions) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, options.weight_decay), lr=options.lr, betas=(0.9, 0.999))


def lr_at(step: int, options: OptimOptions) -> float:
    """Linear warm-up to `lr`, then cosine down to `lr * min_lr_ratio` at the last step."""
    if options.warmup_steps > 0 and step < options.warmup_steps:
        return options.lr * (step + 1) / options.warmup_steps
    span = max(options.steps - options.warmup_steps, 1)
    progress = min((step - options.warmup_steps) / span, 1.0)
    floor = options.lr * options.min_lr_ratio
    return floor + (options.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
