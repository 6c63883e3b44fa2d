"""Stage 1: projector alignment (LLaVA stage 1), on (study, report) pairs.

Only the projector trains, with the vision tower and the decoder frozen: the projector learns to
map image features into the decoder's embedding space. That presumes a decoder that can already
write. A decoder built **from scratch** (no `model.decoder.path`, the phantom demo) has random
weights, and a frozen random decoder cannot learn to write whatever the projector does; so such
configs set `projector.train_decoder: full`: the decoder (and its report-trained BPE tokenizer)
trains here too, and stage 2 then adapts it with LoRA. `TrainConfig` refuses the other choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvlm.build import LANGUAGE_MODEL_PATH, PROJECTOR_PATH, VISION_TOWER_PATH, MedVLM
from pipelines.training.common import (
    ExampleBuilder,
    ProjectorConfig,
    Runtime,
    StageResult,
    TrainConfig,
    run_loop,
    wrap_ddp,
)

TOKENIZER_DIR = "tokenizer"


def tokenizer_texts(dataset: Any) -> list[str]:
    """Texts a from-scratch BPE is trained on: training reports plus question/answer wording."""
    import numpy as np

    from pipelines.training.datasets import derive_qa_pairs

    texts = []
    rng = np.random.default_rng(0)
    for record in dataset.records:
        texts.append(record.report)
        texts += [f"{p.question} {p.answer}" for p in derive_qa_pairs(record.findings, record.impression, rng)]
    return texts


def build_bundle(cfg: TrainConfig, dataset: Any, stage_dir: Path, rt: Runtime) -> MedVLM:
    """Tokenizer + model for stage 1, the tower initialised from stage 0 when `cfg.vision_init` is set.

    A trained tokenizer is saved under `stage_dir/tokenizer` (rank 0) and reused on resume, so a
    resumed run sees exactly the vocabulary of the interrupted one.
    """
    from medvlm.build import build_model
    from medvlm.tokenizer import build_tokenizer
    from pipelines.training.common import barrier

    tokenizer = None
    if cfg.model.init_from is None:
        saved = stage_dir / TOKENIZER_DIR
        if cfg.model.tokenizer.path or cfg.model.decoder.path:
            tokenizer = build_tokenizer(cfg.model)
        elif (saved / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast

            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(saved), local_files_only=True)
        else:
            tokenizer = build_tokenizer(cfg.model, tokenizer_texts(dataset))
            if rt.is_main:
                tokenizer.save_pretrained(str(saved))
            barrier(rt)
    bundle = build_model(cfg.model, tokenizer)
    if cfg.vision_init:
        from safetensors.torch import load_file

        bundle.llava.model.vision_tower.load_state_dict(load_file(cfg.vision_init), strict=True)
    bundle.model.to(rt.device)
    return bundle


def set_trainable(model: Any, pcfg: ProjectorConfig) -> list[Any]:
    """Freeze all but the projector (+ the decoder when `train_decoder=full`, + the tower when
    `train_vision`); LoRA adapters stay frozen in this stage. Returns the trainable parameters."""
    params = []
    for name, p in model.named_parameters():
        train = PROJECTOR_PATH in name
        if "lora_" not in name:
            if pcfg.train_decoder == "full" and (f".{LANGUAGE_MODEL_PATH}." in f".{name}" or "lm_head" in name):
                train = True
            if pcfg.train_vision and VISION_TOWER_PATH in name:
                train = True
        p.requires_grad_(train)
        if train:
            params.append(p)
    return params


def run_projector(
    cfg: TrainConfig, bundle: MedVLM, dataset: Any, stage_dir: Path, rt: Runtime, tracker: Any
) -> StageResult:
    """Run stage 1 on `bundle` in place (resuming from `stage_dir` state when there is one)."""
    from pipelines.training.transforms import build_train_transforms

    pcfg = cfg.projector
    params = set_trainable(bundle.model, pcfg)
    bundle.model.train()
    augment = build_train_transforms(cfg.data.augment, cfg.model.image_size, seed=cfg.seed)
    builder = ExampleBuilder(bundle, dataset, augment, cfg.seed, 0.0, rt.device)
    ddp = wrap_ddp(bundle.model, rt)
    forward = ddp if ddp is not None else bundle.model

    def loss_fn(indices: list[int], step: int) -> Any:
        return forward(**builder.batch(indices, step)).loss

    return run_loop(
        stage="projector",
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
