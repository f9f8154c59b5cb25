"""`load_model`: one entry point for every way a user brings weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import PathLike, load_merged, load_official
from .config import LoRATConfig
from .mixformer.loading import load_if_mixformer
from .model import LoRAT

if TYPE_CHECKING:
    from torch import nn

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
DEFAULT_MODEL_FILE = DEFAULT_MODEL_DIR / "lorat-default.safetensors"


def default_model_path() -> Path:
    """The merged model shipped inside the package (see default_model/MODEL_CARD.md)."""
    return DEFAULT_MODEL_FILE


def load_model(
    variant_or_checkpoint: str | os.PathLike | LoRATConfig | None = None,
    backbone: PathLike | None = None,
    adapter: PathLike | None = None,
    *,
    merge: bool = True,
) -> LoRAT | nn.Module:
    """Load an eval-mode tracker network (LoRAT, or MixFormerV2 recognised from the file).

    - `load_model()`: the built-in default model shipped with the package;
    - `load_model("model.safetensors")`: our single merged file (see `lorat-export`);
    - `load_model("B-224", backbone="dinov2_vitb14_pretrain.pth", adapter="lorat_b224.bin")`: the
      authors' release, LoRA merged at load (`merge=False` keeps it unmerged, for checks and training);
    - `load_model("mixformerv2_base.pth.tar")`: the MixFormerV2 authors' checkpoint (variant read from its
      tensors, pickled training objects admitted only as inert stand-ins), or our MixFormerV2 safetensors file.
    """
    if backbone is not None or adapter is not None:
        if backbone is None or adapter is None or variant_or_checkpoint is None:
            raise ValueError("loading the authors' release needs the variant, a backbone and an adapter file")
        return load_official(variant_or_checkpoint, backbone, adapter, merge=merge)
    if variant_or_checkpoint is None:
        path = default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"the built-in default model is missing from the package: {path}")
        return load_merged(path)
    if isinstance(variant_or_checkpoint, LoRATConfig) or not Path(variant_or_checkpoint).is_file():
        raise FileNotFoundError(
            f"{variant_or_checkpoint!s}: not a checkpoint file; pass a merged .safetensors file, or a "
            "variant together with backbone= and adapter= (use build_model() for random weights)"
        )
    mixformer = load_if_mixformer(variant_or_checkpoint)
    if mixformer is not None:
        return mixformer
    return load_merged(variant_or_checkpoint)
