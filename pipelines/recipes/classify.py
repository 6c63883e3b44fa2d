"""Stage 0b: the findings head (classification-guided drafting, as PromptMRG and RaDialog do).

A multi-label head (`medvlm.heads`) on the vision tower learns the CheXpert findings of each
training study, with sides, from the report labeler's labels of its report (`medvlm.labeler`; no
other annotation). With `classify.train_vision` the tower trains with it (binary cross-entropy), so
the tower that stages 1/2 then read, frozen, separates the findings too:

    labels = labeler(report)                        -> (K,) multi-hot targets, sides included
    logits = head(tower(augmented views))           (B, K)
    loss   = BCE(logits, labels)

Outputs in `out_dir/stage0b_classify/`: `vision_tower.safetensors` (the tuned tower; stages 1/2
start from it through `vision_init`) and `findings_head.safetensors` + `findings_head.json` (the head;
`head_init`), which the LLaVA stages attach to the model: their prompts then carry the head's findings
("Image classifier: left pleural effusion."), and every checkpoint saves the head with its manifest.

Run alone: `python -m pipelines.recipes.classify CONFIG [key=value ...]` (starts from stage 0's tower
when `out_dir/stage0_contrastive/` is done; resumes from `state/`); `pipelines.recipes.train` runs it
after stage 0 when `stages` lists `classify`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.errors import ConfigError
from pipelines.training.config import TrainConfig, config_from_argv
from pipelines.training.loop import StageResult, run_loop
from pipelines.training.runtime import Runtime, wrap_ddp
from pipelines.training.sampling import sample_seed
from pipelines.training.session import TOWER_FILE, Session, training_session

if TYPE_CHECKING:
    from medvlm.build import MedVLM
    from medvlm.heads import FindingsClassifier
    from pipelines.tracking.tracker import Tracker
    from pipelines.training.datasets import StudyDataset
    from pipelines.training.transforms import AugmentConfig

STAGE = "classify"


def label_targets(dataset: StudyDataset, targets: tuple[str, ...]) -> Any:
    """(N, K) float32 multi-hot targets from the labeler's labels of each training report."""
    import numpy as np

    from medvlm.heads import targets_from_labels
    from medvlm.labeler import label_report

    return np.stack([targets_from_labels(label_report(r.report), targets) for r in dataset.records])


def batch_augment(images: Any, cfg: AugmentConfig, seed: int) -> Any:
    """`pipelines.training.transforms`' mild augmentation applied to a whole batch at once (never flips).

    Per sample, each with its probability: affine (rotation, shift, zoom; border padding), contrast gamma,
    intensity scaling, Gaussian noise. One batched `grid_sample` instead of a MONAI pipeline per image:
    the head stage draws 64+ views a step, where per-image MONAI calls cost more than the tower itself.

    Args:
        images: (B, 1, S, S) float32 in [0, 1].
        cfg: augmentation strength (`data.augment`).
        seed: the draw's seed (a function of step and stage: resume repeats it exactly).

    Returns:
        (B, 1, S, S) float32 in [0, 1].
    """
    import math

    import torch
    import torch.nn.functional as F

    if not cfg.enabled:
        return images
    g = torch.Generator().manual_seed(seed)
    b = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=g)

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=g) < p).float()

    on = chance(cfg.affine_prob)
    angle = uniform(-math.radians(cfg.rotate_degrees), math.radians(cfg.rotate_degrees)) * on
    zoom = 1.0 + uniform(-cfg.scale_range, cfg.scale_range) * on
    shift = torch.stack([uniform(-1, 1), uniform(-1, 1)], 1) * 2 * cfg.translate_fraction * on[:, None]  # (B, 2)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    view = (b, 1, 1, 1)
    gamma = torch.where(chance(cfg.contrast_prob) > 0, uniform(*cfg.gamma_range), torch.ones(b))
    out = out.clamp_min(1e-6) ** gamma.view(view)
    out = out * (1.0 + uniform(-cfg.intensity_scale, cfg.intensity_scale) * chance(cfg.contrast_prob)).view(view)
    noise = torch.randn(out.shape, generator=g) * cfg.noise_std * chance(cfg.noise_prob).view(view)
    return (out + noise).clamp(0.0, 1.0)


def _classifier_module(tower: Any, head: FindingsClassifier) -> Any:
    """Tower + head as one module, so that resume state and DDP cover both."""
    from torch import nn

    class _Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower = tower
            self.head = head.module

        def forward(self, pixel_values: Any) -> Any:
            return head.logits(self.tower, pixel_values)

    return _Model()


def run_classify(
    cfg: TrainConfig, dataset: StudyDataset, stage_dir: Path, rt: Runtime, tracker: Tracker
) -> tuple[StageResult, FindingsClassifier]:
    """Train the head (and the tower with `train_vision`), save both (rank 0).

    Returns:
        (stage result, the trained head).
    """
    import numpy as np
    import torch

    from medvlm.heads import FindingsClassifier, HeadSpec, study_views
    from medvlm.processor import resize_float
    from pipelines.recipes.contrastive import build_tower
    from pipelines.training.datasets import StudyDataset as Dataset

    kcfg = cfg.classify
    if cfg.model.init_from is not None:
        raise ConfigError("the classify stage trains a head on medvlm's own tower: drop it from stages with "
                          "model.init_from")
    tower, _ = build_tower(cfg.model)
    if cfg.vision_init:
        from safetensors.torch import load_file

        tower.load_state_dict(load_file(cfg.vision_init), strict=True)
    spec = HeadSpec(width=tower.config.hidden_size, hidden=kcfg.hidden, views=kcfg.views, threshold=kcfg.threshold,
                    conv=tuple(kcfg.conv))
    head = FindingsClassifier.create(spec, seed=cfg.seed)
    targets = torch.from_numpy(label_targets(dataset, spec.targets))  # (N, K)
    pos_weight = None
    if kcfg.balance:  # sqrt(neg / pos) per target; a target with no positive gets weight 1
        pos = targets.sum(0)
        pos_weight = torch.where(pos > 0, ((len(targets) - pos) / pos.clamp_min(1)).sqrt().clamp(1, 10), 1.0)
    if kcfg.views > dataset.max_views:  # the lateral view too, from the same image cache
        dataset = Dataset(dataset.records, dataset.cache, kcfg.views)
    model = _classifier_module(tower, head)
    tower.requires_grad_(kcfg.train_vision)
    model.to(rt.device).train()
    ddp = wrap_ddp(model, rt)
    forward = ddp if ddp is not None else model

    mean = torch.tensor(cfg.model.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.model.image_std).view(1, 3, 1, 1)

    def loss_fn(indices: list[int], step: int) -> Any:
        views = [v for i in indices for v in study_views(dataset.images(i), spec.views)]
        pixels = torch.from_numpy(np.stack([resize_float(v, cfg.model.image_size) for v in views]))[:, None]
        pixels = batch_augment(pixels, cfg.data.augment, sample_seed(cfg.seed + 1, step, indices[0]))
        logits = forward(((pixels.expand(-1, 3, -1, -1) - mean) / std).to(rt.device))  # (B, K)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits.float(), targets[indices].to(rt.device),
            pos_weight=pos_weight.to(rt.device) if pos_weight is not None else None)

    result = run_loop(
        stage=STAGE,
        module=model,
        params=[p for p in model.parameters() if p.requires_grad],
        loss_fn=loss_fn,
        n_items=len(dataset),
        loop=kcfg,
        stage_dir=stage_dir,
        rt=rt,
        seed=cfg.seed + 1,
        resume=cfg.resume,
        stop_after=cfg.stop_after,
        tracker=tracker,
        ddp=ddp,
    )
    model.eval()
    if result.finished and rt.is_main:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items()}, str(stage_dir / TOWER_FILE))
        head.save(stage_dir)
    return result, head


def run_stage(session: Session, bundle: MedVLM | None = None) -> MedVLM | None:
    """Stage 0b inside a session: skipped when done; either way later stages start from its tower and head.

    Args:
        session: the process's runtime, tracker, data and run folder.
        bundle: passed through untouched (the LLaVA stages attach the head through `head_init`).

    Returns:
        `bundle`.
    """
    stage_dir = session.stage_dir(STAGE)
    if not session.skip_if_done(STAGE):
        result, _ = run_classify(session.cfg, session.dataset, stage_dir, session.rt, session.tracker)
        if not session.end_stage(STAGE, result, None):
            return bundle
    session.cfg = dataclasses.replace(session.cfg, vision_init=str(stage_dir / TOWER_FILE), head_init=str(stage_dir))
    return bundle


def main(argv: list[str] | None = None) -> None:
    """`python -m pipelines.recipes.classify CONFIG [k=v ...]`: stage 0b alone, with the run YAML's settings."""
    cfg = config_from_argv(sys.argv[1:] if argv is None else argv, "pipelines.recipes.classify", (STAGE,))
    with training_session(cfg, f"{STAGE}_summary.json") as session:
        session.pick_up_earlier(STAGE)
        run_stage(session)
    print(json.dumps({k: session.summary[k] for k in ("stages", "stopped", "world_size")}))


if __name__ == "__main__":  # pragma: no cover - tests call main() directly
    main()
