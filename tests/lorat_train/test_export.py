"""Both output formats reload through `lorat_infer.load_model` and reproduce the in-memory model."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from lorat_infer import load_model
from lorat_infer.checkpoint import read_tensors
from lorat_train.export import export_merged, export_release
from lorat_train.trainer import Trainer


@pytest.fixture
def trained(make_config):
    trainer = Trainer(make_config("lora", lora={"rank": 4, "alpha": 8.0, "use_rslora": True}))
    for step in range(3):
        trainer.train_step(trainer.sampler.batch(step, 4))
    trainer.model.eval()
    return trainer


def _outputs(model, batch):
    with torch.no_grad():
        return model(batch.template, batch.search, batch.template_mask)


def _assert_same(out, ref):
    torch.testing.assert_close(out["score_map"], ref["score_map"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["boxes"], ref["boxes"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("merge", [True, False])
def test_release_files_reload_with_the_same_outputs(trained, tmp_path, merge):
    backbone, adapter, _ = export_release(trained.model, tmp_path / "release", trained.config.lora)
    batch = trained.sampler.batch(10, 3)
    reference = _outputs(trained.model, batch)
    model = load_model(trained.model.config, backbone=backbone, adapter=adapter, merge=merge)
    _assert_same(_outputs(model, batch), reference)


def test_release_layout_matches_the_authors_files(trained, tmp_path):
    backbone, adapter, _ = export_release(trained.model, tmp_path / "release", trained.config.lora)
    cfg = trained.model.config
    with safe_open(str(adapter), framework="pt") as f:  # content is safetensors whatever the name
        keys = set(f.keys())
    assert {"token_type_embed", "lora_alpha", "use_rslora", "blocks.0.attn.qkv.q.lora.A",
            "blocks.1.attn.proj.lora.B", "blocks.0.mlp.fc1.lora.A", "head.cls_mlp.layers.2.weight"} <= keys
    assert not any(k.startswith("blocks.") and ".lora." not in k for k in keys), "base weights leaked"
    state = read_tensors(adapter)
    assert float(state["lora_alpha"]) == 8.0 and bool(state["use_rslora"])
    meta = read_tensors(backbone)  # a torch file, loadable with weights_only=True
    grid = cfg.search_grid[0] * cfg.search_grid[1]
    assert tuple(meta["pos_embed"].shape) == (1, 1 + grid, cfg.embed_dim)
    assert {"cls_token", "mask_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.bias"} <= set(meta)
    assert not any(".lora." in k or ".linear." in k for k in meta)


def test_merged_file_reloads_with_the_same_outputs(trained, tmp_path):
    path = export_merged(trained.model, tmp_path / "m.safetensors", {"training": "{}"})
    batch = trained.sampler.batch(11, 3)
    _assert_same(_outputs(load_model(path), batch), _outputs(trained.model, batch))
    assert any(".lora." in k for k, _ in trained.model.named_parameters()), "export must not merge in place"
