"""Writers for MixFormerV2 checkpoints in exactly the authors' layout, filled with random values.

The released `mixformerv2_base.pth.tar` / `mixformerv2_small.pth.tar` cannot be downloaded here. The authors'
trainer (lib/train/trainers/base_trainer.py, save_checkpoint) writes `torch.save({'epoch', 'actor_type',
'net_type', 'net': state_dict, 'net_info', 'constructor', 'optimizer', 'stats', 'settings'})`, where
`settings` is a `lib.train.admin.settings.Settings` holding a `lib.train.admin.local.EnvironmentSettings`,
and `stats` maps names to `lib.train.admin.stats.AverageMeter`s. We define look-alike classes under those
module names only while saving, so the file references globals that do not exist when it is loaded.
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from lorat_infer.mixformer import build_model
from lorat_infer.mixformer.config import MixFormerV2Config


@contextmanager
def _authors_modules() -> Iterator[dict[str, type]]:
    """Temporarily register `lib.train.admin.{settings,local,stats}` with the authors' class names."""
    names = ["lib", "lib.train", "lib.train.admin", "lib.train.admin.settings", "lib.train.admin.local",
             "lib.train.admin.stats"]
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}

    def make(module: str, name: str) -> type:
        cls = type(name, (), {"__module__": module})
        setattr(mods[module], name, cls)
        return cls

    classes = {
        "Settings": make("lib.train.admin.settings", "Settings"),
        "EnvironmentSettings": make("lib.train.admin.local", "EnvironmentSettings"),
        "AverageMeter": make("lib.train.admin.stats", "AverageMeter"),
    }
    sys.modules.update(mods)
    try:
        yield classes
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def random_state_dict(config: MixFormerV2Config, seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """The authors' key names and shapes with random values (LayerNorm gains near 1, sin-cos tables kept)."""
    gen = torch.Generator().manual_seed(seed)
    model = build_model(config)
    state = OrderedDict()
    for key, value in model.state_dict().items():
        if "pos_embed_s" in key or "pos_embed_t" in key:
            state[key] = value.clone()
        elif ".norm" in key or key.startswith(("box_head.layers.0.1", "box_head.layers.1.1")):
            state[key] = torch.randn(value.shape, generator=gen) * 0.05 + (1.0 if key.endswith("weight") else 0.0)
        else:
            scale = 0.5 if "reg_tokens" in key or "pos_embed_reg" in key else 0.05
            state[key] = torch.randn(value.shape, generator=gen) * scale
    return state


def write_authors_checkpoint(path: Path, config: MixFormerV2Config, seed: int = 0,
                             overrides: dict[str, torch.Tensor] | None = None) -> OrderedDict[str, torch.Tensor]:
    """An authors'-layout `.pth.tar`: `{'net': state_dict}` plus pickled training objects beside it.

    `overrides` replaces entries (e.g. the score head's bias, so that scores cross 0.5 and the online
    template rule has something to do)."""
    net = random_state_dict(config, seed)
    net.update(overrides or {})
    with _authors_modules() as cls:
        settings = cls["Settings"]()
        env = cls["EnvironmentSettings"]()
        env.workspace_dir = "/home/user/MixFormerV2"
        env.lasot_dir = "/data/lasot"
        settings.env = env
        settings.use_gpu = True
        settings.script_name = "mixformer2_vit_online"
        settings.config_name = "288_depth8_score"
        settings.local_rank = -1
        settings.device = torch.device("cpu")
        meter = cls["AverageMeter"]()
        meter.avg, meter.val, meter.sum, meter.count = 0.5, 0.4, 5.0, 10
        torch.save({
            "epoch": 40,
            "actor_type": "MixFormerActor",
            "net_type": "MixFormer",
            "net": net,
            "net_info": None,
            "constructor": None,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]},
            "stats": {"train": OrderedDict(Loss_total=meter)},
            "settings": settings,
        }, path)
    return net


class _RunsCode:
    """Unpickling this calls `exec`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def write_malicious_checkpoint(path: Path, config: MixFormerV2Config, marker: Path) -> None:
    """An authors'-looking file whose pickle would run code when loaded without restrictions."""
    torch.save({"net": random_state_dict(config), "settings": _RunsCode(marker)}, path)
