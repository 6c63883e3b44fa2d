"""The loop every stage shares: micro-batches, gradient accumulation, DDP, logging, resume state."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.errors import ConfigError
from pipelines.training.optim import build_optimizer, clip_and_step
from pipelines.training.runtime import Runtime, barrier, shard
from pipelines.training.sampling import iter_micro_batches, sample_seed, step_indices
from pipelines.training.state import latest_state, load_state, save_state

if TYPE_CHECKING:
    from torch import nn

    from pipelines.tracking.tracker import Tracker
    from pipelines.training.config import LoopConfig


@dataclass
class StageResult:
    """What a stage did in this process."""

    stage: str
    """contrastive / projector / lora."""
    steps_done: int
    """Optimiser steps completed so far (all processes, resumes included)."""
    finished: bool
    """Whether the stage reached its configured number of steps."""
    losses: list[float] = field(default_factory=list)
    """Loss of each step run in this process."""
    wall_s: float = 0.0
    """Seconds spent in this process."""
    trainable: int = 0
    """Trainable parameters."""
    total: int = 0
    """All parameters."""

    def summary(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "stage": self.stage,
            "steps_done": self.steps_done,
            "finished": self.finished,
            "first_loss": self.losses[0] if self.losses else None,
            "last_loss": self.losses[-1] if self.losses else None,
            "wall_s": round(self.wall_s, 2),
            "trainable_params": self.trainable,
            "total_params": self.total,
        }


def run_loop(
    *,
    stage: str,
    module: nn.Module,
    params: Sequence[Any],
    loss_fn: Any,
    n_items: int,
    loop: LoopConfig,
    stage_dir: Path,
    rt: Runtime,
    seed: int,
    resume: bool,
    stop_after: int | None,
    tracker: Tracker,
    ddp: Any = None,
) -> StageResult:
    """Train `params` of `module` for `loop.steps` optimiser steps, with resume state and DDP.

    Args:
        stage: stage name (metric prefix).
        module: the `torch.nn.Module` whose state is saved for resume (the unwrapped model).
        params: the trainable parameters.
        loss_fn: `loss_fn(indices, step) -> scalar loss` for a micro-batch of dataset indices
            (called inside autocast; `step` seeds augmentation).
        n_items: dataset size.
        loop: steps, batch, accumulation, optimiser, checkpoint cadence.
        stage_dir: where resume state goes.
        rt: runtime (device, precision, rank).
        seed: run seed (data order, per-step reseeding of dropout).
        resume: start from the latest state in `stage_dir` when there is one.
        stop_after: stop after this many steps in this process (simulated kill).
        tracker: where metrics go (only rank 0 logs).
        ddp: the `DistributedDataParallel` wrapper `loss_fn` runs through, if any (for `no_sync`).

    Returns:
        The stage result.
    """
    import time

    import torch

    if loop.batch_size % rt.world_size:
        raise ConfigError(f"{stage}.batch_size={loop.batch_size} must be divisible by the {rt.world_size} ranks")
    params = list(params)
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in module.parameters())
    opt, sched = build_optimizer(params, loop.optim, loop.steps)
    start = 0
    state = latest_state(stage_dir) if resume else None
    if state is not None:
        start = int(load_state(state, module, opt, sched)["step"])
    result = StageResult(stage, start, start >= loop.steps, trainable=trainable, total=total)
    t0 = time.perf_counter()
    per_step = loop.batch_size * loop.grad_accum
    ran = 0
    bar = progress(disable=not rt.is_main)
    task = bar.add_task(stage, total=loop.steps, completed=start, loss=float("nan"))
    with bar:  # stops the live display on errors too
        for step in range(start, loop.steps):
            torch.manual_seed(sample_seed(seed, step, -1))  # dropout: a function of the step, not of history
            local = shard(step_indices(n_items, step, per_step, seed), rt)
            micro = list(iter_micro_batches(local, loop.grad_accum))
            step_loss = 0.0
            for m, idx in enumerate(micro):
                sync = contextlib.nullcontext()
                if ddp is not None and m < len(micro) - 1:
                    sync = ddp.no_sync()  # all-reduce gradients once per optimiser step
                with sync:
                    with rt.autocast():
                        loss = loss_fn(idx, step)
                    (loss / len(micro)).backward()
                step_loss += float(loss.detach()) / len(micro)
            if rt.distributed:
                import torch.distributed as dist

                t = torch.tensor([step_loss], dtype=torch.float64)
                dist.all_reduce(t)
                step_loss = float(t[0]) / rt.world_size
            grad_norm = clip_and_step(params, opt, sched, loop.optim.grad_clip)
            result.losses.append(step_loss)
            done = step + 1
            ran += 1
            bar.update(task, completed=done, loss=step_loss)
            if rt.is_main and (done % loop.log_every == 0 or done == loop.steps):
                tracker.log_metrics(
                    {f"{stage}/loss": step_loss, f"{stage}/lr": sched.get_last_lr()[0], f"{stage}/grad_norm": grad_norm},
                    step=done,
                )
            stopping = stop_after is not None and ran >= stop_after
            if (loop.checkpoint_every and done % loop.checkpoint_every == 0) or stopping or done == loop.steps:
                if rt.is_main:
                    save_state(stage_dir, done, module, opt, sched, {"stage": stage})
                barrier(rt)
            result.steps_done = done
            if stopping:
                break
    result.finished = result.steps_done >= loop.steps
    result.wall_s = time.perf_counter() - t0
    return result


def progress(*, disable: bool) -> Any:
    """A Rich progress bar for a training stage (steps, loss, elapsed and remaining time)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=disable,
    )
