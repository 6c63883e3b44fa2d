"""Optimiser and schedule of every stage: AdamW, linear warm-up, cosine/linear/constant decay, clipping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.training.config import OptimConfig


def lr_factor(step: int, total: int, optim: OptimConfig) -> float:
    """Multiplier of the peak lr at `step`: linear warm-up, then cosine/linear/constant decay."""
    import math

    if optim.warmup_steps and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant" or total <= optim.warmup_steps:
        return 1.0
    progress = min(1.0, (step - optim.warmup_steps) / max(1, total - optim.warmup_steps))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if optim.schedule == "cosine" else 1 - progress
    return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * decay


def build_optimizer(params: Sequence[Any], optim: OptimConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW over `params` and its LambdaLR schedule (stepped once per optimiser step)."""
    import torch

    opt = torch.optim.AdamW(list(params), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, optim))
    return opt, sched


def clip_and_step(params: Sequence[Any], opt: Any, sched: Any, grad_clip: float) -> float:
    """Clip the gradient norm, step optimiser and schedule, zero the gradients; returns the norm."""
    import torch

    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(norm)
