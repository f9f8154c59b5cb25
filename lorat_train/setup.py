"""The model a run starts from, and which of its weights train.

Start points (`TrainConfig`):
- `backbone:` a Meta-format DINOv2 file (the authors' start: `dinov2_vitb14_pretrain.pth`): backbone weights
  converted by `lorat_infer.checkpoint.convert_dinov2_backbone` (pos embed resized to the search grid),
  token-type table and head freshly initialised (trunc-normal 0.02, as the authors');
- `backbone:` + `adapter:` an authors'-format adapter (a released LoRAT `*.bin`, or one we exported): loaded
  unmerged through `load_official(..., merge=False)`, and its LoRA keeps training (its rank/alpha win), so the
  exported adapter still applies to the same backbone file;
- `init_checkpoint:` one of our merged files; fresh LoRA on top;
- none: random weights of `variant` / `model`.

Modes: "lora" (the LoRAT recipe: LoRA on every Linear of every block, q/k/v separately; trainable = LoRA A/B +
token-type table + head) or "full" (everything trains).
"""

from __future__ import annotations

import functools

import torch
import torch.utils.checkpoint
from torch import nn

from lorat_infer.checkpoint import (
    CheckpointError,
    convert_dinov2_backbone,
    load_merged,
    load_official,
    load_state_dict_strict,
    read_tensors,
    split_release_adapter,
)
from lorat_infer.config import LoRATConfig, get_config
from lorat_infer.lora import apply_lora
from lorat_infer.model import LoRAT

from .config import LoRAOptions, TrainConfig

TRAINABLE_IN_LORA_MODE = ("token_type_embed", "head.")
ADAPTER_KEYS = ("token_type_embed", "head.")


def is_lora_param(name: str) -> bool:
    return ".lora." in name


def has_lora(model: nn.Module) -> bool:
    return any(is_lora_param(name) for name, _ in model.named_parameters())


def prepare_model(model: LoRAT, mode: str, lora: LoRAOptions) -> LoRAT:
    """Wrap/freeze in place. LoRA mode: frozen patch embed, blocks, norms, LayerScale, pos embed, final norm."""
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if mode != "lora":
        raise ValueError(f"mode must be 'full' or 'lora', got {mode!r}")
    if not has_lora(model):
        apply_lora(model, lora.rank, lora.alpha, lora.use_rslora)
    for name, p in model.named_parameters():
        p.requires_grad_(is_lora_param(name) or name.startswith(TRAINABLE_IN_LORA_MODE))
    return model


def model_config(config: TrainConfig) -> LoRATConfig:
    if config.model:
        return LoRATConfig.from_dict(config.model)
    if config.variant:
        return get_config(config.variant)
    raise ValueError("set `variant` (B-224, L-224, ...), `model` (LoRATConfig fields) or `init_checkpoint`")


def load_meta_backbone(model: LoRAT, path: str) -> None:
    """Meta-format DINOv2 weights into `model`'s backbone; everything but the token types and head must match."""
    state = convert_dinov2_backbone(read_tensors(path), model.config)
    own = model.state_dict()
    fresh = {k: v for k, v in own.items() if k.startswith(ADAPTER_KEYS)}
    clash = sorted(k for k in state if k.startswith(ADAPTER_KEYS))
    if clash:
        raise CheckpointError(f"{path}: a backbone file must not hold {clash[:3]}: pass it as `adapter:` instead")
    load_state_dict_strict(model, {**fresh, **state})


def build_initial_model(config: TrainConfig) -> tuple[LoRAT, LoRAOptions, str]:
    """(model prepared for `config.mode`, the LoRA settings it uses, a one-line description of the start)."""
    torch.manual_seed(config.seed)
    lora = config.lora
    if config.init_checkpoint:
        model = load_merged(config.init_checkpoint).train()
        start = f"merged file {config.init_checkpoint}"
    elif config.backbone:
        cfg = model_config(config)
        if config.adapter:
            _, _, settings = split_release_adapter(read_tensors(config.adapter))
            keep_lora = config.mode == "lora" and settings is not None
            if keep_lora:
                lora = LoRAOptions(rank=settings.rank, alpha=settings.alpha, use_rslora=settings.use_rslora)
            model = load_official(cfg, config.backbone, config.adapter, merge=not keep_lora).train()
            start = f"backbone {config.backbone} + adapter {config.adapter}"
        else:
            model = LoRAT(cfg)
            load_meta_backbone(model, config.backbone)
            start = f"backbone {config.backbone} (token types and head initialised)"
    else:
        model = LoRAT(model_config(config))
        start = "random weights"
    torch.manual_seed(config.seed + 1)  # LoRA init draws from its own stream
    prepare_model(model, config.mode, lora)
    set_drop_path(model, config.drop_path)
    return model.train(), lora, start


def adapter_holds_backbone_weights(path: str) -> bool:
    """Newer release files may carry full block weights: then the backbone is no longer Meta's file alone."""
    weights, _, _ = split_release_adapter(read_tensors(path))
    return any(not k.startswith(ADAPTER_KEYS) for k in weights)


def authors_drop_path(cfg: LoRATConfig) -> float:
    """config/LoRAT/_mixin/large.yaml: drop_path_rate 0.1; giant.yaml: 0.4 (uniform over blocks); else 0."""
    if cfg.embed_dim >= 1536:
        return 0.4
    if cfg.embed_dim >= 1024:
        return 0.1
    return 0.0


def set_drop_path(model: LoRAT, rate: float) -> float:
    """Stochastic depth on every block's two residual branches (training only; no weights involved)."""
    from timm.layers import DropPath

    rate = authors_drop_path(model.config) if rate < 0 else rate
    for block in model.blocks:
        for name in ("drop_path1", "drop_path2"):
            if hasattr(block, name):
                setattr(block, name, DropPath(rate) if rate > 0 else nn.Identity())
    return rate


def _checkpointed(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and block.training:
        return torch.utils.checkpoint.checkpoint(type(block).forward, block, x, use_reentrant=False)
    return type(block).forward(block, x)


def set_activation_checkpointing(model: LoRAT, enabled: bool) -> None:
    """Recompute each block's activations in backward (memory for compute); state dict keys unchanged."""
    for block in model.blocks:
        if enabled:
            block.forward = functools.partial(_checkpointed, block)
        else:
            block.__dict__.pop("forward", None)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
