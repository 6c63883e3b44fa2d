"""Stage 2: LoRA on the decoder (projector trainable), reports mixed with question/answer pairs.

`freeze_for_stage(model, 2)` leaves exactly the LoRA adapters (decoder; tower too when
`model.lora.vision_target_modules` is set) and the projector trainable. A share
`lora.qa_fraction` of the examples are report-derived questions ("Is there a pleural
effusion?" -> "Yes. Small left pleural effusion.") so that the model also answers clinicians'
questions about the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvlm.build import MedVLM
from pipelines.training.common import ExampleBuilder, Runtime, StageResult, TrainConfig, run_loop, wrap_ddp


def load_bundle(checkpoint: Path, rt: Runtime) -> MedVLM:
    """A stage-1 checkpoint reloaded with its adapter trainable (stage 2 run on its own)."""
    from medvlm.checkpoint import load_checkpoint

    bundle = load_checkpoint(checkpoint, trainable=True)
    bundle.model.to(rt.device)
    return bundle


def run_lora(cfg: TrainConfig, bundle: MedVLM, dataset: Any, stage_dir: Path, rt: Runtime, tracker: Any) -> StageResult:
    """Run stage 2 on `bundle` in place (resuming from `stage_dir` state when there is one)."""
    from medvlm.build import freeze_for_stage
    from pipelines.training.transforms import build_train_transforms

    freeze_for_stage(bundle.model, 2)
    params = [p for p in bundle.model.parameters() if p.requires_grad]
    bundle.model.train()
    augment = build_train_transforms(cfg.data.augment, cfg.model.image_size, seed=cfg.seed + 2)
    builder = ExampleBuilder(bundle, dataset, augment, cfg.seed + 2, cfg.lora.qa_fraction, rt.device)
    ddp = wrap_ddp(bundle.model, rt)
    forward = ddp if ddp is not None else bundle.model

    def loss_fn(indices: list[int], step: int) -> Any:
        return forward(**builder.batch(indices, step)).loss

    return run_loop(
        stage="lora",
        module=bundle.model,
        params=params,
        loss_fn=loss_fn,
        n_items=len(dataset),
        loop=cfg.lora,
        stage_dir=stage_dir,
        rt=rt,
        seed=cfg.seed + 2,
        resume=cfg.resume,
        stop_after=cfg.stop_after,
        tracker=tracker,
        ddp=ddp,
    )
