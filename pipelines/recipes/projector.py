"""Stage 1: projector alignment (LLaVA stage 1), on (study, report) pairs.

Only the projector trains (where it lives comes from the family table: LLaVA's
`multi_modal_projector`, Qwen2-VL's `visual.merger`, Idefics3's `connector`, ...), with the vision
tower and the decoder frozen: the projector learns to
map image features into the decoder's embedding space. That presumes a decoder that can already
write. A decoder built **from scratch** (no `model.decoder.path`, the phantom demo) has random
weights, and a frozen random decoder cannot learn to write whatever the projector does; so such
configs set `projector.train_decoder: full`: the decoder (and its report-trained BPE tokenizer)
trains here too, and stage 2 then adapts it with LoRA. `TrainConfig` refuses the other choice.

Run alone: `python -m pipelines.recipes.projector CONFIG [key=value ...]` (starts from stage 0's
tower when `out_dir/stage0_contrastive/` is done); `pipelines.recipes.train` runs it after stage 0.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.families import FamilySpec, own_family
from pipelines.training.bundles import build_bundle, enable_gradient_checkpointing
from pipelines.training.config import ProjectorStageConfig, TrainConfig, config_from_argv
from pipelines.training.examples import ExampleBuilder
from pipelines.training.loop import StageResult, run_loop
from pipelines.training.runtime import Runtime, wrap_ddp
from pipelines.training.session import Session, training_session

if TYPE_CHECKING:
    from torch import nn

    from medvlm.build import MedVLM
    from pipelines.tracking.tracker import Tracker
    from pipelines.training.datasets import StudyDataset

STAGE = "projector"


def set_trainable(model: nn.Module, pcfg: ProjectorStageConfig, family: FamilySpec | None = None) -> list[nn.Parameter]:
    """Freeze all but the projector (+ the decoder when `train_decoder=full`, + the tower when
    `train_vision`); LoRA adapters stay frozen in this stage.

    Args:
        model: the model (`MedVLM.model`).
        pcfg: the stage settings.
        family: where projector, decoder and tower live (`bundle.family`); default medvlm's own LLaVA.

    Returns:
        The trainable parameters.
    """
    family = family or own_family()
    projector, decoder, vision = (re.compile(p) for p in (family.projector, family.decoder, family.vision))
    params = []
    for name, p in model.named_parameters():
        train = bool(projector.search(name))
        if "lora_" not in name:
            if pcfg.train_decoder == "full" and (decoder.search(name) or "lm_head" in name):
                train = True
            if pcfg.train_vision and vision.search(name):
                train = True
        p.requires_grad_(train)
        if train:
            params.append(p)
    return params


def run_projector(
    cfg: TrainConfig, bundle: MedVLM, dataset: StudyDataset, stage_dir: Path, rt: Runtime, tracker: Tracker
) -> StageResult:
    """Run stage 1 on `bundle` in place (resuming from `stage_dir` state when there is one)."""
    from pipelines.training.transforms import build_train_transforms

    pcfg = cfg.projector
    params = set_trainable(bundle.model, pcfg, bundle.family)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(bundle.model)
    bundle.model.train()
    augment = build_train_transforms(cfg.data.augment, cfg.model.image_size, seed=cfg.seed)
    builder = ExampleBuilder(bundle, dataset, augment, cfg.seed, 0.0, rt.device)
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
        loop=pcfg,
        stage_dir=stage_dir,
        rt=rt,
        seed=cfg.seed,
        resume=cfg.resume,
        stop_after=cfg.stop_after,
        tracker=tracker,
        ddp=ddp,
    )


def run_stage(session: Session, bundle: MedVLM | None = None) -> MedVLM:
    """Stage 1 inside a session: skipped when done (its checkpoint is reloaded), else trained.

    Args:
        session: the process's runtime, tracker, data and run folder.
        bundle: the model to train; None builds one (tower from `session.cfg.vision_init`).

    Returns:
        The trained (or reloaded) bundle.
    """
    stage_dir = session.stage_dir(STAGE)
    if session.skip_if_done(STAGE):
        return session.reload_stage(STAGE)
    if bundle is None:
        bundle = build_bundle(session.cfg, session.dataset, stage_dir, session.rt)
    session.note_model(bundle)
    result = run_projector(session.cfg, bundle, session.dataset, stage_dir, session.rt, session.tracker)
    session.end_stage(STAGE, result, bundle)
    return bundle


def main(argv: list[str] | None = None) -> None:
    """`python -m pipelines.recipes.projector CONFIG [k=v ...]`: stage 1 alone, with the run YAML's settings."""
    cfg = config_from_argv(sys.argv[1:] if argv is None else argv, "pipelines.recipes.projector", (STAGE,))
    with training_session(cfg, f"{STAGE}_summary.json") as session:
        run_stage(session, session.pick_up_earlier(STAGE))
    print(json.dumps({k: session.summary[k] for k in ("stages", "stopped", "world_size")}))


if __name__ == "__main__":  # pragma: no cover - tests call main() directly
    main()
