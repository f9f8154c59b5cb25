"""`lorat-train --config` end to end on a tiny model: checkpoint, both exports, curves, resume."""

from __future__ import annotations

import json

import yaml
from PIL import Image

from lorat_infer import load_model
from lorat_train import release_default
from lorat_train.cli import main

from .conftest import TINY_MODEL


def _write_config(tmp_path, **extra) -> str:
    values = {
        "output_dir": str(tmp_path / "run"), "mode": "lora", "seed": 1, "model": TINY_MODEL,
        "lora": {"rank": 4, "alpha": 4.0},
        "data": {"sources": [{"pool_size": 2, "num_frames": 5, "options": {"size": [96, 80]}}]},
        "optim": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "amp": "auto"},
        "val": {"every": 2, "num_sequences": 2, "num_frames": 4, "options": {"size": [96, 80]}},
        "log_every": 2, "checkpoint_every": 2, **extra,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_cli_trains_exports_and_resumes(tmp_path, capsys):
    config = _write_config(tmp_path)
    assert main(["--config", config, "--no-progress"]) == 0
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["history"]["val_steps"] == [0, 2, 4]  # 0: the start model
    assert 0.0 <= summary["final_val_auc"] <= 1.0
    assert 0 < summary["trainable_params"] < summary["total_params"]
    with Image.open(run / "curves.png") as img:
        assert img.size[0] > 100 and img.getextrema() != ((255, 255),) * 3  # something was drawn
    merged = load_model(run / "model.safetensors")
    assert merged.config.embed_dim == TINY_MODEL["embed_dim"]
    load_model(merged.config, backbone=run / "release" / "backbone.pth", adapter=run / "release" / "adapter.bin")

    package = tmp_path / "package"
    package.mkdir()
    assert release_default.main([str(run), "--model", str(run / "model.safetensors"), "--out-dir", str(package)]) == 0
    record_path = package / "training-config.yaml"
    assert load_model(package / "lorat-default.safetensors").config.embed_dim == TINY_MODEL["embed_dim"]
    record = yaml.safe_load(record_path.read_text())["stages"]["stage1"]
    assert record["config"]["mode"] == "lora" and record["result"]["steps"] == 4
    assert [step for step, _ in record["result"]["val_curve"]] == [0, 2, 4]

    # a second call finds the finished checkpoint and does not train again
    capsys.readouterr()
    assert main(["--config", config, "--no-progress"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["history"]["loss_steps"] == [2, 4]


def test_cli_rejects_a_bad_config(tmp_path, capsys):
    assert main(["--config", _write_config(tmp_path, optim={"stpes": 3})]) == 2
    assert "unknown keys" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
