"""The training loop: sample micro-batches, forward under autocast, IoU-aware loss, clip, AdamW step.

One `Trainer` owns the model, the optimiser, the pair sampler and the run history; `train(config)` is the
whole run (check the data, resume if a checkpoint exists, train, validate on held-out footage, stop early,
checkpoint, export, plot). Under torchrun every rank draws its own share of each global batch (a pure
function of seed, step and shard), DDP averages the gradients, and rank 0 alone validates, checkpoints and
exports.
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
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from lorat_infer.eval.synthetic import generate_benchmark

from .checkpointing import has_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, total_steps
from .data import Batch, PairSampler
from .evaluate import evaluate_auc
from .export import export_merged, export_release
from .footage import DataError, FrameSequence, Report, read_path, visible
from .losses import positives, tracking_loss
from .optim import build_optimizer, lr_at, set_lr
from .plot import plot_curves
from .runtime import DistContext, resolve_amp, resolve_compile, resolve_device, resolve_workers
from .setup import (
    adapter_holds_backbone_weights,
    build_initial_model,
    count_parameters,
    set_activation_checkpointing,
)

BEST = "best.safetensors"


class StepBatches(torch.utils.data.Dataset):
    """Item i = this rank's micro-batches of optimiser step `start + i` (workers build whole steps)."""

    def __init__(self, sampler: PairSampler, start: int, stop: int, micro: int, accum: int, rank: int) -> None:
        self.sampler, self.start, self.stop = sampler, start, stop
        self.micro, self.accum, self.rank = micro, accum, rank

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __getitem__(self, i: int) -> list[Batch]:
        step = self.start + i
        return [self.sampler.batch(step, self.micro, shard=self.rank * self.accum + m) for m in range(self.accum)]


def _identity(x: Any) -> Any:
    return x


def first_visible_view(seq: FrameSequence) -> FrameSequence | None:
    """The sequence from its first visible box on (the tracker starts from frame 0's box)."""
    idx = np.flatnonzero(visible(np.asarray(seq.boxes, dtype=np.float64)) & ~np.asarray(seq.absent, dtype=bool))
    if len(idx) == 0 or len(seq) - idx[0] < 2:
        return None
    k = int(idx[0])
    return FrameSequence(seq.name, seq.frame_paths[k:], seq.boxes[k:], seq.absent[k:])


class Trainer:
    def __init__(self, config: TrainConfig, device: str | None = None) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        self.config = config
        self.dist = DistContext.from_env()
        self.device = resolve_device(device or config.device, self.dist)
        self.out = Path(config.output_dir)
        opt = config.optim
        self.total_steps = total_steps(opt)
        per_rank = opt.batch_size // self.dist.world
        if opt.batch_size % (self.dist.world * opt.grad_accumulation):
            raise ValueError(f"optim.batch_size {opt.batch_size} must divide by ranks ({self.dist.world}) x "
                             f"grad_accumulation ({opt.grad_accumulation})")
        self.micro_batch = per_rank // opt.grad_accumulation
        model, self.lora, self.start_point = build_initial_model(config)
        self.model = model.to(self.device).train()
        set_activation_checkpointing(self.model, config.activation_checkpointing)
        self.optimizer = build_optimizer(self.model, opt)
        cache = Path(config.data.cache_dir) if config.data.cache_dir else self.out / "cache"
        if not self.dist.main:
            self.dist.barrier()  # rank 0 reads and caches the footage first (videos decode once)
        self.sampler = PairSampler(self.model.config, config.data, config.seed, cache_dir=cache)
        if self.dist.main:
            self.dist.barrier()
        self.amp = resolve_amp(opt.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == torch.float16 else None
        self.ddp: torch.nn.parallel.DistributedDataParallel | None = None
        forward_model: torch.nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            forward_model = self.ddp
        self.compiled = resolve_compile(config.compile, self.device)
        self.forward_model = torch.compile(forward_model) if self.compiled else forward_model
        self.workers = resolve_workers(config.data.workers, self.device, self.dist)
        self.step = 0
        self.history: dict[str, list[float]] = {"loss_steps": [], "loss": [], "iou": [], "val_steps": [],
                                                "val_auc": [], "elapsed_s": []}
        self.best: dict[str, Any] = {"auc": None, "step": None, "since": 0}
        self.stopped_early = False
        self._val_sequences: list | None = None

    # ------------------------------------------------------------------------------------------ pieces

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_step(self, batches: Batch | list[Batch]) -> dict[str, float]:
        """One optimiser step over `batches` (micro-batches, gradients accumulated) at this step's rate."""
        if isinstance(batches, Batch):
            batches = [batches]
        opt = self.config.optim
        set_lr(self.optimizer, lr_at(self.step, opt))
        self.optimizer.zero_grad(set_to_none=True)
        logs = []
        grid = self.model.config.search_grid
        counts = torch.stack([positives(b.target_boxes, grid, self.config.loss).sum().float() for b in batches])
        num_pos = self.dist.mean(counts.mean().to(self.device))
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    out = self.forward_model(batch.template.to(self.device, non_blocking=True),
                                             batch.search.to(self.device, non_blocking=True),
                                             batch.template_mask.to(self.device, non_blocking=True))
                losses = tracking_loss(out["score_map"], out["boxes"], batch.target_boxes.to(self.device),
                                       self.config.loss, num_pos=num_pos)
                loss = losses["loss"] / len(batches)
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            logs.append({k: float(v.detach()) for k, v in losses.items()})
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if opt.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable(), opt.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        return {k: float(np.mean([log[k] for log in logs])) for k in logs[0]}

    def batches(self, stop: int) -> Any:
        """This rank's micro-batches for steps self.step .. stop-1, from loader workers when configured."""
        dataset = StepBatches(self.sampler, self.step, stop, self.micro_batch, self.config.optim.grad_accumulation,
                              self.dist.rank)
        if self.workers == 0:
            return (dataset[i] for i in range(len(dataset)))
        return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.workers,
                                           collate_fn=_identity, pin_memory=self.device.type == "cuda",
                                           prefetch_factor=4)

    def val_sequences(self) -> list:
        if self._val_sequences is None:
            v = self.config.val
            if v.sources:
                report = Report()
                seqs = []
                for s in v.sources:
                    seqs += read_path(s.root, report, mode=self.config.data.check, kind=s.type if s.type != "synthetic"
                                      else "auto", cache_dir=self.out / "cache", images=s.images)
                if report.errors:
                    raise DataError("held-out data is unusable:\n" + report.format())
                seqs = [q for q in (first_visible_view(s) for s in seqs) if q is not None]
                if v.max_sequences:
                    seqs = seqs[: v.max_sequences]
                if not seqs:
                    raise DataError("val.sources hold no sequence with a visible first box and 2+ frames")
                self._val_sequences = seqs
            else:
                self._val_sequences = generate_benchmark(v.seed, v.num_sequences, v.num_frames, domain=v.domain,
                                                         **v.options)
        return self._val_sequences

    def validate(self) -> float:
        """Held-out success AUC (rank 0); tracks the best weights for early stopping / export."""
        v = self.config.val
        auc = evaluate_auc(self.model, self.val_sequences(), batch_size=v.batch_size, device=self.device,
                           max_frames=v.max_frames or None)
        self.model.train()
        self.history["val_steps"].append(self.step)
        self.history["val_auc"].append(auc)
        if self.best["auc"] is None or auc > self.best["auc"]:
            self.best = {"auc": auc, "step": self.step, "since": 0}
            if v.keep_best:
                self.out.mkdir(parents=True, exist_ok=True)
                state = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
                save_file(state, str(self.out / BEST))
        else:
            self.best["since"] += 1
        return auc

    def load_best(self) -> bool:
        path = self.out / BEST
        if not path.is_file():
            return False
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in load_file(str(path)).items():
                params[name].copy_(value.to(params[name].device))
        return True

    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoint"

    def save(self) -> None:
        save_checkpoint(self.checkpoint_dir(), self.model, self.optimizer,
                        {"step": self.step, "history": self.history, "best": self.best,
                         "stopped_early": self.stopped_early})

    def resume(self) -> bool:
        if not has_checkpoint(self.checkpoint_dir()):
            return False
        state = load_checkpoint(self.checkpoint_dir(), self.model, self.optimizer)
        self.step, self.history = int(state["step"]), state["history"]
        self.best = state.get("best", self.best)
        self.stopped_early = bool(state.get("stopped_early", False))
        return True

    # --------------------------------------------------------------------------------------------- run

    def run(self, steps: int | None = None, progress: bool = True, log: Any = None) -> None:
        """Train until `steps` (default: the schedule's total), validating and checkpointing on the way."""
        cfg = self.config
        stop = self.total_steps if steps is None else min(steps, self.total_steps)
        main = self.dist.main
        bar = tqdm(total=stop, initial=self.step, disable=not (progress and main), mininterval=5, dynamic_ncols=True)
        window: list[dict[str, float]] = []
        start = time.perf_counter() - (self.history["elapsed_s"][-1] if self.history["elapsed_s"] else 0.0)
        if self.stopped_early:
            stop = self.step
        if cfg.val.every and cfg.val.keep_best and self.step == 0 and not self.history["val_steps"]:
            # the start model is a candidate too: fine-tuning on a few clips can make things worse
            if main:
                auc = self.validate()
                bar.write(f"step 0: held-out success AUC {auc:.3f} (the start model)")
                if log is not None:
                    print(json.dumps({"step": 0, "val_auc": auc}), file=log, flush=True)
            self.dist.barrier()
        for batches in self.batches(stop):
            window.append(self.train_step(batches))
            bar.update(1)
            at_end = self.step == stop
            if main and (self.step % cfg.log_every == 0 or at_end):
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
            stop_now = False
            if cfg.val.every and (self.step % cfg.val.every == 0 or at_end):
                if main:
                    auc = self.validate()
                    bar.write(f"step {self.step}: held-out success AUC {auc:.3f} (best {self.best['auc']:.3f} at "
                              f"step {self.best['step']})")
                    if log is not None:
                        print(json.dumps({"step": self.step, "val_auc": auc}), file=log, flush=True)
                    stop_now = bool(cfg.val.patience) and self.best["since"] >= cfg.val.patience
                stop_now = self.dist.broadcast_flag(stop_now, self.device)
            if stop_now:
                self.stopped_early = True
                if main:
                    bar.write(f"early stop at step {self.step}: no better held-out AUC in {cfg.val.patience} "
                              "evaluations")
            if cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0 or at_end or stop_now):
                if main:
                    self.save()
                self.dist.barrier()
            if stop_now:
                break
        bar.close()

    def export(self) -> dict[str, str]:
        """Merged file + the authors'-format adapter; curves PNG; summary JSON (rank 0)."""
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        used_best = bool(cfg.val.keep_best and self.best.get("step") is not None and self.load_best())
        trainable, total = count_parameters(self.model)
        summary = {
            "mode": cfg.mode, "steps": self.step, "trainable_params": trainable, "total_params": total,
            "start": self.start_point,
            "final_val_auc": self.history["val_auc"][-1] if self.history["val_auc"] else None,
            "best_val_auc": self.best.get("auc"), "best_step": self.best.get("step"), "exported_best": used_best,
            "stopped_early": self.stopped_early,
            "train_seconds": round(self.history["elapsed_s"][-1], 1) if self.history["elapsed_s"] else None,
            "amp": str(self.amp).replace("torch.", "") if self.amp else "none",
            "device": str(self.device), "world_size": self.dist.world, "compiled": self.compiled,
            "lora": {"rank": self.lora.rank, "alpha": self.lora.alpha, "use_rslora": self.lora.use_rslora},
        }
        merged = Path(cfg.export.merged) if cfg.export.merged else self.out / "model.safetensors"
        paths = {"merged": str(export_merged(self.model, merged, {"training": json.dumps(summary)}))}
        if cfg.export.release:
            unchanged_backbone = bool(cfg.backbone) and cfg.mode == "lora" and not (
                cfg.adapter and adapter_holds_backbone_weights(cfg.adapter))
            write = cfg.export.backbone == "always" or (cfg.export.backbone == "auto" and not unchanged_backbone)
            b, a, c = export_release(self.model, self.out / "release", self.lora if cfg.mode == "lora" else None,
                                     write_backbone=write, backbone_source=cfg.backbone)
            paths.update(adapter=str(a), release_config=str(c), backbone=str(b) if b else cfg.backbone)
        paths["curves"] = str(plot_curves(self.out / "curves.png", self.history["loss_steps"], self.history["loss"],
                                          self.history["val_steps"], self.history["val_auc"], title=cfg.mode))
        (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (self.out / "summary.json").write_text(json.dumps({**summary, "history": self.history, "files": paths},
                                                          indent=1))
        return paths

    def close(self) -> None:
        self.dist.close()


def train(config: TrainConfig, resume: bool = True, progress: bool = True, steps: int | None = None) -> Trainer:
    """The whole run; returns the trainer (model, history) after exporting (rank 0)."""
    trainer = Trainer(config)
    try:
        main = trainer.dist.main
        if main:
            trainer.out.mkdir(parents=True, exist_ok=True)
        if resume and trainer.resume() and main:
            print(f"resumed from {trainer.checkpoint_dir()} at step {trainer.step}", flush=True)
        trainable, total = count_parameters(trainer.model)
        opt = config.optim
        if main:
            print(f"{config.mode} training from {trainer.start_point}: {trainable:,} trainable of {total:,} "
                  f"parameters; device {trainer.device} x {trainer.dist.world}; amp={trainer.amp}; "
                  f"compile={trainer.compiled}; global batch {opt.batch_size} = {trainer.dist.world} ranks x "
                  f"{opt.grad_accumulation} micro-steps x {trainer.micro_batch}; {trainer.total_steps} steps; "
                  f"{trainer.workers} loader workers", flush=True)
        with (open(trainer.out / "train_log.jsonl", "a") if main else contextlib.nullcontext()) as log:
            trainer.run(steps=steps, progress=progress, log=log)
        if main:
            paths = trainer.export()
            print(json.dumps(paths, indent=1), flush=True)
        trainer.dist.barrier()
    finally:
        trainer.close()
    return trainer
