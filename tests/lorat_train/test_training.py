"""Training really trains: loss falls, frozen weights stay put, resume is exact."""

from __future__ import annotations

import torch

from lorat_train.setup import is_lora_param
from lorat_train.trainer import Trainer


def _fast(make_config, mode):
    # a fixed batch can be over-fitted quickly: a high constant learning rate
    return make_config(mode, optim={"steps": 1000, "batch_size": 8, "lr": 1e-2, "warmup_steps": 0,
                                     "min_lr_ratio": 1.0, "amp": "none"})


def test_steps_lower_the_loss_on_a_fixed_batch(make_config):
    trainer = Trainer(_fast(make_config, "full"))
    batch = trainer.sampler.batch(0, 8)
    losses = [trainer.train_step(batch)["loss"] for _ in range(25)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_lora_steps_lower_the_loss_on_a_fixed_batch(make_config):
    trainer = Trainer(_fast(make_config, "lora"))
    batch = trainer.sampler.batch(0, 8)
    losses = [trainer.train_step(batch)["loss"] for _ in range(25)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_lora_mode_trains_only_lora_token_types_and_head(make_config):
    trainer = Trainer(make_config("lora"))
    model = trainer.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing trainable"
    for name in trainable:
        assert is_lora_param(name) or name == "token_type_embed" or name.startswith("head."), name
    assert "token_type_embed" in trainable
    assert any(".attn.qkv.q.lora.A" in n for n in trainable)
    assert any(".mlp.fc2.lora.B" in n for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("blocks.0.attn.qkv.linear") for n in frozen_before)
    assert "pos_embed" in frozen_before and "patch_embed.proj.weight" in frozen_before
    for step in range(3):
        trainer.train_step(trainer.sampler.batch(step, 4))
    params = dict(model.named_parameters())
    for name, before in frozen_before.items():
        assert torch.equal(params[name], before), f"frozen weight {name} changed"
    changed = [n for n, before in trained_before.items() if not torch.equal(params[n], before)]
    assert len(changed) == len(trained_before), set(trained_before) - set(changed)


def test_full_mode_trains_everything(make_config):
    trainer = Trainer(make_config("full"))
    assert all(p.requires_grad for p in trainer.model.parameters())
    assert not any(is_lora_param(n) for n, _ in trainer.model.named_parameters())


def test_resume_from_a_checkpoint_continues_identically(make_config, tmp_path):
    straight = Trainer(make_config("lora", output_dir=str(tmp_path / "a")))
    straight.run(steps=6, progress=False)

    first = Trainer(make_config("lora", output_dir=str(tmp_path / "b")))
    first.run(steps=4, progress=False)
    first.save()
    resumed = Trainer(make_config("lora", output_dir=str(tmp_path / "b")))
    assert resumed.resume() and resumed.step == 4
    resumed.run(steps=6, progress=False)

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    assert resumed.history["loss"] == straight.history["loss"]
    assert resumed.optimizer.state_dict()["state"].keys() == straight.optimizer.state_dict()["state"].keys()


def test_activation_checkpointing_gives_the_same_step(make_config):
    plain, ckpt = (Trainer(make_config("lora", activation_checkpointing=flag)) for flag in (False, True))
    batch = plain.sampler.batch(0, 4)
    plain.train_step(batch)
    ckpt.train_step(batch)
    a, b = plain.model.state_dict(), ckpt.model.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


def test_authors_augmentation_flips_the_box_with_the_image():
    import numpy as np

    from lorat_train.augment import augment_pair
    from lorat_train.config import AugmentOptions

    img = torch.zeros(3, 8, 16)
    img[:, 2:4, 1:5] = 1.0  # a bright box at x 1..5, y 2..4
    box = np.array([1.0, 2.0, 5.0, 4.0])
    flips = AugmentOptions(flip=1.0, color_jitter=0.0, deit3=False)
    z, zb, _, xb = augment_pair(np.random.default_rng(0), img, box, img.clone(), box.copy(), flips)
    assert zb.tolist() == [11.0, 2.0, 15.0, 4.0] and xb.tolist() == [11.0, 2.0, 15.0, 4.0]
    assert z[:, 2:4, 11:15].min() == 1.0 and z.sum() == img.sum()
    every = AugmentOptions()
    outs = [augment_pair(np.random.default_rng(s), img, box, img.clone(), box.copy(), every) for s in range(20)]
    assert all(t.min() >= 0.0 and t.max() <= 1.0 for o in outs for t in (o[0], o[2]))
    assert len({round(float(o[0].sum()), 3) for o in outs}) > 5  # colour jitter / 3-augment change the pixels


def test_loader_workers_draw_the_same_batches(make_config):
    """Batches are a pure function of (seed, step, shard): worker processes change nothing."""
    inline = Trainer(make_config("lora", optim={"steps": 3, "batch_size": 4, "grad_accumulation": 2,
                                                "warmup_steps": 0, "amp": "none"}))
    pooled = Trainer(make_config("lora", optim={"steps": 3, "batch_size": 4, "grad_accumulation": 2,
                                                "warmup_steps": 0, "amp": "none"},
                                 data={"sources": [{"pool_size": 3, "num_frames": 6, "refresh_every": 2,
                                                    "options": {"size": [96, 80]}}], "workers": 2}))
    assert pooled.workers == 2 and inline.workers == 0
    a, b = list(inline.batches(3)), list(pooled.batches(3))
    assert len(a) == len(b) == 3 and all(len(step) == 2 for step in b)  # 2 micro-batches of 2 pairs
    for sa, sb in zip(a, b):
        for ma, mb in zip(sa, sb):
            assert torch.equal(ma.search, mb.search) and torch.equal(ma.target_boxes, mb.target_boxes)
