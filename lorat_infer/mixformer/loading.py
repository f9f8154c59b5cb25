"""Recognise a MixFormerV2 file for `lorat_infer.load_model` (ours or the authors'), else return None."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import PathLike, _looks_like_safetensors
from .checkpoint import is_mixformer_file, load_authors_checkpoint, load_mixformer_file
from .model import MixFormerV2


def load_if_mixformer(path: PathLike) -> MixFormerV2 | None:
    """Our safetensors file with format "mixformerv2" -> model; a torch file (not safetensors) -> the
    authors' checkpoint reader, which raises CheckpointError naming what it found if it is not MixFormerV2;
    any other safetensors file -> None (the caller's LoRAT loader reports it)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if _looks_like_safetensors(head):
        return load_mixformer_file(path) if is_mixformer_file(path) else None
    return load_authors_checkpoint(path)
