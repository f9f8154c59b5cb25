"""The CUDA paths (fp16 autocast + GradScaler, bf16, torch.compile, loader workers): skipped without a GPU.

On a GPU machine: `.venv/bin/python -m pytest -q tests/lorat_train/test_cuda.py`.
"""

from __future__ import annotations

import pytest
import torch

from lorat_train.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(("amp", "compile_"), [("fp16", "off"), ("bf16", "off"), ("auto", "on")])
def test_cuda_training_steps_lower_the_loss(make_config, amp, compile_):
    config = make_config("lora", device="cuda", compile=compile_,
                         optim={"steps": 1000, "batch_size": 8, "lr": 1e-2, "warmup_steps": 0, "amp": amp})
    trainer = Trainer(config)
    assert trainer.device.type == "cuda" and (trainer.scaler is not None) == (trainer.amp == torch.float16)
    batch = trainer.sampler.batch(0, 8)
    losses = [trainer.train_step(batch)["loss"] for _ in range(15)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
    trainer.close()


def test_cuda_run_with_workers_validates_and_exports(make_config, tmp_path):
    config = make_config("lora", device="cuda", output_dir=str(tmp_path / "run"),
                         data={"sources": [{"pool_size": 3, "num_frames": 6, "options": {"size": [96, 80]}}],
                               "workers": 2},
                         optim={"steps": 4, "batch_size": 4, "warmup_steps": 0, "amp": "auto"},
                         val={"every": 2, "num_sequences": 2, "num_frames": 5, "options": {"size": [96, 80]}})
    trainer = Trainer(config)
    trainer.run(progress=False)
    paths = trainer.export()
    assert trainer.step == 4 and len(trainer.history["val_auc"]) == 2
    assert paths["merged"].endswith("model.safetensors")
    trainer.close()
