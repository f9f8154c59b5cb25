"""Losses, schedule, decay rules, data sampling and config parsing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorat_infer import LoRATConfig, build_model
from lorat_train.config import DataOptions, JitterOptions, OptimOptions, SourceOptions, config_from_dict
from lorat_train.data import PairSampler, SyntheticPool, jitter_box
from lorat_train.losses import LossOptions, box_iou_giou, positive_cells, tracking_loss
from lorat_train.optim import lr_at, param_groups


def test_iou_and_giou():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    iou, giou = box_iou_giou(a, torch.tensor([[1.0, 0.0, 3.0, 2.0]]))
    assert iou.item() == pytest.approx(1 / 3)
    assert giou.item() == pytest.approx(1 / 3)
    iou, giou = box_iou_giou(a, torch.tensor([[3.0, 0.0, 4.0, 2.0]]))
    assert iou.item() == 0 and giou.item() == pytest.approx(0 - (8 - 6) / 8)


def test_positive_cells_cover_the_box_and_its_centre():
    pos = positive_cells(torch.tensor([[0.25, 0.25, 0.75, 0.5], [0.40, 0.40, 0.41, 0.41]]), (4, 4))
    assert pos[0].nonzero().tolist() == [[1, 1], [1, 2]]
    assert pos[1].nonzero().tolist() == [[1, 1]]  # a box smaller than a cell still gets its centre cell


def test_score_target_is_the_iou_of_each_cells_box():
    gt = torch.tensor([[0.25, 0.25, 0.75, 0.75]])
    boxes = gt.view(1, 1, 1, 4).expand(1, 2, 2, 4).clone()
    boxes[0, 0, 0] = torch.tensor([0.25, 0.25, 0.5, 0.5])  # IoU 0.25 at cell (0,0)
    perfect = tracking_loss(torch.full((1, 2, 2), 20.0), boxes, gt, LossOptions())
    # logits saying "1" everywhere are wrong where the IoU target is 0.25: the loss must see that
    calibrated = torch.full((1, 2, 2), 20.0)
    calibrated[0, 0, 0] = float(np.log(0.25 / 0.75))
    better = tracking_loss(calibrated, boxes, gt, LossOptions())
    assert better["cls"] < perfect["cls"]


def test_warmup_then_cosine():
    o = OptimOptions(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, o) == pytest.approx(0.1)
    assert lr_at(9, o) == pytest.approx(1.0)
    assert lr_at(55, o) == pytest.approx(0.55)
    assert lr_at(100, o) == pytest.approx(0.1)
    assert all(lr_at(s, o) >= lr_at(s + 1, o) for s in range(10, 100))


def test_no_weight_decay_for_norms_biases_and_embeddings():
    model = build_model("tiny")
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert {"token_type_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "blocks.0.ls1.gamma",
            "norm.weight"} <= no_decay_names
    assert {"blocks.0.attn.qkv.weight", "head.cls_mlp.layers.0.weight", "patch_embed.proj.weight"} <= decay_names
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 0.05


def test_pool_sequence_ids_match_a_step_by_step_simulation():
    pool = SyntheticPool(SourceOptions(pool_size=3, refresh_every=2), seed=0)
    ids, next_id = list(range(3)), 3
    for step in range(1, 30):
        if step % 2 == 0:  # refresh k = step // 2 hits slot (k - 1) % 3 with the next fresh sequence id
            k = step // 2
            slot = (k - 1) % 3
            ids[slot] = slot + 3 * ((k - 1) // 3 + 1)
            next_id += 1
        assert [pool.sequence_id(s, step) for s in range(3)] == ids, step
    assert len({pool.sequence_id(s, 29) for s in range(3)}) == 3


def test_jitter_keeps_the_box_without_jitter_and_moves_it_with():
    rng = np.random.default_rng(0)
    box = np.array([10.0, 20.0, 50.0, 60.0])
    assert np.allclose(jitter_box(rng, box, JitterOptions()), box)
    moved = np.stack([jitter_box(rng, box, JitterOptions(scale=0.25, center=3.0)) for _ in range(200)])
    centres = (moved[:, :2] + moved[:, 2:]) / 2
    assert np.abs(centres - 30).max() <= 1.5 * 40 * np.exp(4 * 0.25) and centres.std() > 5


def test_sampled_targets_lie_on_the_object_and_batches_are_reproducible():
    cfg = LoRATConfig(name="t", embed_dim=32, depth=1, num_heads=2, patch_size=16, template_size=64,
                      search_size=128)
    data = DataOptions(sources=[SourceOptions(pool_size=2, num_frames=4, options={"size": (96, 80)})],
                       search_jitter=JitterOptions(0.0, 0.0))
    batch = PairSampler(cfg, data, seed=5).batch(0, 4)
    assert batch.search.shape == (4, 3, 128, 128) and batch.template.shape == (4, 3, 64, 64)
    # no search jitter: the target is centred in the crop, and the template mask marks its middle cells
    centres = (batch.target_boxes[:, :2] + batch.target_boxes[:, 2:]) / 2
    torch.testing.assert_close(centres, torch.full_like(centres, 0.5), atol=0.03, rtol=0)
    assert batch.template_mask[:, 0, 0].sum() == 0 and batch.template_mask[:, 1:3, 1:3].all()
    again = PairSampler(cfg, data, seed=5).batch(0, 4)
    assert torch.equal(again.search, batch.search)
    assert not torch.equal(PairSampler(cfg, data, seed=5).batch(1, 4).search, batch.search)


def test_unknown_config_keys_are_rejected():
    with pytest.raises(ValueError, match=r"unknown keys.*'stpes'"):
        config_from_dict({"optim": {"stpes": 3}})
    with pytest.raises(ValueError, match=r"data\.sources\[0\]"):
        config_from_dict({"data": {"sources": [{"kind": "x"}]}})


def test_folder_sources_skip_absent_frames(tmp_path):
    from lorat_infer.eval.datasets import write_sequence_folder
    from lorat_infer.eval.synthetic import generate_sequence
    from lorat_train.data import visible_frames

    seq = generate_sequence(4, 6, size=(96, 80))
    absent = [False, True, True, True, True, False]
    write_sequence_folder(seq, tmp_path / "lasot" / "cat" / "cat-1", "lasot", absent=absent, image_format="png")
    write_sequence_folder(seq, tmp_path / "got" / "GOT-10k_0001", "got10k", absent=absent, image_format="png")
    cfg = LoRATConfig(name="t", embed_dim=32, depth=1, num_heads=2, patch_size=16, template_size=64,
                      search_size=128)
    for kind, root in (("lasot", tmp_path / "lasot"), ("got10k", tmp_path / "got")):
        data = DataOptions(sources=[SourceOptions(type=kind, root=str(root))], max_gap=10,
                           search_jitter=JitterOptions(0.0, 0.0))
        sampler = PairSampler(cfg, data, seed=0)
        assert visible_frames(sampler.sources[0].get(0, 0)).tolist() == [0, 5]
        batch = sampler.batch(0, 3)
        centres = (batch.target_boxes[:, :2] + batch.target_boxes[:, 2:]) / 2
        torch.testing.assert_close(centres, torch.full_like(centres, 0.5), atol=0.03, rtol=0)
    with pytest.raises(Exception, match="no sequence folders"):
        PairSampler(cfg, DataOptions(sources=[SourceOptions(type="lasot", root=str(tmp_path / "none"))]), 0)
