"""A tiny LoRAT and a tiny synthetic data setup, so every training test runs in seconds on 2 cores."""

from __future__ import annotations

import pytest

from lorat_train.config import config_from_dict

TINY_MODEL = {
    "name": "train-test", "embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16,
    "template_size": 32, "search_size": 64, "layer_scale_init": 0.1,
}


def tiny_config(tmp_path, mode: str = "lora", **overrides) -> object:
    values = {
        "output_dir": str(tmp_path / "run"),
        "seed": 3,
        "mode": mode,
        "model": TINY_MODEL,
        "lora": {"rank": 4, "alpha": 8.0},
        "data": {"sources": [{"type": "synthetic", "pool_size": 3, "num_frames": 6, "refresh_every": 2,
                              "options": {"size": [96, 80]}}]},
        "optim": {"steps": 1000, "batch_size": 4, "lr": 1e-3, "warmup_steps": 0, "amp": "none"},
        "val": {"every": 0, "num_sequences": 2, "num_frames": 5, "options": {"size": [96, 80]}},
        "log_every": 2,
        "checkpoint_every": 0,
    }
    for key, value in overrides.items():
        values[key] = value
    return config_from_dict(values)


@pytest.fixture
def make_config(tmp_path):
    def factory(mode: str = "lora", **overrides):
        return tiny_config(tmp_path, mode, **overrides)

    return factory
