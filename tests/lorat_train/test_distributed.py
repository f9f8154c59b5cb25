"""torchrun + DDP (gloo on CPU): two ranks equal one process accumulating two micro-steps, step for step.

Each rank draws shard `rank` of the global batch and the positives are normalised by their mean over the ranks
(the authors' reduce_mean), so DDP's gradient average is the same sum the single process accumulates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import torch
import yaml
from safetensors.torch import load_file

from .conftest import TINY_MODEL


def _config(out, accum: int) -> dict:
    return {
        "output_dir": str(out), "seed": 5, "mode": "lora", "model": TINY_MODEL, "lora": {"rank": 4, "alpha": 4.0},
        "data": {"sources": [{"pool_size": 3, "num_frames": 6, "refresh_every": 2, "options": {"size": [96, 80]}}]},
        "optim": {"steps": 2, "batch_size": 4, "grad_accumulation": accum, "lr": 1e-3, "warmup_steps": 0,
                  "amp": "none"},
        "val": {"every": 0}, "log_every": 1, "checkpoint_every": 0, "device": "cpu", "threads": 1,
        "export": {"release": False},
    }


def _run(cmd: list[str], env: dict, timeout: float = 240) -> None:
    """Run in its own process group, so a hang takes torchrun's workers down with it."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]


def test_two_ranks_equal_one_process_with_two_accumulation_steps(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    ddp_cfg, single_cfg = tmp_path / "ddp.yaml", tmp_path / "single.yaml"
    ddp_cfg.write_text(yaml.safe_dump(_config(tmp_path / "ddp", accum=1)))
    single_cfg.write_text(yaml.safe_dump(_config(tmp_path / "single", accum=2)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lorat_train.cli", "--config", str(ddp_cfg), "--no-progress"]
    _run(cmd, env)
    _run([sys.executable, "-m", "lorat_train.cli", "--config", str(single_cfg), "--no-progress"], env)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    ddp, single = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("ddp", "single"))
    assert ddp.keys() == single.keys()
    for key in ddp:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-6, msg=key)
    # and training moved them: the rank-0 run is not the initial model
    init = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert init["steps"] == 2 and len(init["history"]["loss"]) == 2
