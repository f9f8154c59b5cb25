"""Analytic multiply-accumulate counts of the LoRAT forward, from a config alone.

Counted: every matrix multiply (patch embedding, qkv, attention scores and weighted sum, projection, FFN,
head MLPs). Not counted: norms, activations, softmax, additions (a few % of the time, no MACs in the usual
sense). FLOPs = 2 * MACs. With `include_template_embed=True` this is the full image-to-boxes forward that
the spec's GMACs/frame table describes (B-224: 29.8); the per-frame work of a cached track
(`forward_tokens`) leaves the template's patch embedding out.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import LoRATConfig, get_config


def swiglu_hidden(config: LoRATConfig) -> int:
    """DINOv2's SwiGLU width (e.g. 4096 for D = 1536, ratio 4), rounded to a multiple of 8."""
    return (int(config.embed_dim * config.mlp_ratio * 2 / 3) + 7) // 8 * 8


@dataclass(frozen=True)
class MacBreakdown:
    patch_embed: int
    qkv_proj: int
    attention: int
    ffn: int
    head: int

    @property
    def total(self) -> int:
        return self.patch_embed + self.qkv_proj + self.attention + self.ffn + self.head


def lorat_macs(variant: str | LoRATConfig, include_template_embed: bool = True) -> MacBreakdown:
    """MACs of one frame (batch 1) of the LoRAT forward."""
    cfg = get_config(variant)
    d = cfg.embed_dim
    (hz, wz), (hx, wx) = cfg.template_grid, cfg.search_grid
    nz, nx = hz * wz, hx * wx
    n = nz + nx
    patch = 3 * cfg.patch_size**2 * d
    patch_embed = patch * (nx + (nz if include_template_embed else 0))
    qkv_proj = cfg.depth * n * 4 * d * d  # qkv (3 D^2) + proj (D^2) per token
    attention = cfg.depth * 2 * n * n * d  # q k^T and attn @ v, all heads together
    if cfg.mlp == "swiglu":
        hidden = swiglu_hidden(cfg)
        ffn_per_token = d * 2 * hidden + hidden * d
    else:
        ffn_per_token = 2 * d * int(d * cfg.mlp_ratio)
    ffn = cfg.depth * n * ffn_per_token
    head = nx * (2 * (2 * d * d) + d * 1 + d * 4)  # cls and reg MLPs on search tokens
    return MacBreakdown(patch_embed, qkv_proj, attention, ffn, head)


def lorat_flops(variant: str | LoRATConfig, include_template_embed: bool = True) -> int:
    """2 x MACs."""
    return 2 * lorat_macs(variant, include_template_embed).total
