"""The LoRAT network: a one-stream DINOv2 ViT with decoupled position embeddings and an MLP head.

The forward is split in two so that a service can cache the part that never changes for a track:
`embed_template` (patch embedding + shared spatial position + token type) runs once per track, and
`forward_tokens` runs the joint blocks and the head on every frame.
"""

from __future__ import annotations

import itertools
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from .config import LoRATConfig, get_config
from .mixformer.config import MixFormerV2Config
from .mixformer.config import is_variant_name as is_mixformer_variant
from .mixformer.model import MixFormerV2
from .mixformer.model import build_model as build_mixformer

LAYER_NORM_EPS = 1e-6

# Rows of the token-type table.
TEMPLATE_BACKGROUND, TEMPLATE_FOREGROUND, SEARCH = 0, 1, 2


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding; the same weights embed template and search crops."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, H*W, D)


class SwiGLUFFN(nn.Module):
    """DINOv2's fused SwiGLU (ViT-g): `w12` holds both input projections, `w3` projects back.

    Its constructor takes timm's `mlp_layer` arguments so it drops into timm's `Block`.
    """

    def __init__(self, in_features: int, hidden_features: int, bias: bool = True, **_: object) -> None:
        super().__init__()
        hidden = (int(hidden_features * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(in_features, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class MLP(nn.Module):
    """`Linear -> GELU -> Linear -> GELU -> Linear`, stored as `layers.{0,1,2}` like the release files."""

    def __init__(self, dim: int, out_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        dims = [dim] * num_layers + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.gelu(x)
        return x


class AnchorFreeHead(nn.Module):
    """Per-token classification logit and (l, t, r, b) distances from the token's cell centre."""

    def __init__(self, dim: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = grid
        self.cls_mlp = MLP(dim, 1)
        self.reg_mlp = MLP(dim, 4)
        h, w = grid
        cy = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        cx = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        centres = torch.stack(torch.meshgrid(cx, cy, indexing="xy"), dim=-1)  # (H, W, 2) as (cx, cy)
        self.register_buffer("cell_centres", centres, persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        h, w = self.grid
        score_map = self.cls_mlp(x).float().view(b, h, w)
        ltrb = self.reg_mlp(x).float().sigmoid().view(b, h, w, 4)
        centres = self.cell_centres.to(ltrb.device)
        boxes = torch.cat([centres - ltrb[..., :2], centres + ltrb[..., 2:]], dim=-1)
        return {"score_map": score_map, "boxes": boxes}


class LoRAT(nn.Module):
    """LoRAT inference network (LoRA merged into plain Linear layers; see `lora.apply_lora`)."""

    def __init__(self, config: LoRATConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        hx, wx = config.search_grid
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        # Shared spatial position embedding on the search grid; the template uses its top-left block.
        self.pos_embed = nn.Parameter(torch.zeros(1, hx * wx, dim), requires_grad=False)
        self.token_type_embed = nn.Parameter(torch.zeros(3, dim))
        norm_layer = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)
        self.blocks = nn.ModuleList(
            Block(
                dim,
                config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=True,
                init_values=config.layer_scale_init,
                norm_layer=norm_layer,
                mlp_layer=SwiGLUFFN if config.mlp == "swiglu" else _timm_mlp(),
            )
            for _ in range(config.depth)
        )
        self.norm = norm_layer(dim)
        self.head = AnchorFreeHead(dim, config.search_grid)
        self.init_weights()

    def init_weights(self) -> None:
        """Random initialisation (ViT style); real weights come from `checkpoint.load_model`."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.token_type_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def template_pos_embed(self) -> torch.Tensor:
        """The top-left Hz x Wz block of the search-grid position embedding, flattened."""
        (hz, wz), (hx, wx) = self.config.template_grid, self.config.search_grid
        grid = self.pos_embed.view(1, hx, wx, -1)
        return grid[:, :hz, :wz, :].reshape(1, hz * wz, -1)

    def embed_template(self, template: torch.Tensor, template_mask: torch.Tensor) -> torch.Tensor:
        """Template crop (B, 3, Hz*p, Wz*p) and 0/1 mask (B, Hz, Wz) -> cacheable tokens (B, Nz, D)."""
        tokens = self.patch_embed(template) + self.template_pos_embed()
        type_ids = template_mask.flatten(1).long().clamp(0, 1)  # background 0, foreground 1
        return tokens + self.token_type_embed[type_ids]

    def embed_search(self, search: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(search) + self.pos_embed + self.token_type_embed[SEARCH]

    def forward_tokens(self, template_tokens: torch.Tensor, search: torch.Tensor) -> dict[str, torch.Tensor]:
        """Joint attention over cached template tokens and a search crop; the per-frame work."""
        x = torch.cat([template_tokens.to(search.dtype), self.embed_search(search)], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, template_tokens.shape[1] :])

    def forward(
        self, template: torch.Tensor, search: torch.Tensor, template_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return self.forward_tokens(self.embed_template(template, template_mask), search)


def _timm_mlp() -> type[nn.Module]:
    from timm.layers import Mlp

    return Mlp


def build_model(variant: str | LoRATConfig | MixFormerV2Config) -> LoRAT | MixFormerV2:
    """A randomly initialised network of either family: a LoRAT variant ("B-224") or a MixFormerV2 one
    ("MixFormerV2-B", "MixFormerV2-S"); works under `with torch.device("meta"):` for the big variants."""
    if isinstance(variant, MixFormerV2Config) or is_mixformer_variant(variant):
        return build_mixformer(variant)
    return LoRAT(get_config(variant))
