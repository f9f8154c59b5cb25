"""LoRA layers: merged and unmerged forward agree; merge/unmerge invert; targets match the spec."""

import torch

from lorat_infer import apply_lora, build_model, merge_lora
from lorat_infer.lora import LoRALinear, LoRAQKVLinear


def test_lora_linear_merge_unmerge_round_trip():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(16, 12), rank=4, alpha=8.0)
    x = torch.randn(5, 16)
    before = layer(x)
    original = layer.linear.weight.detach().clone()
    layer.merge()
    torch.testing.assert_close(layer(x), before, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(layer.linear.weight, original)
    layer.unmerge()
    torch.testing.assert_close(layer.linear.weight, original, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer(x), before)


def test_lora_forward_formula():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(8, 6), rank=2, alpha=4.0, use_rslora=True)
    x = torch.randn(3, 8)
    expected = layer.linear(x) + (x @ layer.lora.A.T @ layer.lora.B.T) * (4.0 / 2**0.5)
    torch.testing.assert_close(layer(x), expected)


def test_apply_lora_wraps_every_target_and_merge_preserves_outputs():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    apply_lora(model, rank=4, alpha=4.0)
    block = model.blocks[0]
    assert isinstance(block.attn.qkv, LoRAQKVLinear)
    for layer in (block.attn.proj, block.mlp.fc1, block.mlp.fc2):
        assert isinstance(layer, LoRALinear)
    keys = model.state_dict().keys()
    assert "blocks.0.attn.qkv.q.lora.A" in keys and "blocks.1.mlp.fc2.lora.B" in keys
    cfg = model.config
    template = torch.randn(1, 3, cfg.template_size, cfg.template_size)
    search = torch.randn(1, 3, cfg.search_size, cfg.search_size)
    mask = torch.zeros(1, *cfg.template_grid, dtype=torch.long)
    with torch.no_grad():
        before = model(template, search, mask)
        merge_lora(model)
        after = model(template, search, mask)
    assert isinstance(model.blocks[0].attn.qkv, torch.nn.Linear)
    assert not any("lora" in k for k in model.state_dict())
    assert (before["boxes"] - after["boxes"]).abs().max() < 1e-5


def test_swiglu_targets_are_wrapped():
    model = build_model("tiny-swiglu")
    apply_lora(model, rank=2, alpha=2.0)
    assert isinstance(model.blocks[0].mlp.w12, LoRALinear)
    assert isinstance(model.blocks[0].mlp.w3, LoRALinear)
