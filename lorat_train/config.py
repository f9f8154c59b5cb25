"""Training configuration: plain dataclasses read from a YAML (or JSON) file.

Unknown keys are errors, so a typo in a config file fails loudly instead of silently using a default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


@dataclass
class LoRAOptions:
    rank: int = 16
    alpha: float = 16.0
    use_rslora: bool = False


@dataclass
class JitterOptions:
    """Box jitter before cropping (OSTrack/LoRAT style): size * exp(N(0, scale)), centre + U(-c/2, c/2)*sqrt(wh)."""

    scale: float = 0.0
    center: float = 0.0


@dataclass
class SourceOptions:
    """One data source. `synthetic`: a rolling pool of generated sequences; `lasot`/`got10k`: folders."""

    type: Literal["synthetic", "lasot", "got10k"] = "synthetic"
    weight: float = 1.0
    # synthetic
    domain: str = "blobs"
    pool_size: int = 96
    num_frames: int = 32
    refresh_every: int = 4  # replace one pool sequence every N steps (deterministic in the step)
    seed_offset: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # extra SyntheticOptions fields
    # folders
    root: str = ""
    max_sequences: int = 0  # 0 = all


@dataclass
class DataOptions:
    sources: list[SourceOptions] = field(default_factory=lambda: [SourceOptions()])
    max_gap: int = 20  # max frame distance between template and search frame
    template_jitter: JitterOptions = field(default_factory=JitterOptions)
    search_jitter: JitterOptions = field(default_factory=lambda: JitterOptions(scale=0.25, center=3.0))


@dataclass
class OptimOptions:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    amp: Literal["none", "bf16", "fp16", "auto"] = "auto"  # auto: bf16 on CPU with AVX-512 bf16 / CUDA


@dataclass
class LossOptions:
    cls: float = 1.0
    giou: float = 2.0
    l1: float = 5.0


@dataclass
class ValOptions:
    every: int = 500  # steps; 0 disables
    seed: int = 777_000
    num_sequences: int = 6
    num_frames: int = 40
    domain: str = "blobs"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportOptions:
    merged: str = ""  # our single merged file (default: <output_dir>/model.safetensors)
    release: bool = True  # also write the adapter-only release file + the Meta-format backbone


@dataclass
class TrainConfig:
    output_dir: str = "runs/train"
    seed: int = 0
    mode: Literal["full", "lora"] = "lora"
    model: dict[str, Any] = field(default_factory=dict)  # LoRATConfig fields (new model)
    init_checkpoint: str = ""  # merged file to start from (its config wins over `model`)
    lora: LoRAOptions = field(default_factory=LoRAOptions)
    data: DataOptions = field(default_factory=DataOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    loss: LossOptions = field(default_factory=LossOptions)
    val: ValOptions = field(default_factory=ValOptions)
    export: ExportOptions = field(default_factory=ExportOptions)
    log_every: int = 25
    checkpoint_every: int = 500
    threads: int = 0  # torch.set_num_threads; 0 leaves the default

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, values: Any, where: str) -> Any:
    """Recursively build dataclass `cls` from a mapping, rejecting unknown keys."""
    if not dataclasses.is_dataclass(cls):
        return values
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}")
    kwargs = {}
    hints = {name: _field_type(cls, name) for name in fields}
    for name, value in values.items():
        sub = hints[name]
        if sub is SourceOptions and isinstance(value, list):  # list[SourceOptions]
            kwargs[name] = [_build(SourceOptions, v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
        else:
            kwargs[name] = _build(sub, value, f"{where}.{name}") if dataclasses.is_dataclass(sub) else value
    return cls(**kwargs)


_NESTED = {
    (TrainConfig, "lora"): LoRAOptions,
    (TrainConfig, "data"): DataOptions,
    (TrainConfig, "optim"): OptimOptions,
    (TrainConfig, "loss"): LossOptions,
    (TrainConfig, "val"): ValOptions,
    (TrainConfig, "export"): ExportOptions,
    (DataOptions, "sources"): SourceOptions,
    (DataOptions, "template_jitter"): JitterOptions,
    (DataOptions, "search_jitter"): JitterOptions,
}


def _field_type(cls: type, name: str) -> Any:
    return _NESTED.get((cls, name), object)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    return _build(TrainConfig, values, "config")


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML/JSON training config; relative paths inside stay relative to the working directory."""
    text = Path(path).read_text()
    values = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    return config_from_dict(values or {})
