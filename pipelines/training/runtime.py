"""Where and how a training process runs: device, precision, and the DDP process group.

Under `torchrun` (`WORLD_SIZE` > 1) every rank calls `setup_runtime`; only rank 0 (`Runtime.is_main`)
writes files, logs and tracks. Without torchrun the same code runs as a world of one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from pipelines.training.config import TrainConfig


@dataclass(frozen=True)
class Runtime:
    """Where and how this process trains."""

    device: str
    """cpu or cuda[:i]."""
    autocast_dtype: Any
    """torch.bfloat16 for autocast, or None (float32)."""
    rank: int
    """This process's rank (0 without DDP)."""
    world_size: int
    """Number of processes (1 without DDP)."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that saves, logs and tracks."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when configured, else a no-op context."""
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=self.autocast_dtype)


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Pick the device, the precision and (under torchrun) join the process group.

    Under `torchrun` (`WORLD_SIZE` > 1) the process group uses nccl on CUDA and gloo on CPU.
    """
    import torch

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available()
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    bf16 = cfg.precision == "bfloat16" or (cfg.precision == "auto" and cuda)
    return Runtime(device=device, autocast_dtype=torch.bfloat16 if bf16 else None, rank=rank, world_size=world)


def close_runtime(rt: Runtime) -> None:
    """Leave the process group (if any)."""
    if rt.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def barrier(rt: Runtime) -> None:
    """Wait for every rank (no-op without DDP)."""
    if rt.distributed:
        import torch.distributed as dist

        dist.barrier()


def shard(indices: Sequence[int], rt: Runtime) -> list[int]:
    """This rank's share of a global batch (rank r takes positions r, r + W, ...)."""
    return list(indices[rt.rank :: rt.world_size])


def all_reduce_grads(params: Sequence[Any], rt: Runtime) -> None:
    """Average gradients over ranks (DDP by hand: used where the model is not wrapped)."""
    if not rt.distributed:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(rt.world_size)


def wrap_ddp(model: nn.Module, rt: Runtime) -> nn.Module | None:
    """`DistributedDataParallel(model)` under DDP (unused-parameter search on: frozen towers,
    untouched poolers), else None."""
    if not rt.distributed:
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[rt.device] if rt.device.startswith("cuda") else None, find_unused_parameters=True
    )
