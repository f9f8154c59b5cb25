"""The training loop: sample a batch, forward under autocast, IoU-aware loss, clip, AdamW step.

One `Trainer` owns the model, the optimiser, the pair sampler and the run history; `train(config)` is
the whole run (resume if a checkpoint exists, train, validate, checkpoint, export, plot).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from lorat_infer.checkpoint import load_merged
from lorat_infer.config import LoRATConfig
from lorat_infer.eval.synthetic import generate_benchmark
from lorat_infer.model import LoRAT

from .checkpointing import has_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import Batch, PairSampler
from .evaluate import evaluate_auc
from .export import export_merged, export_release
from .losses import tracking_loss
from .optim import build_optimizer, lr_at, set_lr
from .plot import plot_curves
from .setup import count_parameters, prepare_model


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """autocast dtype: 'auto' = bf16 on a CPU with native bf16 (AVX-512 BF16/AMX) or a bf16 GPU, else off."""
    if amp == "none":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if amp != "auto":
        raise ValueError(f"optim.amp must be none, bf16, fp16 or auto, got {amp!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    cpu_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if cpu_bf16 else None


def build_initial_model(config: TrainConfig) -> LoRAT:
    torch.manual_seed(config.seed)
    if config.init_checkpoint:
        model = load_merged(config.init_checkpoint)
    else:
        if not config.model:
            raise ValueError("set `model` (LoRATConfig fields) or `init_checkpoint` in the training config")
        model = LoRAT(LoRATConfig.from_dict(config.model))
    torch.manual_seed(config.seed + 1)  # LoRA init draws from its own stream
    return prepare_model(model, config.mode, config.lora)


class Trainer:
    def __init__(self, config: TrainConfig, device: str = "cpu") -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        self.config = config
        self.device = torch.device(device)
        self.out = Path(config.output_dir)
        self.model = build_initial_model(config).to(self.device).train()
        self.optimizer = build_optimizer(self.model, config.optim)
        self.sampler = PairSampler(self.model.config, config.data, config.seed)
        self.amp = resolve_amp(config.optim.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == torch.float16 else None
        self.step = 0
        self.history: dict[str, list[float]] = {"loss_steps": [], "loss": [], "iou": [], "val_steps": [],
                                                "val_auc": [], "elapsed_s": []}
        self._val_sequences: list | None = None

    # ------------------------------------------------------------------------------------------ pieces

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step on `batch` at the current step's learning rate."""
        opt = self.config.optim
        set_lr(self.optimizer, lr_at(self.step, opt))
        with self._autocast():
            out = self.model(batch.template.to(self.device), batch.search.to(self.device),
                             batch.template_mask.to(self.device))
        losses = tracking_loss(out["score_map"], out["boxes"], batch.target_boxes.to(self.device), self.config.loss)
        self.optimizer.zero_grad(set_to_none=True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.scaler is not None:
            self.scaler.scale(losses["loss"]).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, opt.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            losses["loss"].backward()
            if opt.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, opt.grad_clip)
            self.optimizer.step()
        self.step += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def val_sequences(self) -> list:
        if self._val_sequences is None:
            v = self.config.val
            self._val_sequences = generate_benchmark(v.seed, v.num_sequences, v.num_frames, domain=v.domain,
                                                     **v.options)
        return self._val_sequences

    def validate(self) -> float:
        auc = evaluate_auc(self.model, self.val_sequences())
        self.model.train()
        self.history["val_steps"].append(self.step)
        self.history["val_auc"].append(auc)
        return auc

    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoint"

    def save(self) -> None:
        save_checkpoint(self.checkpoint_dir(), self.model, self.optimizer,
                        {"step": self.step, "history": self.history})

    def resume(self) -> bool:
        if not has_checkpoint(self.checkpoint_dir()):
            return False
        state = load_checkpoint(self.checkpoint_dir(), self.model, self.optimizer)
        self.step, self.history = int(state["step"]), state["history"]
        return True

    # --------------------------------------------------------------------------------------------- run

    def run(self, steps: int | None = None, progress: bool = True, log: Any = None) -> None:
        """Train until `steps` (default: the config's total), validating and checkpointing on the way."""
        cfg = self.config
        total = cfg.optim.steps if steps is None else steps
        bar = tqdm(total=total, initial=self.step, disable=not progress, mininterval=5, dynamic_ncols=True)
        window: list[dict[str, float]] = []
        start = time.perf_counter() - (self.history["elapsed_s"][-1] if self.history["elapsed_s"] else 0.0)
        while self.step < total:
            batch = self.sampler.batch(self.step, cfg.optim.batch_size)
            window.append(self.train_step(batch))
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == total:
                mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                window.clear()
                self.history["loss_steps"].append(self.step)
                self.history["loss"].append(mean["loss"])
                self.history["iou"].append(mean["iou"])
                self.history["elapsed_s"].append(time.perf_counter() - start)
                bar.set_postfix(loss=f"{mean['loss']:.3f}", iou=f"{mean['iou']:.3f}")
                if log is not None:
                    print(json.dumps({"step": self.step, "lr": lr_at(self.step - 1, cfg.optim), **mean,
                                      "elapsed_s": round(self.history["elapsed_s"][-1], 1)}), file=log, flush=True)
            if cfg.val.every and (self.step % cfg.val.every == 0 or self.step == total):
                auc = self.validate()
                bar.write(f"step {self.step}: validation success AUC {auc:.3f}")
                if log is not None:
                    print(json.dumps({"step": self.step, "val_auc": auc}), file=log, flush=True)
            if cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0 or self.step == total):
                self.save()
        bar.close()

    def export(self) -> dict[str, str]:
        """Merged file + (for LoRA runs, and full runs too) the release pair; curves PNG; summary JSON."""
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        trainable, total = count_parameters(self.model)
        summary = {
            "mode": cfg.mode, "steps": self.step, "trainable_params": trainable, "total_params": total,
            "final_val_auc": self.history["val_auc"][-1] if self.history["val_auc"] else None,
            "train_seconds": round(self.history["elapsed_s"][-1], 1) if self.history["elapsed_s"] else None,
            "amp": str(self.amp).replace("torch.", "") if self.amp else "none",
        }
        merged = Path(cfg.export.merged) if cfg.export.merged else self.out / "model.safetensors"
        paths = {"merged": str(export_merged(self.model, merged, {"training": json.dumps(summary)}))}
        if cfg.export.release:
            b, a, c = export_release(self.model, self.out / "release", cfg.lora if cfg.mode == "lora" else None)
            paths.update(backbone=str(b), adapter=str(a), release_config=str(c))
        paths["curves"] = str(plot_curves(self.out / "curves.png", self.history["loss_steps"], self.history["loss"],
                                          self.history["val_steps"], self.history["val_auc"], title=cfg.mode))
        (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (self.out / "summary.json").write_text(json.dumps({**summary, "history": self.history, "files": paths},
                                                          indent=1))
        return paths


def train(config: TrainConfig, resume: bool = True, progress: bool = True, steps: int | None = None) -> Trainer:
    """The whole run; returns the trainer (model, history) after exporting."""
    trainer = Trainer(config)
    trainer.out.mkdir(parents=True, exist_ok=True)
    if resume and trainer.resume():
        print(f"resumed from {trainer.checkpoint_dir()} at step {trainer.step}", flush=True)
    trainable, total = count_parameters(trainer.model)
    print(f"{config.mode} training: {trainable:,} trainable of {total:,} parameters; "
          f"amp={trainer.amp}; batch {config.optim.batch_size}; {config.optim.steps} steps", flush=True)
    with open(trainer.out / "train_log.jsonl", "a") as log:
        trainer.run(steps=steps, progress=progress, log=log)
    paths = trainer.export()
    print(json.dumps(paths, indent=1), flush=True)
    return trainer
