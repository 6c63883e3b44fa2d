"""Joint-embedding objectives of stage "pretrain": DINO (self-distillation) and SimCLR (InfoNCE), no labels.

The stage driver is `pipelines.recipes.pretrain` (`pretrain.objective: mae | dino | simclr`); this module holds the
two objectives that train the **same** tower the later stages read (`contrastive.build_tower`: class, widths, init
seed), so its weights load strictly into them. MAE reconstructs pixels and is known to linear-probe poorly before
fine-tuning; these two make the tower's CLS embedding itself invariant to crops and exposure, which a frozen-feature
probe reads directly.

DINO (Caron et al., 2021), per image of the batch:

    views  = 2 global crops (S px, area share `global_scale`) + L local crops (`local_size` px, `local_scale`)
    s_v    = head_s(student(v)[CLS])                   every view            (B, K)
    t_g    = head_t(teacher(g)[CLS])                   global views only     (B, K), no gradient
    loss   = mean over pairs g != v of  CE(softmax((t_g - c) / tau_t), log_softmax(s_v / tau_s))
    after each optimiser step:
      teacher <- m teacher + (1 - m) student           m: cosine from `teacher_momentum` to 1 over the run
      c       <- c_m c + (1 - c_m) mean_batch(t_g)     centering + sharpening (tau_t << tau_s): no collapse

SimCLR (Chen et al., 2020): z = normalise(proj(tower(v)[CLS])) of the 2 global crops; InfoNCE over the 2B views
of the (rank-local) batch at `temperature`, the other crop of the same image being the positive.

Crops are `affine_grid` + `grid_sample` boxes of random area and aspect (no flips: the project never mirrors a
radiograph), then each view gets `batch_augment`'s mild affine, gamma, intensity and noise with its own seed; all
draws are a function of (seed, step), so a resumed run replays them. Local crops reach the tower through its
interpolated position embeddings (`interpolate_pos_encoding`).

Resume state: the module saved by the loop holds the student, the teacher, both heads, the center and the count of
teacher updates. The shared loop (`pipelines.training.loop.run_loop`) has no after-step hook, so the EMA of step k
is applied at the start of step k + 1 (`catch_up`), and the last one before export: an interrupted run and an
unbroken one apply the same updates in the same order (bit-exact resume).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medvlm.errors import ConfigError

OBJECTIVES = ("dino", "simclr")
"""The joint-embedding objectives this module trains (MAE lives in `pipelines.recipes.pretrain`)."""


@dataclass(frozen=True)
class SslConfig:
    """Views, heads and temperatures of the joint-embedding objectives (`pretrain.ssl` in the YAML)."""

    global_scale: tuple[float, float] = (0.35, 1.0)
    """Area share of the image a global crop covers (DINO's 0.4-1; radiographs: the whole chest often matters)."""
    local_crops: int = 4
    """DINO local crops per image (multi-crop: small views must predict the teacher's view of the whole); SimCLR
    uses none."""
    local_size: int = 64
    """Side of a local crop in pixels (a multiple of the patch size)."""
    local_scale: tuple[float, float] = (0.08, 0.35)
    """Area share of a local crop."""
    out_dim: int = 1024
    """DINO prototypes K (65,536 in the paper for ImageNet; a small set suffices for one domain and a tiny tower)."""
    head_hidden: int = 512
    """Hidden width of the projection head (DINO and SimCLR)."""
    head_bottleneck: int = 128
    """Output of the head's MLP: DINO's bottleneck before the prototypes, SimCLR's embedding."""
    student_temp: float = 0.1
    """DINO student temperature tau_s."""
    teacher_temp: float = 0.04
    """DINO teacher temperature tau_t (sharpening; well below tau_s)."""
    center_momentum: float = 0.9
    """DINO center EMA."""
    teacher_momentum: float = 0.99
    """DINO teacher EMA at step 0, raised to 1 by a cosine (0.996 in the paper for ~100k steps; 0.99 lets the
    teacher follow the student within a few hundred steps)."""
    temperature: float = 0.1
    """SimCLR InfoNCE temperature."""
    export: str = "teacher"
    """DINO: which tower becomes the stage's output, teacher (as DINO evaluates) | student."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "global_scale", tuple(float(s) for s in self.global_scale))
        object.__setattr__(self, "local_scale", tuple(float(s) for s in self.local_scale))
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ConfigError(f"pretrain.ssl.{name} must satisfy 0 < low <= high <= 1, got {(lo, hi)}")
        if self.local_crops < 0 or self.local_size < 1 or min(self.out_dim, self.head_hidden, self.head_bottleneck) < 1:
            raise ConfigError("pretrain.ssl.local_crops must be >= 0; local_size, out_dim and head widths >= 1")
        if min(self.student_temp, self.teacher_temp, self.temperature) <= 0:
            raise ConfigError("pretrain.ssl temperatures (student_temp, teacher_temp, temperature) must be > 0")
        if not (0.0 <= self.center_momentum < 1.0 and 0.0 <= self.teacher_momentum <= 1.0):
            raise ConfigError("pretrain.ssl.center_momentum must be in [0, 1) and teacher_momentum in [0, 1]")
        if self.export not in ("teacher", "student"):
            raise ConfigError(f"pretrain.ssl.export must be teacher or student, got {self.export!r}")


def random_views(images: Any, n_views: int, size: int, scale: tuple[float, float], augment: Any, seed: int) -> list:
    """`n_views` random crops of each image, resized to `size`, each then augmented by `batch_augment`.

    Args:
        images: (B, 1, S, S) float32 in [0, 1].
        n_views: crops per image.
        size: output side in pixels.
        scale: (low, high) area share of the image a crop covers; aspect ratio log-uniform in [3/4, 4/3].
        augment: `AugmentConfig` of the photometric (and mild affine) augmentation.
        seed: the draw's seed (a function of step: resume replays it).

    Returns:
        `n_views` tensors (B, 1, size, size) float32 in [0, 1].
    """
    import torch
    import torch.nn.functional as F

    from pipelines.recipes.classify import batch_augment

    g = torch.Generator().manual_seed(seed)
    b = images.shape[0]
    views = []
    for _ in range(n_views):
        area = scale[0] + (scale[1] - scale[0]) * torch.rand(b, generator=g)
        aspect = torch.exp((2 * torch.rand(b, generator=g) - 1) * math.log(4 / 3))
        w, h = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)  # (B,) half-sides / 1
        cx, cy = (2 * torch.rand(b, generator=g) - 1) * (1 - w), (2 * torch.rand(b, generator=g) - 1) * (1 - h)
        zero = torch.zeros(b)
        theta = torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)  # (B, size, size, 2)
        crop = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        views.append(batch_augment(crop, augment, int(torch.randint(2**31 - 1, (1,), generator=g))))
    return views


def build_joint_embedding(objective: str, tower: Any, ssl: SslConfig, steps: int) -> Any:
    """The trainable module of `objective` around `tower` (a `ViTModel`, trained in place as the student).

    Args:
        objective: dino | simclr.
        tower: the tower to train (`contrastive.build_tower`).
        ssl: views, head and temperatures.
        steps: the stage's optimiser steps (DINO's teacher-momentum schedule).

    Returns:
        An `nn.Module` whose `forward(global_views, local_views)` returns the scalar loss, with `trainable()`
        (parameters to optimise), `catch_up(step)` (pending teacher updates) and `tower_to_export()`.

    Raises:
        ConfigError: unknown objective.
    """
    import copy

    import torch
    import torch.nn.functional as F
    from torch import nn

    if objective not in OBJECTIVES:
        raise ConfigError(f"pretrain.objective must be mae or one of {OBJECTIVES}, got {objective!r}")
    dim = int(tower.config.hidden_size)

    def mlp(out: int) -> nn.Module:
        return nn.Sequential(nn.Linear(dim, ssl.head_hidden), nn.GELU(), nn.Linear(ssl.head_hidden, ssl.head_hidden),
                             nn.GELU(), nn.Linear(ssl.head_hidden, out))

    def cls_tokens(net: nn.Module, views: list) -> Any:
        """(len(views) * B, D) CLS embeddings; views of one size share a forward pass."""
        return net(pixel_values=torch.cat(views), interpolate_pos_encoding=True).last_hidden_state[:, 0]

    class DinoHead(nn.Module):
        """MLP -> L2-normalised bottleneck -> weight-normalised prototypes (norm fixed at 1, as DINO)."""

        def __init__(self) -> None:
            super().__init__()
            self.mlp = mlp(ssl.head_bottleneck)
            self.prototypes = nn.Parameter(torch.randn(ssl.out_dim, ssl.head_bottleneck) / math.sqrt(ssl.head_bottleneck))

        def forward(self, x: Any) -> Any:
            return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.prototypes, dim=-1).T  # (N, K)

    class Dino(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student, self.student_head = tower, DinoHead()
            self.teacher, self.teacher_head = copy.deepcopy(tower), copy.deepcopy(self.student_head)
            for p in [*self.teacher.parameters(), *self.teacher_head.parameters()]:
                p.requires_grad_(False)
            self.register_buffer("center", torch.zeros(1, ssl.out_dim))
            self.register_buffer("teacher_updates", torch.zeros((), dtype=torch.int64))

        def trainable(self) -> list:
            return [*self.student.parameters(), *self.student_head.parameters()]

        def forward(self, global_views: list, local_views: list) -> Any:
            b = global_views[0].shape[0]
            student = [self.student_head(cls_tokens(self.student, global_views))]
            if local_views:
                student.append(self.student_head(cls_tokens(self.student, local_views)))
            s = F.log_softmax(torch.cat(student).float() / ssl.student_temp, -1).split(b)  # views x (B, K)
            with torch.no_grad():
                t_logits = self.teacher_head(cls_tokens(self.teacher, global_views)).float()  # (2B, K)
                t = F.softmax((t_logits - self.center) / ssl.teacher_temp, -1).split(b)
            pairs = [-(t[i] * s[v]).sum(-1).mean() for i in range(len(t)) for v in range(len(s)) if v != i]
            with torch.no_grad():  # the loss above used the old center
                batch_center = t_logits.mean(0, keepdim=True)  # (1, K)
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.all_reduce(batch_center)
                    batch_center /= torch.distributed.get_world_size()
                self.center.mul_(ssl.center_momentum).add_(batch_center, alpha=1 - ssl.center_momentum)
            return torch.stack(pairs).mean()

        @torch.no_grad()
        def catch_up(self, step: int) -> None:
            """Apply the teacher EMA of every optimiser step before `step` not applied yet (at most one)."""
            while int(self.teacher_updates) < step:
                k = int(self.teacher_updates)
                m = 1 - (1 - ssl.teacher_momentum) * (math.cos(math.pi * k / max(steps, 1)) + 1) / 2
                for pair in ((self.teacher, self.student), (self.teacher_head, self.student_head)):
                    for pt, ps in zip(pair[0].parameters(), pair[1].parameters(), strict=True):
                        pt.mul_(m).add_(ps.detach(), alpha=1 - m)
                self.teacher_updates += 1

        def tower_to_export(self) -> Any:
            return self.teacher if ssl.export == "teacher" else self.student

    class SimClr(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student, self.projection = tower, mlp(ssl.head_bottleneck)

        def trainable(self) -> list:
            return [*self.student.parameters(), *self.projection.parameters()]

        def forward(self, global_views: list, local_views: list) -> Any:
            b = global_views[0].shape[0]
            z = F.normalize(self.projection(cls_tokens(self.student, global_views[:2])).float(), dim=-1)  # (2B, d)
            sim = (z @ z.T) / ssl.temperature  # (2B, 2B)
            sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=sim.device), float("-inf"))
            positive = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(sim.device)  # view i <-> i +- B
            return F.cross_entropy(sim, positive)

        def catch_up(self, step: int) -> None:
            """No teacher."""

        def tower_to_export(self) -> Any:
            return self.student

    return Dino() if objective == "dino" else SimClr()


def joint_embedding_loss(model: Any, forward: Any, images: Any, ssl: SslConfig, augment: Any, image_size: int,
                         mean: Any, std: Any, device: Any, step_seed: Callable[[list[int], int], int],
                         local_views: bool) -> Callable[[list[int], int], Any]:
    """The loop's `loss_fn(indices, step)` of a joint-embedding model.

    Args:
        model: the module of `build_joint_embedding` (unwrapped: its teacher is caught up here).
        forward: what computes the loss (the DDP wrapper under DDP, else `model`).
        images: (N, S, S) float32 tensor in [0, 1], the whole unlabelled set.
        ssl: views settings.
        augment: `AugmentConfig` applied to every view.
        image_size: side S of a global crop (the tower's input size).
        mean, std: (1, 3, 1, 1) processor normalisation.
        device: where the model runs.
        step_seed: `(indices, step) -> seed` of the step's draws.
        local_views: draw DINO's local crops.

    Returns:
        `loss_fn` for `pipelines.training.loop.run_loop`.
    """

    def normalise(view: Any) -> Any:
        return ((view.expand(-1, 3, -1, -1) - mean) / std).to(device)  # (B, 3, s, s)

    def loss_fn(indices: list[int], step: int) -> Any:
        model.catch_up(step)  # the teacher EMA of the previous optimiser step (no after-step hook in the loop)
        seed = step_seed(indices, step)
        x = images[indices][:, None]  # (B, 1, S, S)
        globals_ = random_views(x, 2, image_size, ssl.global_scale, augment, seed)
        locals_ = random_views(x, ssl.local_crops, ssl.local_size, ssl.local_scale, augment, seed + 1) \
            if local_views and ssl.local_crops else []
        return forward([normalise(v) for v in globals_], [normalise(v) for v in locals_])

    return loss_fn
