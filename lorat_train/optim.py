"""AdamW with the usual ViT decay rules and a warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimOptions, total_steps, warmup_steps

# Our earlier rule (configs/default-stage*.yaml): no decay for these besides 0/1-D tensors. The authors'
# rule (run.yaml per_parameter): 1-D tensors and every name matching "embed" (patch_embed included).
LEGACY_NO_DECAY_NAMES = ("pos_embed", "token_type_embed", "cls_token", "mask_token")


def param_groups(model: nn.Module, weight_decay: float,
                 no_decay_names: tuple[str, ...] | list[str] = ("embed",)) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or any(n in name for n in no_decay_names):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, options: OptimOptions) -> torch.optim.AdamW:
    # run.yaml: AdamW, default betas, fused: false
    return torch.optim.AdamW(param_groups(model, options.weight_decay, tuple(options.no_weight_decay)),
                             lr=options.lr, betas=(0.9, 0.999))


def lr_at(step: int, options: OptimOptions) -> float:
    """The learning rate of optimiser step `step` (0-based).

    `schedule: timm` (the authors': timm CosineLRScheduler, per iteration, warmup_prefix=True): linear from
    `warmup_lr` to `lr` over the warm-up, then `min_lr + (lr - min_lr)/2 (1 + cos(pi (step - warmup) / total))`.
    `schedule: legacy` (ours): linear warm-up reaching `lr` at its last step, then cosine to `lr * min_lr_ratio`
    exactly at the last step.
    """
    total, warm = total_steps(options), warmup_steps(options)
    if options.schedule == "timm":
        if step < warm:
            return options.warmup_lr + step * (options.lr - options.warmup_lr) / warm
        progress = min((step - warm) / max(total, 1), 1.0)
        return options.min_lr + 0.5 * (options.lr - options.min_lr) * (1 + math.cos(math.pi * progress))
    if warm > 0 and step < warm:
        return options.lr * (step + 1) / warm
    span = max(total - warm, 1)
    progress = min((step - warm) / span, 1.0)
    floor = options.lr * options.min_lr_ratio
    return floor + (options.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
