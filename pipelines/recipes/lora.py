"""Stage 2: LoRA on the decoder (projector trainable), reports mixed with question/answer pairs.

`freeze_for_stage(model, 2, family)` leaves exactly the LoRA adapters (decoder self-attention by
default; tower too when `model.lora.vision_target_modules` is set) and the projector trainable.
With `model.init_from` a Hugging Face folder of any supported family (`medvlm.families`) is the
starting point: LoRA targets come from the family table and examples from its chat template
(`pipelines/configs/train_lora_hf.yaml`). A share
`lora.qa_fraction` of the examples are report-derived questions ("Is there a pleural
effusion?" -> "Yes. Small left pleural effusion.") so that the model also answers clinicians'
questions about the image.

Run alone: `python -m pipelines.recipes.lora CONFIG [key=value ...]` (continues from the stage-1
checkpoint in `out_dir/stage1_projector/` when that stage is done, else builds a fresh model);
`pipelines.recipes.train` runs it last.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.training.bundles import build_bundle, enable_gradient_checkpointing
from pipelines.training.config import TrainConfig, config_from_argv
from pipelines.training.examples import ExampleBuilder
from pipelines.training.loop import StageResult, run_loop
from pipelines.training.runtime import Runtime, wrap_ddp
from pipelines.training.session import Session, training_session

if TYPE_CHECKING:
    from medvlm.build import MedVLM
    from pipelines.tracking.tracker import Tracker
    from pipelines.training.datasets import StudyDataset

STAGE = "lora"


def run_lora(
    cfg: TrainConfig, bundle: MedVLM, dataset: StudyDataset, stage_dir: Path, rt: Runtime, tracker: Tracker
) -> StageResult:
    """Run stage 2 on `bundle` in place (resuming from `stage_dir` state when there is one)."""
    from medvlm.build import freeze_for_stage
    from pipelines.training.transforms import build_train_transforms

    freeze_for_stage(bundle.model, 2, bundle.family)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(bundle.model)
    params = [p for p in bundle.model.parameters() if p.requires_grad]
    bundle.model.train()
    # seed + 2: stage 2 draws augmentation and QA templates independently of stage 1.
    augment = build_train_transforms(cfg.data.augment, cfg.model.image_size, seed=cfg.seed + 2)
    builder = ExampleBuilder(bundle, dataset, augment, cfg.seed + 2, cfg.lora.qa_fraction, rt.device)
    ddp = wrap_ddp(bundle.model, rt)
    forward = ddp if ddp is not None else bundle.model

    def loss_fn(indices: list[int], step: int) -> Any:
        return forward(**builder.batch(indices, step)).loss

    return run_loop(
        stage=STAGE,
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


def run_stage(session: Session, bundle: MedVLM | None = None) -> MedVLM:
    """Stage 2 inside a session: skipped when done (its checkpoint is reloaded), else trained.

    Args:
        session: the process's runtime, tracker, data and run folder.
        bundle: the model to adapt (stage 1's); None builds a fresh one.

    Returns:
        The trained (or reloaded) bundle.
    """
    stage_dir = session.stage_dir(STAGE)
    if session.skip_if_done(STAGE):
        return session.reload_stage(STAGE)
    if bundle is None:
        bundle = build_bundle(session.cfg, session.dataset, stage_dir, session.rt)
    session.note_model(bundle)
    result = run_lora(session.cfg, bundle, session.dataset, stage_dir, session.rt, session.tracker)
    session.end_stage(STAGE, result, bundle)
    return bundle


def main(argv: list[str] | None = None) -> None:
    """`python -m pipelines.recipes.lora CONFIG [k=v ...]`: stage 2 alone, with the run YAML's settings."""
    cfg = config_from_argv(sys.argv[1:] if argv is None else argv, "pipelines.recipes.lora", (STAGE,))
    with training_session(cfg, f"{STAGE}_summary.json") as session:
        run_stage(session, session.pick_up_earlier(STAGE))
    print(json.dumps({k: session.summary[k] for k in ("stages", "stopped", "world_size")}))


if __name__ == "__main__":  # pragma: no cover - tests call main() directly
    main()
