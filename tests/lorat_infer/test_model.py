"""Architecture facts: parameter counts per variant, shapes, and the cached-template split."""

import pytest
import torch

from lorat_infer import VARIANTS, build_model

# Inference parameter counts (millions) from SPEC-lorat.md.
SPEC_PARAMS_M = {
    "S-224": 22.2, "B-224": 88.1, "B-378": 88.5, "L-224": 307.4, "L-378": 307.9, "g-224": 1144.2, "g-378": 1144.9,
}


@pytest.mark.parametrize("variant", sorted(SPEC_PARAMS_M))
def test_parameter_count_matches_spec(variant):
    with torch.device("meta"):
        model = build_model(variant)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    # The spec rounds to 0.1 M, so allow that rounding on top of the 0.1 % tolerance.
    assert abs(count - SPEC_PARAMS_M[variant]) <= 0.001 * SPEC_PARAMS_M[variant] + 0.05, count


def test_giant_uses_fused_swiglu_shapes():
    with torch.device("meta"):
        model = build_model("g-224")
    mlp = model.blocks[0].mlp
    assert tuple(mlp.w12.weight.shape) == (8192, 1536)
    assert tuple(mlp.w3.weight.shape) == (1536, 4096)


@pytest.mark.parametrize("variant", ["tiny", "tiny-swiglu"])
def test_forward_shapes_and_split_forward(variant):
    torch.manual_seed(0)
    model = build_model(variant).eval()
    cfg = model.config
    (hz, wz), (hx, wx) = cfg.template_grid, cfg.search_grid
    template = torch.randn(2, 3, cfg.template_size, cfg.template_size)
    search = torch.randn(2, 3, cfg.search_size, cfg.search_size)
    mask = torch.zeros(2, hz, wz, dtype=torch.long)
    mask[:, 1:3, 1:3] = 1
    with torch.no_grad():
        out = model(template, search, mask)
        tokens = model.embed_template(template, mask)
        split = model.forward_tokens(tokens, search)
    assert out["score_map"].shape == (2, hx, wx) and out["score_map"].dtype == torch.float32
    assert out["boxes"].shape == (2, hx, wx, 4)
    assert tokens.shape == (2, hz * wz, cfg.embed_dim)
    torch.testing.assert_close(split["boxes"], out["boxes"])
    torch.testing.assert_close(split["score_map"], out["score_map"])


def test_template_uses_top_left_block_of_search_pos_embed_and_token_types():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    cfg = model.config
    (hz, wz), (hx, wx) = cfg.template_grid, cfg.search_grid
    template = torch.zeros(1, 3, cfg.template_size, cfg.template_size)
    mask = torch.zeros(1, hz, wz, dtype=torch.long)
    mask[0, 0, 0] = 1
    with torch.no_grad():
        tokens = model.embed_template(template, mask)[0]
        patch = model.patch_embed(template)[0]
    grid = model.pos_embed.view(hx, wx, -1)
    expected_fg = patch[0] + grid[0, 0] + model.token_type_embed[1]
    expected_bg = patch[wz + 1] + grid[1, 1] + model.token_type_embed[0]  # row 1, column 1 of the template
    torch.testing.assert_close(tokens[0], expected_fg)
    torch.testing.assert_close(tokens[wz + 1], expected_bg)


def test_boxes_decode_from_cell_centres():
    model = build_model("tiny").eval()
    hx, wx = model.config.search_grid
    # Zero the last regression layer: sigmoid(0) = 0.5 on every side, so each box is centre +- 0.5.
    with torch.no_grad():
        model.head.reg_mlp.layers[-1].weight.zero_()
        model.head.reg_mlp.layers[-1].bias.zero_()
        tokens = torch.randn(1, hx * wx, model.config.embed_dim)
        boxes = model.head(tokens)["boxes"][0]
    assert torch.allclose(boxes[0, 0], torch.tensor([0.5 / wx - 0.5, 0.5 / hx - 0.5, 0.5 / wx + 0.5, 0.5 / hx + 0.5]))
    assert torch.allclose(boxes[2, 3, :2], torch.tensor([3.5 / wx - 0.5, 2.5 / hx - 0.5]))


def test_all_spec_variants_registered():
    assert set(SPEC_PARAMS_M) <= set(VARIANTS)
