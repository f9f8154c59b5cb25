"""Loading the authors' file formats, merging LoRA, and our single-file export."""

import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorat_infer import CheckpointError, get_config, load_model, save_merged
from lorat_infer.checkpoint import resize_pos_embed

from .official_format import write_dinov2_backbone, write_release_adapter


def _inputs(cfg, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    (hz, wz) = cfg.template_grid
    template = torch.randn(batch, 3, cfg.template_size, cfg.template_size, generator=gen)
    search = torch.randn(batch, 3, cfg.search_size, cfg.search_size, generator=gen)
    mask = (torch.rand(batch, hz, wz, generator=gen) > 0.5).long()
    return template, search, mask


@pytest.fixture(params=["tiny", "tiny-swiglu"])
def official_files(request, tmp_path):
    cfg = get_config(request.param)
    backbone = tmp_path / "dinov2_pretrain.pth"
    adapter = tmp_path / "lorat_release.bin"  # released files are named .bin but hold safetensors
    write_dinov2_backbone(backbone, cfg)
    write_release_adapter(adapter, cfg, rank=4, alpha=8.0)
    return cfg, backbone, adapter


def test_merged_matches_unmerged(official_files):
    cfg, backbone, adapter = official_files
    merged = load_model(cfg.name, backbone, adapter)
    unmerged = load_model(cfg.name, backbone, adapter, merge=False)
    assert not merged.training
    template, search, mask = _inputs(cfg)
    with torch.no_grad():
        a = merged(template, search, mask)
        b = unmerged(template, search, mask)
    for key in ("score_map", "boxes"):
        assert (a[key] - b[key]).abs().max().item() < 1e-4, key
    # The adapter really changed the network: the plain backbone weights differ from the merged ones.
    base = torch.load(backbone, weights_only=True)["blocks.0.attn.qkv.weight"]
    assert (merged.blocks[0].attn.qkv.weight - base).abs().max() > 1e-4


def test_loaded_values_come_from_the_files(official_files):
    cfg, backbone, adapter = official_files
    model = load_model(cfg.name, backbone, adapter)
    release = load_file(str(adapter))
    torch.testing.assert_close(model.token_type_embed.data, release["token_type_embed"])
    torch.testing.assert_close(model.head.cls_mlp.layers[2].weight.data, release["head.cls_mlp.layers.2.weight"])
    dinov2 = torch.load(backbone, weights_only=True)
    torch.testing.assert_close(model.norm.weight.data, dinov2["norm.weight"])
    expected_pos = resize_pos_embed(dinov2["pos_embed"], cfg.search_grid)
    torch.testing.assert_close(model.pos_embed.data, expected_pos)
    # qkv merge: W + B @ A * alpha / r, row block by row block.
    d = cfg.embed_dim
    delta_k = release["blocks.1.attn.qkv.k.lora.B"] @ release["blocks.1.attn.qkv.k.lora.A"] * (8.0 / 4)
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight.data[d : 2 * d],
                               dinov2["blocks.1.attn.qkv.weight"][d : 2 * d] + delta_k)


def test_pos_embed_resize_is_bicubic_without_cls_entry():
    source = torch.randn(1, 1 + 6 * 6, 8)
    out = resize_pos_embed(source, (4, 4))
    grid = source[:, 1:].reshape(1, 6, 6, 8).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out, expected.permute(0, 2, 3, 1).reshape(1, 16, 8))
    same = torch.randn(1, 16, 8)
    assert resize_pos_embed(same, (4, 4)) is same


def test_rslora_scale_is_used(tmp_path):
    cfg = get_config("tiny")
    write_dinov2_backbone(tmp_path / "b.pth", cfg)
    write_release_adapter(tmp_path / "plain.bin", cfg, rank=4, alpha=8.0, use_rslora=False)
    write_release_adapter(tmp_path / "rs.bin", cfg, rank=4, alpha=8.0, use_rslora=True)
    plain = load_model("tiny", tmp_path / "b.pth", tmp_path / "plain.bin")
    rs = load_model("tiny", tmp_path / "b.pth", tmp_path / "rs.bin")
    base = torch.load(tmp_path / "b.pth", weights_only=True)["blocks.0.mlp.fc1.weight"]
    d_plain = plain.blocks[0].mlp.fc1.weight.data - base
    d_rs = rs.blocks[0].mlp.fc1.weight.data - base
    torch.testing.assert_close(d_rs, d_plain * (8.0 / 4**0.5) / (8.0 / 4), rtol=1e-4, atol=1e-6)


def test_newer_release_with_full_linear_weights(tmp_path):
    cfg = get_config("tiny")
    write_dinov2_backbone(tmp_path / "b.pth", cfg)
    release = write_release_adapter(tmp_path / "a.bin", cfg)
    override = torch.full((cfg.embed_dim, cfg.embed_dim), 0.01)
    release["blocks.0.attn.proj.linear.weight"] = override
    save_file(release, str(tmp_path / "a_full.bin"))
    model = load_model("tiny", tmp_path / "b.pth", tmp_path / "a_full.bin", merge=False)
    torch.testing.assert_close(model.blocks[0].attn.proj.linear.weight.data, override)


def test_missing_key_is_named_with_shape(tmp_path):
    cfg = get_config("tiny")
    state = write_dinov2_backbone(tmp_path / "b.pth", cfg)
    write_release_adapter(tmp_path / "a.bin", cfg)
    del state["blocks.1.norm2.bias"]
    torch.save(state, tmp_path / "b_missing.pth")
    with pytest.raises(CheckpointError, match=r"missing key 'blocks\.1\.norm2\.bias' \(model expects \(64,\)\)"):
        load_model("tiny", tmp_path / "b_missing.pth", tmp_path / "a.bin")


def test_mis_shaped_and_extra_keys_are_named(tmp_path):
    cfg = get_config("tiny")
    state = write_dinov2_backbone(tmp_path / "b.pth", cfg)
    write_release_adapter(tmp_path / "a.bin", cfg)
    state["norm.weight"] = torch.ones(32)
    state["blocks.0.extra.weight"] = torch.ones(3, 2)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_model("tiny", tmp_path / "bad.pth", tmp_path / "a.bin")
    message = str(err.value)
    assert "shape mismatch for 'norm.weight': model expects (64,), checkpoint has (32,)" in message
    assert "unexpected key 'blocks.0.extra.weight' (checkpoint has (3, 2))" in message


def test_wrong_variant_for_files_is_a_clear_error(tmp_path):
    write_dinov2_backbone(tmp_path / "b.pth", get_config("tiny"))
    write_release_adapter(tmp_path / "a.bin", get_config("tiny"))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model("tiny-swiglu", tmp_path / "b.pth", tmp_path / "a.bin")


def test_pickled_objects_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": Payload()}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model("tiny", path, path)


def test_export_round_trip(official_files, tmp_path):
    cfg, backbone, adapter = official_files
    model = load_model(cfg.name, backbone, adapter)
    out = tmp_path / "merged.safetensors"
    save_merged(model, out)
    again = load_model(out)
    assert again.config == model.config
    template, search, mask = _inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(again(template, search, mask)["boxes"], model(template, search, mask)["boxes"])


def test_merged_file_without_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a merged LoRAT file"):
        load_model(path)
