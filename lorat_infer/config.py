"""Variant configurations of the LoRAT architecture.

One frozen dataclass per variant, as timm does for its ViTs: everything that decides tensor shapes and
crop geometry lives here, so a checkpoint's metadata can name a variant or carry the whole config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class LoRATConfig:
    """Shapes of the network and the crop geometry of the tracking pipeline."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp: Literal["gelu", "swiglu"] = "gelu"
    mlp_ratio: float = 4.0
    patch_size: int = 14
    template_size: int = 112
    search_size: int = 224
    template_factor: float = 2.0
    search_factor: float = 4.0
    layer_scale_init: float = 1e-5
    # Selection weights of the tracking pipeline (score map against the Hann window).
    window_weight: float = 0.45
    min_box_size: float = 10.0
    # Share of the predicted size change a track takes per frame, in log space (SiamRPN's size learning
    # rate): 1 follows every prediction, as LoRAT does; below 1 damps size jumps that pull a weak model
    # onto a bigger look-alike (a face's neck and chest). The built-in model ships a tuned value.
    size_lr: float = 1.0

    @property
    def template_grid(self) -> tuple[int, int]:
        g = self.template_size // self.patch_size
        return (g, g)

    @property
    def search_grid(self) -> tuple[int, int]:
        g = self.search_size // self.patch_size
        return (g, g)

    @property
    def num_tokens(self) -> int:
        (hz, wz), (hx, wx) = self.template_grid, self.search_grid
        return hz * wz + hx * wx

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoRATConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown LoRAT config fields: {sorted(unknown)}")
        return cls(**values)


def _variant(name: str, dim: int, depth: int, heads: int, res: int, **kw: Any) -> LoRATConfig:
    big = res == 378
    return LoRATConfig(
        name=name,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        template_size=196 if big else 112,
        search_size=378 if big else 224,
        search_factor=5.0 if big else 4.0,
        **kw,
    )


VARIANTS: dict[str, LoRATConfig] = {
    c.name: c
    for c in (
        _variant("S-224", 384, 12, 6, 224),
        _variant("B-224", 768, 12, 12, 224),
        _variant("B-378", 768, 12, 12, 378),
        _variant("L-224", 1024, 24, 16, 224),
        _variant("L-378", 1024, 24, 16, 378),
        _variant("g-224", 1536, 40, 24, 224, mlp="swiglu"),
        _variant("g-378", 1536, 40, 24, 378, mlp="swiglu"),
        # Tiny configurations of the same architecture, for tests and CPU demos.
        LoRATConfig(name="tiny", embed_dim=64, depth=2, num_heads=2, template_size=56, search_size=112),
        LoRATConfig(
            name="tiny-swiglu", embed_dim=48, depth=2, num_heads=2, mlp="swiglu", template_size=56,
            search_size=112,
        ),
    )
}


def get_config(variant: str | LoRATConfig) -> LoRATConfig:
    """Look a variant up by name (case-insensitive), or pass a config through."""
    if isinstance(variant, LoRATConfig):
        return variant
    for name, cfg in VARIANTS.items():
        if name.lower() == variant.lower():
            return cfg
    raise KeyError(f"unknown LoRAT variant {variant!r}; known: {', '.join(VARIANTS)}")


def register_variant(config: LoRATConfig) -> None:
    """Make a config available by name (used by the built-in default model)."""
    VARIANTS[config.name] = config
