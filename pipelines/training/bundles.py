"""The `MedVLM` a LLaVA stage trains: built fresh for stage 1, or reloaded from a stage checkpoint.

A decoder built from scratch needs a tokenizer trained on the reports; it is saved under the stage
folder so that a resumed run sees exactly the vocabulary of the interrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.training.runtime import Runtime, barrier

if TYPE_CHECKING:
    from medvlm.build import MedVLM
    from pipelines.training.config import TrainConfig
    from pipelines.training.datasets import StudyDataset

TOKENIZER_DIR = "tokenizer"


def tokenizer_texts(dataset: StudyDataset) -> list[str]:
    """Texts a from-scratch BPE is trained on: training reports plus question/answer wording.

    Args:
        dataset: the training studies.

    Returns:
        One text per report and per derived question/answer pair.
    """
    import numpy as np

    from pipelines.training.datasets import derive_qa_pairs

    texts = []
    rng = np.random.default_rng(0)
    for record in dataset.records:
        texts.append(record.report)
        texts += [f"{p.question} {p.answer}" for p in derive_qa_pairs(record.findings, record.impression, rng)]
    return texts


def build_bundle(cfg: TrainConfig, dataset: StudyDataset, stage_dir: Path, rt: Runtime) -> MedVLM:
    """Tokenizer + model for a LLaVA stage, the tower initialised from stage 0 when `cfg.vision_init` is set.

    A trained tokenizer is saved under `stage_dir/tokenizer` (rank 0) and reused on resume.

    Args:
        cfg: the run config (`model`, `vision_init`).
        dataset: the training studies (a from-scratch tokenizer learns their wording).
        stage_dir: the stage folder the tokenizer is kept in.
        rt: the runtime (the model is moved to its device).

    Returns:
        The bundle, on `rt.device`.
    """
    from medvlm.build import build_model
    from medvlm.tokenizer import build_tokenizer

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


def load_bundle(checkpoint: Path, rt: Runtime) -> MedVLM:
    """A stage checkpoint reloaded with its adapter trainable (the next stage continues from it).

    Args:
        checkpoint: a `medvlm` checkpoint folder written by an earlier stage.
        rt: the runtime (the model is moved to its device).

    Returns:
        The bundle, on `rt.device`.
    """
    from medvlm.checkpoint import load_checkpoint

    bundle = load_checkpoint(checkpoint, trainable=True)
    bundle.model.to(rt.device)
    return bundle
