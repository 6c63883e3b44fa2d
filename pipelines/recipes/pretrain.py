"""Stage "pretrain": self-supervised domain adaptation of the ViT tower on a site's own unlabelled images.

No labels and no reports. `pretrain.objective` picks the objective: `dino` (self-distillation) or `simclr`
(InfoNCE) from `pipelines.recipes.pretrain_ssl`, whose CLS embedding a frozen-feature probe reads directly, or
`mae` (the default), masked-image modelling with transformers' `ViTMAEForPreTraining` (He et al., 2022).
For MAE each image is cut into patches, `mask_ratio` of them are hidden, the encoder (exactly the model's ViT
tower: same widths, depth, patch and image size) reads the visible ones, and a small decoder reconstructs them:

    patches = patchify(augment(x))                   (B, N, P*P*3)
    keep    = argsort(noise)[:, : N * (1 - r)]       noise drawn from (seed, step): resume replays it
    z       = encoder(patches[keep] + pos)           (B, N(1-r)+1, D)
    loss    = MSE(decoder(z, mask tokens), norm(patches))  on the hidden patches only

The encoder's (DINO: the teacher's) weights then initialise the later stages' tower. Outputs in
`out_dir/stage_pretrain/`:

    vision_tower/               a Hugging Face `ViTModel` folder: `model.vision.path` of a recipe loads it
    vision_tower.safetensors    the same weights as a state dict (`vision_init`, strict)
    state/, done.json           resume state and the finished marker (as every stage)

Images come from a folder (recursive: PNG/JPEG, or DICOM read through `dicom_io`), gated to chest radiographs
(`dicom_io.gate.load_chest_image`: rejected files are counted, not trained on) and kept once per byte-identical
copy. Class subfolders and any labels are ignored.

    python -m pipelines.recipes.pretrain pipelines/configs/pretrain_kermany_dino.yaml [key=value ...]
    torchrun --nproc_per_node=N -m pipelines.recipes.pretrain CONFIG        (DDP; rank 0 writes)
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlm.config import ModelConfig, apply_overrides
from medvlm.errors import ConfigError
from pipelines.recipes.pretrain_ssl import OBJECTIVES, SslConfig, build_joint_embedding, joint_embedding_loss
from pipelines.training.config import PRECISIONS, LoopConfig, _build, config_dict, parse_overrides
from pipelines.training.loop import StageResult, run_loop
from pipelines.training.runtime import Runtime, barrier, close_runtime, setup_runtime, wrap_ddp
from pipelines.training.sampling import sample_seed
from pipelines.training.session import DONE_FILE, TOWER_FILE, build_tracker
from pipelines.training.state import write_json
from pipelines.training.transforms import AugmentConfig

STAGE = "pretrain"
STAGE_DIR = "stage_pretrain"
TOWER_DIR = "vision_tower"
"""Hugging Face folder of the pretrained tower (`model.vision.path` of the next recipe)."""
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainStageConfig(LoopConfig):
    """The pretrain stage: loop settings, the objective, MAE's settings and (discarded) decoder, DINO/SimCLR's."""

    objective: str = "mae"
    """mae | dino | simclr. MAE needs fine-tuning to pay off; DINO/SimCLR train the CLS embedding a probe reads."""
    ssl: SslConfig = field(default_factory=SslConfig)
    """Views, heads, temperatures and teacher EMA of dino / simclr (`pipelines.recipes.pretrain_ssl`)."""
    mask_ratio: float = 0.75
    """Share of patches hidden from the encoder (MAE's 75%: radiographs are as redundant as photographs)."""
    norm_pix_loss: bool = True
    """Reconstruct per-patch normalised pixels (MAE: better features than raw pixels)."""
    decoder_hidden_size: int = 64
    """Width of the reconstruction decoder (thrown away after pretraining: keep it small)."""
    decoder_num_layers: int = 2
    """Decoder depth."""
    decoder_num_heads: int = 4
    """Decoder attention heads."""
    decoder_intermediate_size: int = 128
    """Decoder MLP width."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"pretrain.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.objective != "mae" and self.objective not in OBJECTIVES:
            raise ConfigError(f"pretrain.objective must be mae, dino or simclr, got {self.objective!r}")


@dataclass(frozen=True)
class ImageDataConfig:
    """A folder of unlabelled images."""

    dir: str = "../shared/data/kermany"
    """Folder searched recursively for PNG/JPEG/DICOM images (subfolders and labels ignored)."""
    max_images: int | None = None
    """Use at most this many unique images (name order; quick runs); None: all."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Mild augmentation (never flips: `pipelines.training.transforms`)."""


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run (YAML `pipelines/configs/pretrain_*.yaml`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model whose ViT tower is pretrained (only `image_size`, `image_mean/std` and `vision` are read)."""
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    """The unlabelled images."""
    pretrain: PretrainStageConfig = field(default_factory=PretrainStageConfig)
    """Steps, batch, optimiser and the MAE objective."""
    out_dir: str = "var/runs/pretrain"
    """Run folder (`stage_pretrain/` inside)."""
    run_name: str = "pretrain"
    """Name of the tracked run."""
    seed: int = 0
    """Seed of data order, masks and augmentation (the tower's init uses `model.seed`)."""
    precision: str = "auto"
    """auto: bfloat16 autocast on CUDA, float32 on CPU | float32 | bfloat16."""
    resume: bool = True
    """Continue from the latest resume state in `out_dir` when there is one."""
    stop_after: int | None = None
    """Stop after this many optimiser steps in this process (simulates a kill)."""
    tracking: str = "mlflow"
    """mlflow | none."""
    tracking_uri: str | None = None
    """MLflow store URI; None: the embedded default."""
    num_threads: int | None = None
    """torch CPU threads; None: torch's default."""

    def __post_init__(self) -> None:
        if self.model.vision.kind != "vit" or self.model.init_from is not None or self.model.vision.path:
            raise ConfigError("pretrain builds a ViT tower from the config (its objectives train a ViT): set "
                              "model.vision.kind=vit and leave model.init_from and model.vision.path unset")
        if self.precision not in PRECISIONS or self.tracking not in ("mlflow", "none"):
            raise ConfigError(f"precision must be one of {PRECISIONS} and tracking mlflow or none")
        if self.stop_after is not None and self.stop_after < 1:
            raise ConfigError(f"stop_after must be >= 1 or null, got {self.stop_after}")
        patch = self.model.vision.patch_size
        if self.pretrain.objective == "dino" and self.pretrain.ssl.local_crops and self.pretrain.ssl.local_size % patch:
            raise ConfigError(f"pretrain.ssl.local_size={self.pretrain.ssl.local_size} must be a multiple of "
                              f"model.vision.patch_size={patch}")


def load_pretrain_config(path: str | Path, overrides: Sequence[str] = ()) -> PretrainConfig:
    """The YAML at `path` with `key=value` overrides (dotted keys), validated.

    Raises:
        ConfigError: unknown key, bad value (the message names the key).
    """
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return _build(PretrainConfig, apply_overrides(data, parse_overrides(overrides)), "")


def mae_config(cfg: PretrainConfig) -> Any:
    """The `ViTMAEConfig` whose encoder is exactly the model's ViT tower (`build_vision_config`)."""
    from transformers import ViTMAEConfig

    from medvlm.build import build_vision_config

    vit = build_vision_config(cfg.model.vision, cfg.model.image_size)
    p = cfg.pretrain
    return ViTMAEConfig(
        hidden_size=vit.hidden_size, num_hidden_layers=vit.num_hidden_layers, num_attention_heads=vit.num_attention_heads,
        intermediate_size=vit.intermediate_size, hidden_act=vit.hidden_act, layer_norm_eps=vit.layer_norm_eps,
        qkv_bias=vit.qkv_bias, image_size=vit.image_size, patch_size=vit.patch_size, num_channels=vit.num_channels,
        decoder_hidden_size=p.decoder_hidden_size, decoder_num_hidden_layers=p.decoder_num_layers,
        decoder_num_attention_heads=p.decoder_num_heads, decoder_intermediate_size=p.decoder_intermediate_size,
        mask_ratio=p.mask_ratio, norm_pix_loss=p.norm_pix_loss,
    )


def load_images(cfg: PretrainConfig) -> tuple[Any, dict[str, Any]]:
    """Every unique, gate-accepted image of `cfg.data.dir`, decoded at the tower's size.

    Returns:
        ((N, S, S) float32 array in [0, 1], counts: found, unique, rejected by the gate, used).

    Raises:
        pipelines.training.datasets.DatasetError: no usable image.
    """
    import numpy as np

    from dicom_io.errors import DicomIOError
    from dicom_io.gate import load_chest_image
    from pipelines.training.datasets import DatasetError
    from pipelines.training.image_folder import list_images, unique_files

    found = list_images(cfg.data.dir)
    unique = unique_files(found)
    images, rejected = [], 0
    for path in unique:
        if cfg.data.max_images is not None and len(images) >= cfg.data.max_images:
            break
        try:
            pixels, _ = load_chest_image(path, size=cfg.model.image_size)
        except DicomIOError:
            rejected += 1  # not a chest radiograph, unreadable ...: skipped, counted
            continue
        images.append(np.asarray(pixels, dtype=np.float32))
    if not images:
        raise DatasetError(f"{cfg.data.dir}: no chest radiograph found to pretrain on ({len(found)} files)")
    from compliance.clock import sha256_file

    digest = hashlib.sha256("".join(sorted(sha256_file(p) for p in unique)).encode()).hexdigest()
    counts = {"found": len(found), "unique": len(unique), "rejected": rejected, "used": len(images), "hash": digest}
    return np.stack(images), counts


def _tower_from_mae(cfg: PretrainConfig, mae: Any) -> Any:
    """The model's ViT tower (as `build_model` builds it) carrying the MAE encoder's weights.

    Every encoder weight is copied; only the tower's pooler (absent from MAE) keeps its seeded init.

    Raises:
        ValueError: an encoder weight has no place in the tower, or a tower weight other than the pooler is missing.
    """
    from pipelines.recipes.contrastive import build_tower

    tower, _ = build_tower(cfg.model)
    encoder = {k: v.detach().cpu() for k, v in mae.vit.state_dict().items()}
    missing, unexpected = tower.load_state_dict(encoder, strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ValueError(f"MAE encoder and tower differ: missing {missing}, unexpected {unexpected}")
    return tower


def _mae_parts(cfg: PretrainConfig, images: Any, rt: Runtime) -> tuple[Any, Any, list, Any, Any]:
    """(module, DDP wrapper or None, trainable parameters, loop `loss_fn`, export: () -> tower) of MAE."""
    import torch
    from transformers import ViTMAEForPreTraining

    from pipelines.recipes.classify import batch_augment

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.model.seed)
        mae = ViTMAEForPreTraining(mae_config(cfg))
    mae.to(rt.device).train()
    ddp = wrap_ddp(mae, rt)
    forward = ddp if ddp is not None else mae
    mean = torch.tensor(cfg.model.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.model.image_std).view(1, 3, 1, 1)
    n_patches = (cfg.model.image_size // cfg.model.vision.patch_size) ** 2
    pixels_all = torch.from_numpy(images)

    def loss_fn(indices: list[int], step: int) -> Any:
        seed = sample_seed(cfg.seed, step, indices[0])  # masks and augmentation: a function of the step
        x = batch_augment(pixels_all[indices][:, None], cfg.data.augment, seed)  # (B, 1, S, S)
        noise = torch.rand(len(indices), n_patches, generator=torch.Generator().manual_seed(seed))  # (B, N)
        pv = ((x.expand(-1, 3, -1, -1) - mean) / std).to(rt.device)  # (B, 3, S, S)
        return forward(pixel_values=pv, noise=noise.to(rt.device)).loss

    return mae, ddp, list(mae.parameters()), loss_fn, lambda: _tower_from_mae(cfg, mae)


def _joint_embedding_parts(cfg: PretrainConfig, images: Any, rt: Runtime) -> tuple[Any, Any, list, Any, Any]:
    """(module, DDP wrapper or None, trainable parameters (student + head), `loss_fn`, export) of DINO / SimCLR."""
    import torch

    from pipelines.recipes.contrastive import build_tower

    p = cfg.pretrain
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.model.seed)  # the heads' init: a function of the config, not of the process's history
        model = build_joint_embedding(p.objective, build_tower(cfg.model)[0], p.ssl, p.steps)
    model.to(rt.device).train()
    ddp = wrap_ddp(model, rt)
    loss_fn = joint_embedding_loss(
        model, ddp if ddp is not None else model, torch.from_numpy(images), p.ssl, cfg.data.augment,
        cfg.model.image_size, torch.tensor(cfg.model.image_mean).view(1, 3, 1, 1),
        torch.tensor(cfg.model.image_std).view(1, 3, 1, 1), rt.device,
        lambda indices, step: sample_seed(cfg.seed, step, indices[0]), local_views=p.objective == "dino",
    )

    def export() -> Any:
        model.catch_up(p.steps)  # the last optimiser step's teacher update
        tower = build_tower(cfg.model)[0]  # same class and keys as the later stages' tower: a strict copy
        tower.load_state_dict({k: v.detach().cpu() for k, v in model.tower_to_export().state_dict().items()})
        return tower

    return model, ddp, model.trainable(), loss_fn, export


def run_pretrain(cfg: PretrainConfig, images: Any, stage_dir: Path, rt: Runtime, tracker: Any) -> StageResult:
    """Train the objective on `images` (N, S, S); when finished, save its tower (rank 0)."""
    parts = _mae_parts if cfg.pretrain.objective == "mae" else _joint_embedding_parts
    module, ddp, trainable, loss_fn, export = parts(cfg, images, rt)
    result = run_loop(
        stage=STAGE, module=module, params=[p for p in trainable if p.requires_grad], loss_fn=loss_fn,
        n_items=len(images), loop=cfg.pretrain, stage_dir=stage_dir, rt=rt, seed=cfg.seed, resume=cfg.resume,
        stop_after=cfg.stop_after, tracker=tracker, ddp=ddp,
    )
    if result.finished and rt.is_main:
        from safetensors.torch import save_file

        tower = export()
        tower.save_pretrained(str(stage_dir / TOWER_DIR))
        save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(stage_dir / TOWER_FILE))
    return result


def run(cfg: PretrainConfig) -> dict[str, Any]:
    """Parse-free entry: runtime, tracker, images, the stage, summary (`out_dir/pretrain_summary.json`).

    Returns:
        The summary: stage result (or "skipped": done), image counts, tower paths, `stopped`.
    """
    rt = setup_runtime(cfg)
    try:
        out = Path(cfg.out_dir)
        stage_dir = out / STAGE_DIR
        summary: dict[str, Any] = {"stopped": False, "world_size": rt.world_size,
                                   "tower_dir": str(stage_dir / TOWER_DIR), "tower_file": str(stage_dir / TOWER_FILE)}
        if cfg.resume and (stage_dir / DONE_FILE).is_file():
            summary["stages"] = {STAGE: {**json.loads((stage_dir / DONE_FILE).read_text()), "skipped": "done"}}
            return summary
        tracker = build_tracker(cfg, rt)
        t0 = time.perf_counter()
        images, counts = load_images(cfg)
        summary.update(images=counts, image_decode_s=round(time.perf_counter() - t0, 2))
        tracker.start_run(cfg.run_name, config_dict(cfg), data_hash=counts["hash"])
        try:
            result = run_pretrain(cfg, images, stage_dir, rt, tracker)
            summary["stages"] = {STAGE: result.summary()}
            summary["stopped"] = not result.finished
            if rt.is_main:
                if result.finished:
                    write_json(stage_dir / DONE_FILE, result.summary())
                    tracker.log_metrics({f"{STAGE}/wall_s": result.wall_s})
                write_json(out / f"{STAGE}_summary.json", summary)
                tracker.log_dict(summary, f"{STAGE}_summary.json")
            barrier(rt)
            tracker.end_run("FINISHED")
        except BaseException:
            tracker.end_run("FAILED")
            raise
        return summary
    finally:
        close_runtime(rt)


def main(argv: list[str] | None = None) -> None:
    """`python -m pipelines.recipes.pretrain CONFIG [k=v ...]`: pretrain the tower, print the summary."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m pipelines.recipes.pretrain CONFIG [key=value ...]")
    summary = run(load_pretrain_config(argv[0], argv[1:]))
    print(json.dumps({k: summary[k] for k in ("stages", "stopped", "world_size", "tower_dir")}))


if __name__ == "__main__":  # pragma: no cover - tests call main() directly
    main()
