"""Checkpoint files: Meta's DINOv2 backbone, the authors' adapter-only release, and our merged single file.

Every conversion is a small pure function over state dicts (the `checkpoint_filter_fn` idea from timm),
and every load is strict: a missing, unexpected or mis-shaped key raises `CheckpointError` naming the key
and both shapes. Nothing is unpickled: torch files load with `weights_only=True`, the rest is safetensors.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .config import LoRATConfig, get_config
from .lora import apply_lora, lora_scale
from .model import LoRAT

StateDict = dict[str, torch.Tensor]
PathLike = str | os.PathLike

MERGED_FORMAT = "lorat-merged"
MERGED_FORMAT_VERSION = "1"
# Backbone entries LoRAT does not use: it has no cls token and never masks patches.
UNUSED_BACKBONE_KEYS = frozenset({"cls_token", "mask_token"})
_LORA_KEY = re.compile(r"^(?P<module>.+?)(?P<slot>\.[qkv])?\.lora\.(?P<which>[AB])$")


class CheckpointError(ValueError):
    """A checkpoint does not fit the model; the message names each offending key and shape."""


@dataclass(frozen=True)
class LoRASettings:
    rank: int
    alpha: float
    use_rslora: bool = False

    @property
    def scale(self) -> float:
        return lora_scale(self.alpha, self.rank, self.use_rslora)


# ---------------------------------------------------------------------------------------------- reading


def read_tensors(path: PathLike) -> StateDict:
    """A state dict from safetensors content (whatever the file is named) or a weights-only torch file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if _looks_like_safetensors(head):
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler refuses arbitrary objects: say so plainly
        raise CheckpointError(f"{path}: not a safetensors file and not loadable with weights_only=True: {exc}") from exc
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a flat state dict of tensors")
    return dict(obj)


def _looks_like_safetensors(head: bytes) -> bool:
    # safetensors: 8-byte little-endian header length, then a JSON object.
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


# ------------------------------------------------------------------------------------------ conversions


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """DINOv2 (1, [1+]G*G, D) position table -> (1, H*W, D) on the search grid.

    Bicubic, no interpolation offset, no antialiasing, computed in fp32; the cls entry is dropped.
    A table already on the target grid passes through unchanged.
    """
    n, dim = pos_embed.shape[1], pos_embed.shape[2]
    h, w = grid
    if n == h * w:
        return pos_embed
    side = math.isqrt(n - 1)
    if side * side == n - 1:
        pos_embed = pos_embed[:, 1:]
    else:
        side = math.isqrt(n)
        if side * side != n:
            raise CheckpointError(f"pos_embed: cannot read a square grid from shape {tuple(pos_embed.shape)}")
    table = pos_embed.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False, antialias=False)
    return table.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed.dtype)


def convert_dinov2_backbone(state: Mapping[str, torch.Tensor], config: LoRATConfig) -> StateDict:
    """Meta-format DINOv2 state dict -> LoRAT key names, pos embed on the search grid."""
    out: StateDict = {}
    for key, value in state.items():
        if key in UNUSED_BACKBONE_KEYS:
            continue
        out[key] = resize_pos_embed(value, config.search_grid) if key == "pos_embed" else value
    return out


def split_release_adapter(adapter: Mapping[str, torch.Tensor]) -> tuple[StateDict, StateDict, LoRASettings | None]:
    """Authors' release file -> (plain weights, LoRA A/B tensors, LoRA settings).

    Plain weights keep model key names: a full `*.linear.weight` from newer trainings becomes `*.weight`.
    """
    weights: StateDict = {}
    loras: StateDict = {}
    alpha = adapter.get("lora_alpha")
    rslora = adapter.get("use_rslora")
    for key, value in adapter.items():
        if key in ("lora_alpha", "use_rslora"):
            continue
        if _LORA_KEY.match(key):
            loras[key] = value
        else:
            weights[key.replace(".linear.", ".")] = value
    settings = None
    if loras:
        rank = next(v.shape[0] for k, v in loras.items() if k.endswith(".A"))
        settings = LoRASettings(
            rank=rank,
            alpha=float(alpha) if alpha is not None else float(rank),
            use_rslora=bool(rslora) if rslora is not None else False,
        )
    return weights, loras, settings


def merge_lora_weights(state: Mapping[str, torch.Tensor], loras: Mapping[str, torch.Tensor],
                       settings: LoRASettings) -> StateDict:
    """`W + (B @ A) * scale` in fp32 for every adapted Linear; qkv merges its q/k/v row blocks."""
    merged = dict(state)
    pairs: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for key, value in loras.items():
        m = _LORA_KEY.match(key)
        assert m is not None
        slot = (m["slot"] or "")[1:]
        pairs.setdefault(m["module"], {}).setdefault(slot, {})[m["which"]] = value
    for module, slots in pairs.items():
        wkey = f"{module}.weight"
        if wkey not in merged:
            raise CheckpointError(f"{module}: the adapter has LoRA for it but no base weight '{wkey}' exists")
        order = ["q", "k", "v"] if set(slots) == {"q", "k", "v"} else [""]
        if set(order) != set(slots):
            raise CheckpointError(f"{module}: incomplete LoRA set {sorted(slots)}")
        deltas = []
        for slot in order:
            ab = slots[slot]
            if set(ab) != {"A", "B"}:
                raise CheckpointError(f"{module}{'.' + slot if slot else ''}.lora: needs both A and B")
            deltas.append(ab["B"].float() @ ab["A"].float())
        delta = torch.cat(deltas, dim=0) * settings.scale
        base = merged[wkey]
        if tuple(delta.shape) != tuple(base.shape):
            raise CheckpointError(
                f"{wkey}: LoRA delta has shape {tuple(delta.shape)} but the weight has {tuple(base.shape)}"
            )
        merged[wkey] = (base.float() + delta).to(base.dtype)
    return merged


# --------------------------------------------------------------------------------------------- loading


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load every key exactly once; otherwise raise naming each missing, extra or mis-shaped key."""
    expected = model.state_dict()
    problems = []
    for key in sorted(expected.keys() - state.keys()):
        problems.append(f"missing key '{key}' (model expects {tuple(expected[key].shape)})")
    for key in sorted(state.keys() - expected.keys()):
        problems.append(f"unexpected key '{key}' (checkpoint has {tuple(state[key].shape)})")
    for key in sorted(expected.keys() & state.keys()):
        if tuple(expected[key].shape) != tuple(state[key].shape):
            problems.append(
                f"shape mismatch for '{key}': model expects {tuple(expected[key].shape)}, "
                f"checkpoint has {tuple(state[key].shape)}"
            )
    if problems:
        raise CheckpointError("checkpoint does not fit the model:\n  " + "\n  ".join(problems))
    model.load_state_dict(dict(state), strict=True)


def load_official(variant: str | LoRATConfig, backbone: PathLike, adapter: PathLike,
                  merge: bool = True) -> LoRAT:
    """The authors' two files -> an eval-mode model; LoRA merged unless `merge=False`."""
    config = get_config(variant)
    state = convert_dinov2_backbone(read_tensors(backbone), config)
    weights, loras, settings = split_release_adapter(read_tensors(adapter))
    for key, value in weights.items():
        state[key] = resize_pos_embed(value, config.search_grid) if key == "pos_embed" else value
    model = LoRAT(config)
    if settings is None:
        load_state_dict_strict(model, state)
    elif merge:
        load_state_dict_strict(model, merge_lora_weights(state, loras, settings))
    else:
        apply_lora(model, settings.rank, settings.alpha, settings.use_rslora)
        wrapped = {_unwrapped_key(k): k for k in model.state_dict() if ".linear." in k}
        state = {wrapped.get(k, k): v for k, v in state.items()}
        state.update(loras)
        load_state_dict_strict(model, state)
    return model.eval()


def _unwrapped_key(key: str) -> str:
    return key.replace(".linear.", ".")


def save_merged(model: LoRAT, path: PathLike, dtype: torch.dtype | None = None,
                extra_metadata: Mapping[str, str] | None = None) -> None:
    """Our single-file format: merged weights plus the config as JSON metadata."""
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    metadata = {
        "format": MERGED_FORMAT,
        "format_version": MERGED_FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        **(extra_metadata or {}),
    }
    save_file(state, str(path), metadata=metadata)


def read_merged_metadata(path: PathLike) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != MERGED_FORMAT:
        raise CheckpointError(
            f"{path}: not a merged LoRAT file (metadata format={metadata.get('format')!r}); "
            "to load the authors' release, pass the variant, the DINOv2 backbone and the adapter file"
        )
    return metadata


def load_merged(path: PathLike) -> LoRAT:
    metadata = read_merged_metadata(path)
    if metadata.get("format_version") != MERGED_FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported format_version {metadata.get('format_version')!r}")
    config = LoRATConfig.from_dict(json.loads(metadata["config"]))
    model = LoRAT(config)
    state = load_file(str(path))
    load_state_dict_strict(model, {k: v.to(model.state_dict()[k].dtype) if k in model.state_dict() else v
                                   for k, v in state.items()})
    return model.eval()
