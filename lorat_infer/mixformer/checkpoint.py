"""The authors' MixFormerV2 checkpoints, read without running pickled code, and our single-file format.

The authors' trainer saves `{'net': state_dict, 'settings': <lib.train.admin.settings.Settings>, 'stats':
{... AverageMeter ...}, 'optimizer': ..., ...}` with `torch.save`, so `torch.load(weights_only=True)`
refuses the file as it is. We still load with `weights_only=True` (PyTorch's own restricted unpickler, which
rebuilds tensors and storages and refuses every callable it was not told about), plus an explicit
allow-list: the authors' training bookkeeping classes (module `lib.*`, the `lib.train.admin.*` settings,
environment and statistics objects) and two plain record types are mapped to `_Inert`, a stand-in class
that only absorbs the state it is given. No module named in the file is imported and no function from it
is called; any other global (say `os.system`) is refused with an error naming it. We chose this over a
hand-written unpickler because torch's unpickler already handles both torch file formats and the storage
rebuild, and stays maintained with torch; we only widen it by named stand-ins.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..checkpoint import CheckpointError, PathLike, StateDict, load_state_dict_strict
from .config import FAMILY, VARIANTS, MixFormerV2Config
from .model import MixFormerV2

FORMAT = "mixformerv2"
FORMAT_VERSION = "1"
# Globals admitted as inert stand-ins: the authors' own package (training settings, environment, meters)
# and plain attribute/dict records that such settings objects hold.
ALLOWED_GLOBAL_PREFIXES = ("lib.",)
ALLOWED_GLOBALS = frozenset({"easydict.EasyDict", "argparse.Namespace"})
# Keys that only a MixFormerV2 state dict has.
SIGNATURE_KEYS = ("backbone.reg_tokens", "backbone.pos_embed_s", "box_head.layers.1.0.weight")


class _Inert:
    """Stand-in for a pickled training object: keeps its state as data, has no behaviour."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.setdefault("_items", {})

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_list", []).extend(values)


def _is_allowed(global_name: str) -> bool:
    return global_name in ALLOWED_GLOBALS or global_name.startswith(ALLOWED_GLOBAL_PREFIXES)


def safe_torch_load(path: PathLike) -> Any:
    """`torch.load(weights_only=True)`, admitting the authors' training objects as inert stand-ins."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as plain_error:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:
            raise CheckpointError(f"{path}: cannot be read with weights_only=True: {plain_error}") from plain_error
        refused = sorted(n for n in names if not _is_allowed(n))
        if refused:
            raise CheckpointError(
                f"{path}: refusing to load: the file pickles globals outside the allow-list "
                f"(no code from it was run): {', '.join(refused)}"
            ) from plain_error
        stand_ins: list[Any] = [(_Inert, name) for name in names]
        try:
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot be read with weights_only=True: {exc}") from exc


def looks_like_mixformer(state: Mapping[str, Any]) -> bool:
    return all(k in state for k in SIGNATURE_KEYS)


def extract_state_dict(obj: Any, source: str) -> StateDict:
    """The network's tensors from an authors' file: `obj['net']`, or a bare state dict."""
    if isinstance(obj, Mapping) and isinstance(obj.get("net"), Mapping):
        obj = obj["net"]
    if not isinstance(obj, Mapping) or not looks_like_mixformer(obj):
        raise CheckpointError(f"{source}: not a MixFormerV2 checkpoint (no 'net' with {', '.join(SIGNATURE_KEYS)})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: non-tensor entries in the state dict: {bad[:5]}")
    return {k: v for k, v in obj.items()}


def _grid_size(key: str, table: torch.Tensor) -> int:
    side = math.isqrt(table.shape[1])
    if table.ndim != 3 or side * side != table.shape[1]:
        raise CheckpointError(f"'{key}': expected (1, G*G, D), checkpoint has {tuple(table.shape)}")
    return side


def config_from_state(state: Mapping[str, torch.Tensor], name: str | None = None) -> MixFormerV2Config:
    """Read the architecture from the tensors; a registered variant with the same shapes lends its name."""
    depth = sum(1 for k in state if k.startswith("backbone.blocks.") and k.endswith(".norm1.weight"))
    dim = state["backbone.pos_embed_s"].shape[-1]
    patch = state["backbone.patch_embed.proj.weight"].shape[-1]
    shapes = dict(
        embed_dim=dim,
        depth=depth,
        mlp_hidden=state["backbone.blocks.0.mlp.fc1.weight"].shape[0] if depth else 4 * dim,
        patch_size=patch,
        template_size=_grid_size("backbone.pos_embed_t", state["backbone.pos_embed_t"]) * patch,
        search_size=_grid_size("backbone.pos_embed_s", state["backbone.pos_embed_s"]) * patch,
        bins=state["box_head.layers.1.0.weight"].shape[0],
    )
    for cfg in VARIANTS.values():
        if all(getattr(cfg, k) == v for k, v in shapes.items()):
            return cfg
    # The head count is not stored in any tensor: the authors' ViTs use 64-wide heads (B: 12, L: 16).
    return MixFormerV2Config(name=name or "MixFormerV2-custom", num_heads=max(1, dim // 64), **shapes)


def model_from_state(state: Mapping[str, torch.Tensor], name: str | None = None) -> MixFormerV2:
    model = MixFormerV2(config_from_state(state, name))
    expected = model.state_dict()
    load_state_dict_strict(model, {k: v.to(expected[k].dtype) if k in expected else v for k, v in state.items()})
    return model.eval()


def load_authors_checkpoint(path: PathLike) -> MixFormerV2:
    """An authors' `*.pth.tar` (e.g. mixformerv2_base.pth.tar) -> eval-mode model of the right variant."""
    return model_from_state(extract_state_dict(safe_torch_load(path), str(path)), Path(path).stem)


def save_mixformer(model: MixFormerV2, path: PathLike, dtype: torch.dtype | None = None,
                   extra_metadata: Mapping[str, str] | None = None) -> None:
    """Our single-file format: safetensors with the config as JSON metadata (no pickle anywhere)."""
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": FAMILY,
                "config": json.dumps(model.config.to_dict()), **(extra_metadata or {})}
    save_file(state, str(path), metadata=metadata)


def is_mixformer_file(path: PathLike) -> bool:
    """True for our MixFormerV2 safetensors file (metadata format) -- cheap, reads the header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:
        return False


def load_mixformer_file(path: PathLike) -> MixFormerV2:
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a MixFormerV2 file (metadata format={metadata.get('format')!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported format_version {metadata.get('format_version')!r}")
    model = MixFormerV2(MixFormerV2Config.from_dict(json.loads(metadata["config"])))
    expected = model.state_dict()
    state = load_file(str(path))
    load_state_dict_strict(model, {k: v.to(expected[k].dtype) if k in expected else v for k, v in state.items()})
    return model.eval()
