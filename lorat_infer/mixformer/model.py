"""The MixFormerV2 network (MCG-NJU/MixFormerV2, `mixformer2_vit_online.py` at commit 1041438).

Module and parameter names follow the authors' so that their `net` state dict loads key for key:
`backbone.{patch_embed.proj, pos_embed_t, pos_embed_s, reg_tokens, pos_embed_reg, blocks.N.*}`,
`box_head.layers.*`, `score_head.layers.*`.

Asymmetric mixed attention: template and online-template queries attend only to the two templates' keys,
so the template side of every layer is independent of the search frame. `template_cache` computes those
keys and values once (per template change); `forward_cached` runs only the search and prediction tokens
against them. The full `forward` is kept for checks and follows the authors' arithmetic step for step.
No per-stream state lives in the module (the authors keep it in module attributes): the cache is returned
to the caller, who keeps one per track.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from .config import MixFormerV2Config, get_config

# Backbone LayerNorms: eps 1e-6 (`partial(nn.LayerNorm, eps=1e-6)`); the box head's use torch's default 1e-5.
BACKBONE_LN_EPS = 1e-6
HEAD_LN_EPS = 1e-5


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table (1, grid*grid, dim), computed in float32 numpy like the authors'."""
    coords = np.arange(grid, dtype=np.float32)
    ww, hh = np.meshgrid(coords, coords)  # w first, as MAE
    omega = np.arange(dim // 4, dtype=np.float32)
    omega /= dim / 4.0
    omega = 1.0 / 10000**omega

    def one_axis(pos: np.ndarray) -> np.ndarray:
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    table = np.concatenate([one_axis(ww), one_axis(hh)], axis=1)
    return torch.from_numpy(table).float().unsqueeze(0)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        b, _, n, _ = q.shape
        return (attn @ v).transpose(1, 2).reshape(b, n, -1)

    def forward(self, x: torch.Tensor, num_template: int) -> torch.Tensor:
        """Full sequence [t | ot | s | reg]: the first `num_template` queries see only those keys."""
        q, k, v = self._qkv(x).unbind(0)
        x_t = self._attend(q[:, :, :num_template], k[:, :, :num_template], v[:, :, :num_template])
        x_s = self._attend(q[:, :, num_template:], k, v)
        return self.proj(torch.cat([x_t, x_s], dim=1))

    def forward_template(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Template tokens only; also returns their keys and values (B, heads, Nt, head_dim)."""
        q, k, v = self._qkv(x).unbind(0)
        return self.proj(self._attend(q, k, v)), k, v

    def forward_cached(self, x: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
        """Search + prediction tokens attending to [cached template keys | their own keys]."""
        q, k, v = self._qkv(x).unbind(0)
        k = torch.cat([k_t.to(k.dtype), k], dim=2)
        v = torch.cat([v_t.to(v.dtype), v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        b, _, n, _ = q.shape
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    """Pre-norm ViT block without LayerScale (the authors' `Block`, drop path off at test time)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BACKBONE_LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=BACKBONE_LN_EPS)
        self.mlp = Mlp(in_features=dim, hidden_features=mlp_hidden, act_layer=nn.GELU)

    def forward(self, x: torch.Tensor, num_template: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), num_template)
        return x + self.mlp(self.norm2(x))

    def forward_template(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, k, v = self.attn.forward_template(self.norm1(x))
        x = x + y
        return x + self.mlp(self.norm2(x)), k, v

    def forward_cached(self, x: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
        x = x + self.attn.forward_cached(self.norm1(x), k_t, v_t)
        return x + self.mlp(self.norm2(x))


class Backbone(nn.Module):
    def __init__(self, config: MixFormerV2Config) -> None:
        super().__init__()
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        self.blocks = nn.Sequential(*[Block(dim, config.num_heads, config.mlp_hidden) for _ in range(config.depth)])
        hz, _ = config.template_grid
        hx, _ = config.search_grid
        self.pos_embed_s = nn.Parameter(sincos_pos_embed(dim, hx), requires_grad=False)
        self.pos_embed_t = nn.Parameter(sincos_pos_embed(dim, hz), requires_grad=False)
        self.reg_tokens = nn.Parameter(torch.zeros(1, 4, dim))
        self.pos_embed_reg = nn.Parameter(torch.zeros(1, 4, dim))

    def embed_templates(self, template: torch.Tensor, online_template: torch.Tensor) -> torch.Tensor:
        x_t = self.patch_embed(template) + self.pos_embed_t
        x_ot = self.patch_embed(online_template) + self.pos_embed_t
        return torch.cat([x_t, x_ot], dim=1)

    def embed_search(self, search: torch.Tensor) -> torch.Tensor:
        x_s = self.patch_embed(search) + self.pos_embed_s
        reg = self.reg_tokens.expand(x_s.shape[0], -1, -1) + self.pos_embed_reg
        return torch.cat([x_s, reg.to(x_s.dtype)], dim=1)


class BoxHead(nn.Module):
    """Shared MLP per prediction token -> distribution over `bins` positions per side (authors' MlpHead).

    `Linear(D, D) -> LayerNorm -> ReLU -> Linear(D, bins) -> LayerNorm`, stored as layers.{0,1}.{0,1}.
    """

    def __init__(self, dim: int, bins: int, search_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim, eps=HEAD_LN_EPS), nn.ReLU()),
            nn.Sequential(nn.Linear(dim, bins), nn.LayerNorm(bins, eps=HEAD_LN_EPS)),
        )
        stride = search_size / bins
        # The same expression as the authors' (int64 arange times a Python float), so the same float32 values.
        self.register_buffer("indice", torch.arange(0, bins).unsqueeze(0) * stride, persistent=False)
        self.img_sz = bins * stride

    def forward(self, reg_tokens: torch.Tensor) -> torch.Tensor:
        """(B, 4, D) tokens in the order left, right, top, bottom -> normalised xyxy (B, 4)."""
        prob = self.layers(reg_tokens).softmax(dim=-1)  # (B, 4, bins)
        coord = torch.sum(self.indice * prob, dim=-1)  # (B, 4): l, r, t, b
        left, right, top, bottom = coord.unbind(1)
        return torch.stack((left, top, right, bottom), dim=1) / self.img_sz


class ScoreHead(nn.Module):
    """`Linear(D, D) -> ReLU -> Linear(D, 1)` per prediction token, mean over the four: the score logit."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, dim), nn.ReLU()), nn.Linear(dim, 1))

    def forward(self, reg_tokens: torch.Tensor) -> torch.Tensor:
        return self.layers(reg_tokens).mean(dim=1).view(-1)


def xyxy_to_cxcywh(box: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = box.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0), (y1 - y0)], dim=-1)


@dataclass(frozen=True)
class TemplateCache:
    """Per-layer keys and values of both templates: (depth, 2, B, heads, 2*Nz, head_dim), k then v."""

    kv: torch.Tensor

    def select(self, index: int) -> TemplateCache:
        return TemplateCache(self.kv[:, :, index : index + 1])

    @staticmethod
    def stack(caches: list[TemplateCache]) -> TemplateCache:
        return TemplateCache(torch.cat([c.kv for c in caches], dim=2))

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()


class MixFormerV2(nn.Module):
    """MixFormerV2 inference network: `forward` (full, as the authors) and the cached pair
    `template_cache` + `forward_cached` (what the engine runs)."""

    def __init__(self, config: MixFormerV2Config) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.box_head = BoxHead(config.embed_dim, config.bins, config.search_size)
        self.score_head = ScoreHead(config.embed_dim)
        self.init_weights()

    @property
    def family(self) -> str:
        return self.config.family

    def init_weights(self) -> None:
        """Random initialisation (ViT style); real weights come from the authors' checkpoint."""
        nn.init.trunc_normal_(self.backbone.reg_tokens, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def heads(self, reg_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Box and score heads in their weights' dtype, outside any autocast: engines keep them in float32
        (the bin softmax and its expectation are precision-sensitive), whatever the backbone runs in."""
        ctx = torch.autocast(reg_tokens.device.type, enabled=False) if torch.is_autocast_enabled(
            reg_tokens.device.type) else contextlib.nullcontext()
        with ctx:
            reg = reg_tokens.to(self.box_head.layers[0][0].weight.dtype)
            boxes = xyxy_to_cxcywh(self.box_head(reg))
            return {"pred_boxes": boxes, "pred_scores": self.score_head(reg)}

    def forward(self, template: torch.Tensor, online_template: torch.Tensor,
                search: torch.Tensor) -> dict[str, torch.Tensor]:
        """Full forward over [t | ot | s | reg] -> `pred_boxes` (B, 4) normalised cx, cy, w, h in the search
        crop and `pred_scores` (B,) score logits."""
        bb = self.backbone
        x = torch.cat([bb.embed_templates(template, online_template), bb.embed_search(search)], dim=1)
        nt = self.config.num_template_tokens
        for block in bb.blocks:
            x = block(x, nt)
        return self.heads(x[:, -4:])

    def template_cache(self, template: torch.Tensor, online_template: torch.Tensor) -> TemplateCache:
        """Run the template side once: every layer's keys and values of both templates."""
        x = self.backbone.embed_templates(template, online_template)
        kvs = []
        for block in self.backbone.blocks:
            x, k, v = block.forward_template(x)
            kvs.append(torch.stack([k, v]))
        return TemplateCache(torch.stack(kvs))

    def forward_cached(self, cache: TemplateCache, search: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-frame step: search + prediction tokens against the cached template keys and values."""
        x = self.backbone.embed_search(search)
        for block, kv in zip(self.backbone.blocks, cache.kv):
            x = block.forward_cached(x, kv[0], kv[1])
        return self.heads(x[:, -4:])


def build_model(variant: str | MixFormerV2Config) -> MixFormerV2:
    """A randomly initialised MixFormerV2; works under `with torch.device("meta"):`."""
    return MixFormerV2(get_config(variant))
