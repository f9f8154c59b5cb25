"""The analytic MAC count against the spec's table and against torch's own FLOP counter."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lorat_infer import build_model
from lorat_infer.flops import lorat_flops, lorat_macs

SPEC_GMACS = {"S-224": 8.0, "B-224": 29.8, "B-378": 96.5, "L-224": 102.9, "L-378": 325.0, "g-224": 377.7,
              "g-378": 1160.4}


@pytest.mark.parametrize("variant", sorted(SPEC_GMACS))
def test_macs_match_the_spec_table(variant):
    # The table rounds to 0.1 GMACs: the count must round to the same number.
    assert round(lorat_macs(variant).total / 1e9, 1) == SPEC_GMACS[variant]


@pytest.mark.parametrize("variant", ["tiny", "tiny-swiglu"])
def test_flops_equal_torch_flop_counter(variant):
    # The math SDPA backend decomposes attention into matmuls, so the counter sees every multiply.
    model = build_model(variant).eval()
    cfg = model.config
    template = torch.randn(2, 3, cfg.template_size, cfg.template_size)
    search = torch.randn(2, 3, cfg.search_size, cfg.search_size)
    mask = torch.zeros(2, *cfg.template_grid)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as full:
        tokens = model.embed_template(template, mask)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as per_frame:
        model.forward_tokens(tokens, search)
    assert per_frame.get_total_flops() == 2 * lorat_flops(variant, include_template_embed=False)
    assert full.get_total_flops() + per_frame.get_total_flops() == 2 * lorat_flops(variant)


def test_forward_tokens_leaves_out_only_the_template_patch_embedding():
    full, cached = lorat_macs("B-224"), lorat_macs("B-224", include_template_embed=False)
    assert full.total - cached.total == 8 * 8 * 3 * 14 * 14 * 768
    assert full.attention == cached.attention and full.ffn == cached.ffn
