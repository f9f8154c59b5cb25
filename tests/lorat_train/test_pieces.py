"""Losses, schedule, decay rules, data sampling and config parsing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorat_infer import LoRATConfig, build_model
from lorat_train.config import DataOptions, JitterOptions, OptimOptions, SourceOptions, config_from_dict, total_steps
from lorat_train.data import PairSampler, SyntheticPool, jitter_box
from lorat_train.footage import DataError
from lorat_train.losses import LossOptions, box_iou_giou, positive_cells, rasterized_cells, tracking_loss
from lorat_train.optim import LEGACY_NO_DECAY_NAMES, lr_at, param_groups


def test_iou_and_giou():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    iou, giou = box_iou_giou(a, torch.tensor([[1.0, 0.0, 3.0, 2.0]]))
    assert iou.item() == pytest.approx(1 / 3)
    assert giou.item() == pytest.approx(1 / 3)
    iou, giou = box_iou_giou(a, torch.tensor([[3.0, 0.0, 4.0, 2.0]]))
    assert iou.item() == 0 and giou.item() == pytest.approx(0 - (8 - 6) / 8)


def test_rasterized_positives_are_every_covered_cell():
    # the authors' positive_sample_assignment: floor(x1 * W), floor(x2 * W + 1 - 1e-4), end-exclusive
    pos = rasterized_cells(torch.tensor([[0.25, 0.25, 0.75, 0.5], [0.40, 0.40, 0.41, 0.41], [0.3, 0.1, 0.6, 0.3]]),
                           (4, 4))
    assert pos[0].nonzero().tolist() == [[1, 1], [1, 2]]
    assert pos[1].nonzero().tolist() == [[1, 1]]
    # x 1.2..2.4 -> cells 1, 2; y 0.4..1.2 -> rows 0, 1 (a cell touched by the box is positive)
    assert pos[2].nonzero().tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
    assert positive_cells(torch.tensor([[0.3, 0.1, 0.6, 0.3]]), (4, 4))[0].nonzero().tolist() == [[0, 1]]


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


def test_authors_schedule_is_timm_cosine_with_warmup_prefix():
    # run.yaml: lr 1e-4, warmup_lr 1e-7 over 2 epochs, cosine (per iteration) to 1e-6 over all 170 epochs
    o = OptimOptions()
    assert total_steps(o) == 170 * 1024 and o.batch_size == 128
    warm = 2 * 1024
    assert lr_at(0, o) == pytest.approx(1e-7)
    assert lr_at(warm // 2, o) == pytest.approx(1e-7 + 0.5 * (1e-4 - 1e-7))
    assert lr_at(warm, o) == pytest.approx(1e-4)
    t = 50_000
    assert lr_at(warm + t, o) == pytest.approx(1e-6 + 0.5 * (1e-4 - 1e-6) * (1 + np.cos(np.pi * t / total_steps(o))))
    # warmup_prefix: the cosine runs over all steps after the warm-up, so it ends just above lr_min
    assert 1e-6 < lr_at(total_steps(o) - 1, o) < 1.05e-6


def test_legacy_warmup_then_cosine():
    o = OptimOptions(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1, schedule="legacy")
    assert lr_at(0, o) == pytest.approx(0.1)
    assert lr_at(9, o) == pytest.approx(1.0)
    assert lr_at(55, o) == pytest.approx(0.55)
    assert lr_at(100, o) == pytest.approx(0.1)
    assert all(lr_at(s, o) >= lr_at(s + 1, o) for s in range(10, 100))


def test_no_weight_decay_for_norms_biases_and_embeddings():
    model = build_model("tiny")
    names = {id(p): n for n, p in model.named_parameters()}
    # the authors' rule: 1-D parameters and every name matching "embed"
    decay, no_decay = param_groups(model, 0.1)
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert {"token_type_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "blocks.0.ls1.gamma",
            "norm.weight", "patch_embed.proj.weight"} <= no_decay_names
    assert {"blocks.0.attn.qkv.weight", "head.cls_mlp.layers.0.weight"} <= decay_names
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 0.1
    # our earlier rule (default-stage configs) decays the patch embedding
    decay, _ = param_groups(model, 0.05, LEGACY_NO_DECAY_NAMES)
    assert "patch_embed.proj.weight" in {names[id(p)] for p in decay["params"]}


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
    with pytest.raises(DataError, match="no such file or folder"):
        PairSampler(cfg, DataOptions(sources=[SourceOptions(type="lasot", root=str(tmp_path / "none"))]), 0)
