"""MixFormerV2: shapes and parameter counts, the authors' arithmetic, the cached template side, and safe
loading of checkpoints written in the authors' exact layout."""

from __future__ import annotations

import math

import pytest
import torch

from lorat_infer import build_model, load_model
from lorat_infer.checkpoint import CheckpointError
from lorat_infer.cli.export import main as export_main
from lorat_infer.mixformer import MixFormerV2, get_config
from lorat_infer.mixformer.checkpoint import load_authors_checkpoint

from .mixformer_release import random_state_dict, write_authors_checkpoint, write_malicious_checkpoint

TINY = get_config("MixFormerV2-tiny")


@pytest.mark.parametrize(("variant", "count", "tokens"), [("MixFormerV2-B", 58_855_201, 456),
                                                          ("MixFormerV2-S", 16_228_897, 298)])
def test_full_size_parameter_counts_on_meta(variant, count, tokens):
    with torch.device("meta"):
        model = build_model(variant)
    assert isinstance(model, MixFormerV2)
    assert sum(p.numel() for p in model.parameters()) == count
    cfg = model.config
    assert cfg.num_template_tokens + cfg.num_search_tokens == tokens
    # eps: backbone LayerNorms 1e-6, the box head's torch's default 1e-5
    assert {m.eps for m in model.backbone.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    assert {m.eps for m in model.box_head.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-5}


@pytest.fixture(scope="module")
def model() -> MixFormerV2:
    m = MixFormerV2(TINY)
    m.load_state_dict(random_state_dict(TINY, seed=3))
    return m.eval()


def _inputs(batch: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 3, TINY.template_size, TINY.template_size, generator=gen)
    oz = torch.randn(batch, 3, TINY.template_size, TINY.template_size, generator=gen)
    x = torch.randn(batch, 3, TINY.search_size, TINY.search_size, generator=gen)
    return z, oz, x


def _authors_forward(model: MixFormerV2, z, oz, x) -> tuple[torch.Tensor, torch.Tensor]:
    """A line-by-line transcription of the authors' MixFormer.forward (mixformer2_vit_online.py, head.py)."""
    bb, cfg = model.backbone, model.config
    t_h = t_w = cfg.template_grid[0]
    s_h = s_w = cfg.search_grid[0]
    x_t = bb.patch_embed.proj(z).flatten(2).transpose(1, 2) + bb.pos_embed_t
    x_ot = bb.patch_embed.proj(oz).flatten(2).transpose(1, 2) + bb.pos_embed_t
    x_s = bb.patch_embed.proj(x).flatten(2).transpose(1, 2) + bb.pos_embed_s
    b = x_t.shape[0]
    reg = bb.reg_tokens.expand(b, -1, -1) + bb.pos_embed_reg
    h = torch.cat([x_t, x_ot, x_s, reg], dim=1)
    for blk in bb.blocks:
        a = blk.attn
        y = blk.norm1(h)
        n, c = y.shape[1], y.shape[2]
        qkv = a.qkv(y).reshape(b, n, 3, a.num_heads, c // a.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q_mt, q_s = torch.split(q, [t_h * t_w * 2, s_h * s_w + 4], dim=2)
        k_mt, _ = torch.split(k, [t_h * t_w * 2, s_h * s_w + 4], dim=2)
        v_mt, _ = torch.split(v, [t_h * t_w * 2, s_h * s_w + 4], dim=2)
        attn = ((q_mt @ k_mt.transpose(-2, -1)) * a.scale).softmax(dim=-1)
        x_mt = (attn @ v_mt).transpose(1, 2).reshape(b, t_h * t_w * 2, c)
        attn = ((q_s @ k.transpose(-2, -1)) * a.scale).softmax(dim=-1)
        x_ss = (attn @ v).transpose(1, 2).reshape(b, s_h * s_w + 4, c)
        h = h + a.proj(torch.cat([x_mt, x_ss], dim=1))
        h = h + blk.mlp(blk.norm2(h))
    reg_tokens = h[:, -4:]
    head = model.box_head
    stride = cfg.search_size / cfg.bins
    indice = torch.arange(0, cfg.bins).unsqueeze(0) * stride
    tok_l, tok_r, tok_t, tok_b = reg_tokens.unbind(dim=1)
    coords = [torch.sum(indice * head.layers(t).softmax(dim=-1), dim=-1) for t in (tok_l, tok_r, tok_t, tok_b)]
    xyxy = torch.stack((coords[0], coords[2], coords[1], coords[3]), dim=1) / (cfg.bins * stride)
    x0, y0, x1, y1 = xyxy.unbind(-1)
    boxes = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0), (y1 - y0)], dim=-1)
    scores = model.score_head.layers(reg_tokens).mean(dim=1).view(-1)
    return boxes, scores


@torch.inference_mode()
def test_forward_is_the_authors_arithmetic(model):
    z, oz, x = _inputs(2)
    out = model(z, oz, x)
    boxes, scores = _authors_forward(model, z, oz, x)
    assert out["pred_boxes"].shape == (2, 4) and out["pred_scores"].shape == (2,)
    torch.testing.assert_close(out["pred_boxes"], boxes, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["pred_scores"], scores, rtol=0, atol=1e-6)
    assert not torch.allclose(out["pred_boxes"][0], out["pred_boxes"][1])  # inputs matter


@torch.inference_mode()
def test_cached_template_side_equals_full_forward(model):
    z, oz, x = _inputs(3, seed=1)
    full = model(z, oz, x)
    cache = model.template_cache(z, oz)
    assert cache.kv.shape == (TINY.depth, 2, 3, TINY.num_heads, TINY.num_template_tokens,
                              TINY.embed_dim // TINY.num_heads)
    cached = model.forward_cached(cache, x)
    torch.testing.assert_close(cached["pred_boxes"], full["pred_boxes"], rtol=0, atol=1e-5)
    torch.testing.assert_close(cached["pred_scores"], full["pred_scores"], rtol=0, atol=1e-5)
    # per-track caches restacked in another order give each track its own result
    order = [2, 0, 1]
    mixed = type(cache).stack([cache.select(i) for i in order])
    again = model.forward_cached(mixed, x[order])
    torch.testing.assert_close(again["pred_boxes"], full["pred_boxes"][order], rtol=0, atol=1e-5)
    # the online template matters (both templates are in the cache)
    other = model.forward_cached(model.template_cache(z, oz.flip(-1)), x)
    assert not torch.allclose(other["pred_boxes"], cached["pred_boxes"])


def test_cache_sizes_match_the_spec():
    for variant, mib in (("MixFormerV2-B", 3.0), ("MixFormerV2-S", 1.15)):
        cfg = get_config(variant)
        fp16_bytes = cfg.depth * 2 * cfg.num_template_tokens * cfg.embed_dim * 2
        assert math.isclose(fp16_bytes / 2**20, mib, abs_tol=0.01)


def test_load_model_reads_the_authors_layout_without_running_its_pickles(tmp_path, model):
    path = tmp_path / "mixformerv2_tiny.pth.tar"
    net = write_authors_checkpoint(path, TINY, seed=3)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)  # as released, the file needs more than weights_only
    loaded = load_model(path)
    assert isinstance(loaded, MixFormerV2) and loaded.config == TINY and not loaded.training
    for key, value in net.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    z, oz, x = _inputs(1, seed=2)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(z, oz, x)["pred_boxes"], model(z, oz, x)["pred_boxes"], rtol=0, atol=0)


def test_variant_and_bins_come_from_the_tensors(tmp_path):
    cfg = get_config("MixFormerV2-tiny")
    custom = type(cfg)(name="x", embed_dim=64, depth=3, num_heads=1, mlp_hidden=64, template_size=48,
                       search_size=96, bins=12)
    write_authors_checkpoint(tmp_path / "c.pth.tar", custom)
    loaded = load_authors_checkpoint(tmp_path / "c.pth.tar")
    assert (loaded.config.depth, loaded.config.mlp_hidden, loaded.config.template_size,
            loaded.config.search_size, loaded.config.bins, loaded.config.num_heads) == (3, 64, 48, 96, 12, 1)


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    write_malicious_checkpoint(tmp_path / "evil.pth.tar", TINY, marker)
    with pytest.raises(CheckpointError, match=r"builtins\.exec"):
        load_model(tmp_path / "evil.pth.tar")
    assert not marker.exists()


def test_shape_errors_name_the_key_and_both_shapes(tmp_path):
    state = random_state_dict(TINY)
    state["backbone.blocks.1.attn.proj.weight"] = torch.zeros(64, 32)
    torch.save({"net": state}, tmp_path / "bad.pth.tar")
    with pytest.raises(CheckpointError, match=r"backbone\.blocks\.1\.attn\.proj\.weight.*\(64, 64\).*\(64, 32\)"):
        load_model(tmp_path / "bad.pth.tar")
    del state["backbone.blocks.1.attn.proj.weight"]
    state["backbone.extra"] = torch.zeros(2)
    torch.save({"net": state}, tmp_path / "bad2.pth.tar")
    with pytest.raises(CheckpointError, match=r"missing key 'backbone\.blocks\.1\.attn\.proj\.weight'"):
        load_model(tmp_path / "bad2.pth.tar")
    torch.save({"net": {"foo": torch.zeros(1)}}, tmp_path / "other.pth.tar")
    with pytest.raises(CheckpointError, match="not a MixFormerV2 checkpoint"):
        load_model(tmp_path / "other.pth.tar")


def test_export_writes_our_single_file_for_mixformer(tmp_path, model, capsys):
    write_authors_checkpoint(tmp_path / "a.pth.tar", TINY, seed=3)
    out = tmp_path / "mf.safetensors"
    assert export_main(["--checkpoint", str(tmp_path / "a.pth.tar"), "--output", str(out)]) == 0
    assert "MixFormerV2-tiny" in capsys.readouterr().out
    loaded = load_model(out)
    assert isinstance(loaded, MixFormerV2) and loaded.config == TINY
    z, oz, x = _inputs(1, seed=4)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(z, oz, x)["pred_boxes"], model(z, oz, x)["pred_boxes"], rtol=0, atol=0)
