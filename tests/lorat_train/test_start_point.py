"""The authors' starting point: a Meta-format DINOv2 file (+ an authors'-format adapter), fine-tuned on mixed
footage; the exported adapter reloads through load_model(variant, backbone, adapter) and equals the merged file."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from lorat_infer import LoRAT, LoRATConfig, apply_lora, load_model
from lorat_infer.checkpoint import CheckpointError
from lorat_train.cli import main
from lorat_train.config import config_from_dict
from lorat_train.setup import build_initial_model

from .conftest import TINY_MODEL
from .footage_data import write_mixed_footage

CFG = LoRATConfig.from_dict(TINY_MODEL)
META_GRID = 6  # the Meta file's own position grid (DINOv2: 37x37), resized to the 4x4 search grid


def write_meta_backbone(path, seed: int = 0) -> None:
    """Random weights in Meta's DINOv2 layout: cls/mask tokens, pos_embed with a cls entry, no head."""
    torch.manual_seed(seed)
    state = {k: v for k, v in LoRAT(CFG).state_dict().items() if not k.startswith(("token_type_embed", "head.",
                                                                                     "pos_embed"))}
    d = CFG.embed_dim
    state.update(cls_token=torch.randn(1, 1, d) * 0.02, mask_token=torch.zeros(1, d),
                 pos_embed=torch.randn(1, 1 + META_GRID * META_GRID, d) * 0.02)
    torch.save(state, path)


def write_authors_adapter(path, rank: int = 4, alpha: float = 8.0, seed: int = 1) -> None:
    """Random weights in the release layout: q/k/v/proj/fc1/fc2 LoRA pairs, token types, head, scalars."""
    torch.manual_seed(seed)
    model = apply_lora(LoRAT(CFG), rank, alpha)
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if ".lora." in k or k.startswith(("token_type_embed", "head."))}
    state.update(lora_alpha=torch.tensor(alpha), use_rslora=torch.tensor(False))
    save_file(state, str(path))


@pytest.fixture(scope="module")
def start_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("start")
    write_meta_backbone(root / "dinov2_tiny_pretrain.pth")
    write_authors_adapter(root / "released.bin")
    write_mixed_footage(root / "footage")
    write_mixed_footage(root / "heldout", seed=50)
    return root


def _config(root, out, **extra) -> dict:
    return {
        "output_dir": str(out), "seed": 3, "mode": "lora", "model": TINY_MODEL,
        "backbone": str(root / "dinov2_tiny_pretrain.pth"), "adapter": str(root / "released.bin"),
        "data": {"sources": [{"type": "auto", "root": str(root / "footage")}], "cache_dir": str(root / "cache")},
        "optim": {"steps": 3, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "amp": "none"},
        "val": {"every": 2, "sources": [{"type": "auto", "root": str(root / "heldout" / "lasot")}],
                "max_frames": 6, "keep_best": False},
        "log_every": 1, "checkpoint_every": 0, "device": "cpu", **extra,
    }


def _outputs(model, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 3, CFG.template_size, CFG.template_size, generator=g)
    x = torch.randn(2, 3, CFG.search_size, CFG.search_size, generator=g)
    mask = torch.zeros(2, *CFG.template_grid, dtype=torch.long)
    mask[:, 1, 1] = 1
    with torch.no_grad():
        return model(z, x, mask)


def test_finetune_from_meta_backbone_and_adapter_exports_a_matching_adapter(start_files, tmp_path):
    root = start_files
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(_config(root, tmp_path / "run")))
    assert main(["--config", str(path), "--no-progress"]) == 0
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and "released.bin" in summary["start"]
    assert summary["lora"] == {"rank": 4, "alpha": 8.0, "use_rslora": False}  # the adapter's, not the default 64
    assert summary["history"]["val_steps"] == [2, 3] and not summary["exported_best"]

    exported = load_file(str(run / "release" / "adapter.bin"))
    released = load_file(str(root / "released.bin"))
    assert exported.keys() == released.keys()
    assert any(not torch.equal(exported[k], released[k]) for k in released if ".lora." in k), "LoRA did not train"
    # the backbone did not change: no copy is written, the adapter pairs with the user's Meta file
    assert not (run / "release" / "backbone.pth").exists()
    assert (run / "release" / "backbone.txt").read_text().strip().endswith("dinov2_tiny_pretrain.pth")

    from_adapter = load_model(CFG, backbone=root / "dinov2_tiny_pretrain.pth", adapter=run / "release" / "adapter.bin")
    merged = load_model(run / "model.safetensors")
    out_a, out_m = _outputs(from_adapter), _outputs(merged)
    torch.testing.assert_close(out_a["score_map"], out_m["score_map"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_a["boxes"], out_m["boxes"], rtol=1e-4, atol=1e-5)
    # and it is not the released model any more
    released_model = load_model(CFG, backbone=root / "dinov2_tiny_pretrain.pth", adapter=root / "released.bin")
    assert not torch.allclose(_outputs(released_model)["score_map"], out_m["score_map"])


def test_meta_backbone_alone_gets_fresh_lora_at_the_configured_rank(start_files, tmp_path):
    values = _config(start_files, tmp_path / "run", adapter="", lora={"rank": 2, "alpha": 2.0})
    model, lora, start = build_initial_model(config_from_dict(values))
    assert lora.rank == 2 and "token types and head initialised" in start
    assert model.blocks[0].attn.qkv.q.lora.A.shape == (2, CFG.embed_dim)
    # backbone weights came from the Meta file (pos embed resized from its 6x6 grid to the 4x4 search grid)
    meta = torch.load(start_files / "dinov2_tiny_pretrain.pth", weights_only=True)
    torch.testing.assert_close(model.blocks[1].mlp.fc2.linear.weight, meta["blocks.1.mlp.fc2.weight"])
    assert model.pos_embed.shape == (1, 16, CFG.embed_dim) and not model.pos_embed.requires_grad


def test_a_backbone_of_the_wrong_shape_is_a_clear_error(start_files, tmp_path):
    values = _config(start_files, tmp_path / "run", adapter="", model={**TINY_MODEL, "embed_dim": 48})
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'blocks\.0\.attn\.qkv\.weight'"):
        build_initial_model(config_from_dict(values))


def test_early_stopping_on_held_out_auc_and_evaluate(start_files, tmp_path, capsys):
    # lr 0: the held-out AUC cannot improve on the start model's (evaluated at step 0), so patience 1 stops at
    # step 1 of 10, and the exported weights are the start model's
    values = _config(start_files, tmp_path / "run", optim={"steps": 10, "batch_size": 2, "lr": 0.0, "warmup_lr": 0.0,
                                                           "min_lr": 0.0, "warmup_steps": 0, "amp": "none"})
    values["val"] = {**values["val"], "every": 1, "patience": 1, "keep_best": True}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(values))
    assert main(["--config", str(path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_early"] and summary["steps"] == 1 and summary["best_step"] == 0
    assert summary["history"]["val_steps"] == [0, 1] and summary["exported_best"]
    captured = capsys.readouterr()
    assert "early stop at step 1" in captured.out + captured.err
    # --evaluate tracks the held-out footage with the start model exactly as loaded
    assert main(["--config", str(path), "--evaluate"]) == 0
    out = capsys.readouterr().out
    auc = float(out.split("held-out success AUC ")[1].split()[0])
    assert auc == pytest.approx(summary["history"]["val_auc"][0], abs=1e-4)
