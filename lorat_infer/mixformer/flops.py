"""Analytic multiply-accumulate counts of MixFormerV2's per-frame work, full and with the template cache.

Counted like `lorat_infer.flops`: every matrix multiply (patch embedding, qkv + proj, attention scores and
weighted sums, MLP, heads); not norms, softmax or additions. The full forward embeds both templates and
runs all 2 Nz + Ns + 4 tokens through every layer (template queries see only the 2 Nz template keys);
the cached step runs only the Ns + 4 search and prediction queries against all keys.
"""

from __future__ import annotations

from .config import MixFormerV2Config, get_config


def mixformer_macs(variant: str | MixFormerV2Config, cached: bool) -> int:
    """MACs of one frame at batch 1."""
    cfg = get_config(variant)
    d = cfg.embed_dim
    nt = cfg.num_template_tokens  # both templates
    ns = cfg.num_search_tokens  # search + 4 prediction tokens
    queries = ns if cached else nt + ns
    patch_tokens = (ns - 4) + (0 if cached else nt)
    patch = 3 * cfg.patch_size**2 * d * patch_tokens
    per_layer = queries * (4 * d * d + 2 * d * cfg.mlp_hidden)  # qkv + proj, MLP
    per_layer += 2 * d * ns * (nt + ns)  # search/prediction queries over all keys (scores + weighted sum)
    if not cached:
        per_layer += 2 * d * nt * nt  # template queries over the template keys
    heads = 4 * (d * d + d * cfg.bins) + 4 * (d * d + d)
    return patch + cfg.depth * per_layer + heads


def template_macs(variant: str | MixFormerV2Config) -> int:
    """MACs of computing the cache (both templates through every layer), once per template change."""
    cfg = get_config(variant)
    d, nt = cfg.embed_dim, cfg.num_template_tokens
    per_layer = nt * (4 * d * d + 2 * d * cfg.mlp_hidden) + 2 * d * nt * nt
    return 3 * cfg.patch_size**2 * d * nt + cfg.depth * per_layer
