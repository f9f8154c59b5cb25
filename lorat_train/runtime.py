"""Where a run executes: device, mixed precision, torchrun/DDP process group, compile.

Everything CUDA-specific is selected only when CUDA is present; the CPU path (one process, gloo when
several) is what the tests exercise.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """This process' place in a torchrun launch (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, backend: str | None = None) -> DistContext:
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; join the process group (nccl on CUDA, else gloo)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        here = False
        if not dist.is_initialized():
            if backend is None:
                backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(local)
            # rank 0 validates alone while the others wait in a collective: allow long held-out evaluations
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=2))
            here = True
        return cls(rank, world, local, here)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """All-reduce mean (no autograd), e.g. the number of positives the authors normalise by."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_flag(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's decision (e.g. early stopping) for everybody."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], device=device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(setting: str, ctx: DistContext) -> torch.device:
    """auto: cuda:LOCAL_RANK when CUDA is present, else cpu."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: cuda, but torch sees no CUDA device")
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    return torch.device(setting)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """autocast dtype. auto: fp16 on CUDA (the authors' run.yaml dtype, with a GradScaler), bf16 on a CPU with
    native bf16 (AVX-512 BF16 / AMX), else off."""
    if amp == "none":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if amp != "auto":
        raise ValueError(f"optim.amp must be none, bf16, fp16 or auto, got {amp!r}")
    if device.type == "cuda":
        return torch.float16
    cpu_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if cpu_bf16 else None


def resolve_compile(setting: str, device: torch.device) -> bool:
    """auto: compile on CUDA (run.yaml torch_compile.enabled: true); on CPU compiling costs minutes."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


def resolve_workers(setting: int, device: torch.device, ctx: DistContext) -> int:
    """auto (-1): no worker processes on CPU (the cores are busy with the model), min(8, cores/ranks) on CUDA."""
    if setting >= 0:
        return setting
    if device.type != "cuda":
        return 0
    return max(min(8, (os.cpu_count() or 1) // ctx.world), 1)
