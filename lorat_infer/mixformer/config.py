"""MixFormerV2 variants (network shapes) and the tracker's parameters, kept apart as pytracking does.

`MixFormerV2Config` decides tensor shapes only; it can be read back from a checkpoint's tensors.
`TrackerParams` holds what the authors' test script and YAML files set per variant and dataset; an engine
or a single track may override it without touching the network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

FAMILY = "mixformerv2"


@dataclass(frozen=True)
class MixFormerV2Config:
    """Shapes of the network: ViT backbone with 4 prediction tokens, a bin box head and a score head."""

    name: str
    embed_dim: int = 768
    depth: int = 8
    num_heads: int = 12
    mlp_hidden: int = 3072
    patch_size: int = 16
    template_size: int = 128
    search_size: int = 288
    # Number of bins per box side of the distribution head (`cfg.MODEL.FEAT_SZ`); released weights: 96.
    bins: int = 96

    @property
    def family(self) -> str:
        return FAMILY

    @property
    def template_grid(self) -> tuple[int, int]:
        g = self.template_size // self.patch_size
        return (g, g)

    @property
    def search_grid(self) -> tuple[int, int]:
        g = self.search_size // self.patch_size
        return (g, g)

    @property
    def num_template_tokens(self) -> int:
        """Tokens of both templates together (template + online template)."""
        h, w = self.template_grid
        return 2 * h * w

    @property
    def num_search_tokens(self) -> int:
        """Search tokens plus the four prediction tokens: the queries of the per-frame step."""
        h, w = self.search_grid
        return h * w + 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MixFormerV2Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown MixFormerV2 config fields: {sorted(unknown)}")
        return cls(**values)


VARIANTS: dict[str, MixFormerV2Config] = {
    c.name: c
    for c in (
        MixFormerV2Config("MixFormerV2-B", depth=8, mlp_hidden=3072, template_size=128, search_size=288),
        MixFormerV2Config("MixFormerV2-S", depth=4, mlp_hidden=768, template_size=112, search_size=224),
        # Tiny configuration of the same architecture, for tests (2x2 template grid, 4x4 search grid).
        MixFormerV2Config("MixFormerV2-tiny", embed_dim=64, depth=2, num_heads=2, mlp_hidden=128,
                          template_size=32, search_size=64, bins=16),
    )
}


def get_config(variant: str | MixFormerV2Config) -> MixFormerV2Config:
    """Look a variant up by name (case-insensitive), or pass a config through."""
    if isinstance(variant, MixFormerV2Config):
        return variant
    for name, cfg in VARIANTS.items():
        if name.lower() == variant.lower():
            return cfg
    raise KeyError(f"unknown MixFormerV2 variant {variant!r}; known: {', '.join(VARIANTS)}")


def is_variant_name(name: object) -> bool:
    return isinstance(name, str) and any(name.lower() == n.lower() for n in VARIANTS)


@dataclass(frozen=True)
class TrackerParams:
    """The authors' test-time settings (lib/test/tracker/mixformer2_vit_online.py at commit 1041438).

    Defaults are their LaSOT settings: search factor 5.0 (-B) or 4.4 (-S) as `tracking/test_mixformer.sh`
    passes it (the YAML files say 4.5, which the script overrides), update interval 200, one online template.
    """

    search_factor: float = 5.0
    template_factor: float = 2.0
    update_interval: int = 200
    # A candidate online template is cropped when the score beats this and the running maximum.
    score_threshold: float = 0.5
    # `max_score_decay` of the authors' tracker (1.0 in every released setting: no decay).
    max_score_decay: float = 1.0
    # clip_box margin: x1 <= W - 10, x2 >= 10, w, h >= 10.
    margin: float = 10.0

    def __post_init__(self) -> None:
        if not self.search_factor > 0 or not self.template_factor > 0:
            raise ValueError("crop factors must be positive")
        if int(self.update_interval) != self.update_interval or self.update_interval < 1:
            raise ValueError(f"update_interval must be a positive integer, got {self.update_interval!r}")

    def replace(self, **changes: Any) -> TrackerParams:
        """A copy with the given fields changed; None values are ignored (no override)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# (variant, dataset) -> the authors' settings. Search factors from tracking/test_mixformer.sh; update
# intervals from experiments/mixformer2_vit_online/*.yaml (TEST.UPDATE_INTERVALS).
_SEARCH_FACTOR = {
    ("MixFormerV2-B", "lasot"): 5.0, ("MixFormerV2-B", "trackingnet"): 5.0, ("MixFormerV2-B", "got10k"): 5.0,
    ("MixFormerV2-S", "lasot"): 4.4, ("MixFormerV2-S", "trackingnet"): 4.55, ("MixFormerV2-S", "got10k"): 4.55,
}
_UPDATE_INTERVAL = {
    ("MixFormerV2-B", "lasot"): 200, ("MixFormerV2-B", "trackingnet"): 25, ("MixFormerV2-B", "got10k"): 10,
    ("MixFormerV2-S", "lasot"): 200, ("MixFormerV2-S", "trackingnet"): 25, ("MixFormerV2-S", "got10k"): 15,
}


def default_params(config: MixFormerV2Config, dataset: str = "lasot") -> TrackerParams:
    """The authors' settings for a variant on a benchmark (LaSOT unless named); other configs (tiny, or
    shapes read from an unnamed checkpoint) get -S's factors when they have -S's search size, else -B's."""
    name = config.name if config.name in ("MixFormerV2-B", "MixFormerV2-S") else (
        "MixFormerV2-S" if config.search_size == 224 else "MixFormerV2-B")
    key = (name, dataset.lower().replace("-", "").replace("_", ""))
    if key not in _SEARCH_FACTOR:
        raise KeyError(f"no authors' settings for dataset {dataset!r}; known: lasot, trackingnet, got10k")
    return TrackerParams(search_factor=_SEARCH_FACTOR[key], update_interval=_UPDATE_INTERVAL[key])
