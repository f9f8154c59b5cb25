"""Training configuration: plain dataclasses read from a YAML (or JSON) file.

Every default is the authors' LoRAT recipe (GitHub LitingLin/LoRAT, `config/LoRAT/run.yaml` and
`config/LoRAT/B-224/config.yaml`); the comment on each field names where it comes from. Our own earlier
choices for tiny data stay available as options (`style: legacy`, `schedule: legacy`, `positives: centre`,
...; `configs/default-stage*.yaml` use them). Unknown keys are errors, so a typo fails loudly.
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
    rank: int = 64  # B-224/config.yaml model.lora.r
    alpha: float = 64.0  # model.lora.alpha
    use_rslora: bool = False  # model.lora.use_rslora (dropout 0 there too)


@dataclass
class JitterOptions:
    """Box jitter of a crop. `style: authors`: scale / exp(N(0,1) * scale) per axis (anisotropic) and
    translation U(-1,1) * center * (w' + h') / 2 in crop pixels. `style: legacy`: size * exp(N(0, scale)),
    centre + (U(0,1) - 0.5) * sqrt(wh) * center."""

    scale: float = 0.0
    center: float = 0.0


@dataclass
class AugmentOptions:
    """Photometric/geometric augmentation after cropping (run.yaml transform.augmentation)."""

    flip: float = 0.5  # horizontal_flip probability, drawn separately for template and search (joint: false)
    color_jitter: float = 0.4  # brightness = contrast = saturation = 0.4, separately per crop
    deit3: bool = True  # DeiT-III 3-augment: one of grayscale / solarize / blur, jointly on both crops


@dataclass
class SourceOptions:
    """One data source.

    - `synthetic`: a rolling pool of generated sequences (tests, the built-in default model);
    - `auto`: everything found under `root`: sequence folders (LaSOT / GOT-10k layout), TrackingNet chunks,
      video files with a box file beside them (`clip.mp4` + `clip.txt`), COCO-style JSON files;
    - `lasot`, `got10k`, `trackingnet`: one layout under `root`; `coco`: `root` is the annotation JSON,
      `images` its image folder (default: beside the JSON, or its `images/` / `<stem>/` folder);
    - `video`: `root` is one video file or a folder of them.
    """

    type: Literal["synthetic", "auto", "lasot", "got10k", "trackingnet", "coco", "video"] = "synthetic"
    weight: float = 1.0  # run.yaml sampler.weight: 1.0 for each of GOT-10k, LaSOT, TrackingNet, COCO
    # synthetic
    domain: str = "blobs"
    pool_size: int = 96
    num_frames: int = 32
    refresh_every: int = 4  # replace one pool sequence every N steps (deterministic in the step)
    seed_offset: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # extra SyntheticOptions fields
    # files
    root: str = ""
    images: str = ""  # coco: image folder
    split_file: str = ""  # keep only the sequence names listed (e.g. GOT-10k's vot-train split list)
    max_sequences: int = 0  # 0 = all


@dataclass
class DataOptions:
    sources: list[SourceOptions] = field(default_factory=lambda: [SourceOptions()])
    style: Literal["authors", "legacy"] = "authors"  # pair sampling + cropping (see data.py)
    max_gap: int = 100  # run.yaml siamese_training_pair_sampling.positive_sample.max_gaps (sample_mode interval)
    template_jitter: JitterOptions = field(default_factory=JitterOptions)  # run.yaml: template has no jitter
    # run.yaml SiamFC_cropping.search_region: scale_jitter 0.25, translation_jitter 3
    search_jitter: JitterOptions = field(default_factory=lambda: JitterOptions(scale=0.25, center=3.0))
    min_object_size: float = 10.0  # search_region.min_object_size: retry the jitter until the target keeps 10 px
    jitter_retries: int = 10  # prepare_siamfc_cropping_with_augmentation(retry_count=10); then a new pair
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    check: Literal["full", "headers", "off"] = "full"  # validate every source before training (full decodes)
    cache_dir: str = ""  # decoded video frames (default <output_dir>/cache)
    workers: int = -1  # data-loader processes; -1: 0 on CPU, min(8, cores / ranks) on CUDA


@dataclass
class OptimOptions:
    steps: int = 0  # optimiser steps; 0 = epochs * samples_per_epoch // batch_size
    epochs: int = 170  # run.yaml num_epochs
    samples_per_epoch: int = 131072  # run.yaml data.train.sampler.samples_per_epoch
    batch_size: int = 128  # global batch over all ranks and accumulation steps (run.yaml global_batch_size)
    grad_accumulation: int = 1  # micro-steps per optimiser step (run.yaml grad_accumulation_steps: 1)
    lr: float = 1e-4  # run.yaml optimizer.lr (AdamW)
    weight_decay: float = 0.1  # optimizer.weight_decay
    no_weight_decay: list[str] = field(default_factory=lambda: ["embed"])  # per_parameter: name_regex "embed"
    schedule: Literal["timm", "legacy"] = "timm"  # timm cosine, per_iteration, warmup_prefix: true
    warmup_steps: int = -1  # -1: warmup_epochs * steps per epoch
    warmup_epochs: float = 2.0  # lr_scheduler.parameters.warmup_epochs
    warmup_lr: float = 1e-7  # warmup_lr
    min_lr: float = 1e-6  # lr_min
    min_lr_ratio: float = 0.05  # legacy schedule only: cosine to lr * min_lr_ratio
    grad_clip: float = 1.0  # max_grad_norm
    # run.yaml auto_mixed_precision dtype float16; auto = fp16 + GradScaler on CUDA, bf16 on a CPU with native
    # bf16, else fp32
    amp: Literal["none", "bf16", "fp16", "auto"] = "auto"


@dataclass
class LossOptions:
    cls: float = 1.0  # criteria.classification: binary_cross_entropy, iou_aware_classification_score, weight 1
    giou: float = 1.0  # criteria.bbox_regression: GIoU, weight 1
    l1: float = 0.0  # not in the authors' criterion (our legacy: 5)
    positives: Literal["rasterized", "centre"] = "rasterized"  # box_with_score_map_label_gen: every covered cell


@dataclass
class ValOptions:
    every: int = 10240  # steps (run.yaml test epoch_trigger interval 10 epochs x 1024 steps); 0 disables
    sources: list[SourceOptions] = field(default_factory=list)  # held-out footage; empty = synthetic below
    max_sequences: int = 0
    max_frames: int = 0  # per sequence; 0 = all
    batch_size: int = 32  # sequences per forward pass
    patience: int = 0  # early stopping: evaluations without a better AUC before stopping; 0 = never
    keep_best: bool = True  # export the weights of the best evaluation (not the last step)
    # synthetic validation (when `sources` is empty)
    seed: int = 777_000
    num_sequences: int = 6
    num_frames: int = 40
    domain: str = "blobs"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportOptions:
    merged: str = ""  # our single merged file (default: <output_dir>/model.safetensors)
    release: bool = True  # also write the authors' adapter-only file (+ config.json)
    # the Meta-format backbone beside it: auto = only when it differs from the backbone file we started from
    backbone: Literal["auto", "always", "never"] = "auto"


@dataclass
class TrainConfig:
    output_dir: str = "runs/train"
    seed: int = 0
    mode: Literal["full", "lora"] = "lora"
    variant: str = ""  # a LoRAT variant name (B-224, L-224, ...); or `model` for custom shapes
    model: dict[str, Any] = field(default_factory=dict)  # LoRATConfig fields (wins over `variant`)
    backbone: str = ""  # Meta-format DINOv2 file (dinov2_vitb14_pretrain.pth): the authors' starting point
    adapter: str = ""  # with `backbone`: an authors'-format adapter whose LoRA training continues
    init_checkpoint: str = ""  # or: our merged file to start from (its config wins over `model`)
    drop_path: float = -1.0  # stochastic depth; -1 = the authors' per variant: L 0.1, g 0.4, else 0
    lora: LoRAOptions = field(default_factory=LoRAOptions)
    data: DataOptions = field(default_factory=DataOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    loss: LossOptions = field(default_factory=LossOptions)
    val: ValOptions = field(default_factory=ValOptions)
    export: ExportOptions = field(default_factory=ExportOptions)
    device: str = "auto"  # auto = cuda when present (torchrun: cuda:LOCAL_RANK), else cpu
    compile: Literal["auto", "on", "off"] = "auto"  # torch.compile (run.yaml torch_compile.enabled); auto = on CUDA
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, ~30% more compute
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
        if sub is SourceOptions:  # list[SourceOptions]
            if not isinstance(value, list):
                raise ValueError(f"{where}.{name}: expected a list of sources")
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
    (DataOptions, "augment"): AugmentOptions,
    (ValOptions, "sources"): SourceOptions,
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


def steps_per_epoch(options: OptimOptions) -> int:
    return max(options.samples_per_epoch // max(options.batch_size, 1), 1)


def total_steps(options: OptimOptions) -> int:
    """`steps`, or the authors' epochs x samples_per_epoch / global batch (170 x 1024 = 174,080)."""
    return options.steps if options.steps > 0 else options.epochs * steps_per_epoch(options)


def warmup_steps(options: OptimOptions) -> int:
    if options.warmup_steps >= 0:
        return options.warmup_steps
    return int(options.warmup_epochs * steps_per_epoch(options))
