"""The `MedVLM` a stage trains: built fresh, loaded from `model.init_from`, or reloaded from a stage checkpoint.

`model.init_from` names the model a run starts from:

- a Hugging Face folder of a supported family (`medvlm.families`): loaded by `medvlm.loading.load_vlm`
  (refused when a weight would stay random), LoRA from the family table;
- a medvlm checkpoint (`medvlm_config.json`): reloaded with its own config, its adapter trainable
  (or a fresh one), so a run continues a model medvlm trained before.

`resolve_model_config` reads what the run needs from that folder before any data is decoded (the
processor's image size, the stored config). A decoder built from scratch needs a tokenizer trained
on the reports; it is saved under the stage folder so that a resumed run sees exactly the vocabulary
of the interrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.errors import ConfigError
from pipelines.training.runtime import Runtime, barrier

if TYPE_CHECKING:
    from medvlm.build import MedVLM
    from medvlm.config import ModelConfig
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


def resolve_model_config(model: ModelConfig) -> ModelConfig:
    """The model config a run trains with, read from `model.init_from` without loading weights.

    A Hugging Face folder: the YAML's config with `image_size` set to the processor's nominal size
    (studies are decoded at the size the checkpoint's processor reads them). A medvlm checkpoint: its
    stored config (tower, decoder, prompts), with the run's LoRA settings unless it carries an adapter.

    Raises:
        medvlm.errors.CheckpointError: not a model folder, an unsupported family, pickle files,
            remote code without `model.trust_remote_code`.
    """
    if model.init_from is None:
        return model
    from medvlm.checkpoint import ADAPTER_DIR, CONFIG_FILE
    from medvlm.config import ModelConfig
    from medvlm.hub_processor import load_processor, nominal_image_size
    from medvlm.loading import inspect_folder, is_medvlm_checkpoint

    path = Path(model.init_from)
    if is_medvlm_checkpoint(path):
        stored = ModelConfig.from_dict(json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))["model"])
        lora = stored.lora if (path / ADAPTER_DIR).is_dir() else model.lora
        return dataclasses.replace(stored, init_from=str(path), lora=lora, generation=model.generation)
    _, family, _ = inspect_folder(path, trust_remote_code=model.trust_remote_code)
    processor = load_processor(path, family, trust_remote_code=model.trust_remote_code)
    return dataclasses.replace(model, image_size=nominal_image_size(processor))


def load_pretrained(model: ModelConfig) -> MedVLM:
    """The `init_from` model as saved (no new adapter), in train mode: stage 0 takes its tower.

    Raises:
        ConfigError: `model.init_from` is not set.
        medvlm.errors.CheckpointError: see `medvlm.loading.load_vlm` / `load_checkpoint`.
    """
    from medvlm.loading import is_medvlm_checkpoint, load_vlm

    if model.init_from is None:
        raise ConfigError("load_pretrained needs model.init_from")
    if is_medvlm_checkpoint(model.init_from):
        from medvlm.checkpoint import load_checkpoint

        bundle = dataclasses.replace(load_checkpoint(model.init_from, trainable=True,
                                                     trust_remote_code=model.trust_remote_code), config=model)
    else:
        bundle = load_vlm(model.init_from, dtype=model.dtype, config=model, trust_remote_code=model.trust_remote_code)
    bundle.model.train()
    return bundle


def _continue_checkpoint(model: ModelConfig) -> MedVLM:
    """A medvlm checkpoint as the start of a run: its adapter trainable, or a fresh one when it has none."""
    import torch

    from medvlm.build import apply_lora
    from medvlm.bundle import unwrap

    bundle = load_pretrained(model)
    if model.lora.enabled and unwrap(bundle.model) is bundle.model:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(model.seed)  # the same fresh adapter on every (resumed) run
            bundle = dataclasses.replace(bundle, model=apply_lora(bundle.model, model.lora))
        bundle.model.train()
    return bundle


def tower_module(bundle: MedVLM) -> Any:
    """The vision tower module of any family (the module path the family table names)."""
    pattern = re.compile(bundle.family.vision)
    for name, module in bundle.base_model.named_modules():
        if pattern.fullmatch(name):
            return module
    raise ConfigError(f"no module matches the {bundle.family.name} vision tower path {bundle.family.vision!r}")


def enable_gradient_checkpointing(module: Any) -> None:
    """Turn on activation checkpointing (non-reentrant: frozen embeddings under LoRA still get gradients).

    Raises:
        ConfigError: the model class does not support it (set gradient_checkpointing=false).
    """
    from medvlm.bundle import unwrap

    base = unwrap(module)
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(base).__name__} does not support gradient checkpointing: "
                          "set gradient_checkpointing=false")
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def build_bundle(cfg: TrainConfig, dataset: StudyDataset, stage_dir: Path, rt: Runtime) -> MedVLM:
    """Tokenizer + model for a LLaVA stage, the tower initialised from stage 0 when `cfg.vision_init` is set.

    With `model.init_from` the model is that folder's (Hugging Face family or medvlm checkpoint) plus
    LoRA; otherwise it is built from the config and a trained tokenizer is saved under
    `stage_dir/tokenizer` (rank 0) and reused on resume.

    Args:
        cfg: the run config (`model`, `vision_init`).
        dataset: the training studies (a from-scratch tokenizer learns their wording).
        stage_dir: the stage folder the tokenizer is kept in.
        rt: the runtime (the model is moved to its device).

    Returns:
        The bundle, on `rt.device`.
    """
    from medvlm.build import build_model
    from medvlm.loading import is_medvlm_checkpoint
    from medvlm.tokenizer import build_tokenizer

    tokenizer = None
    if cfg.model.init_from is not None and is_medvlm_checkpoint(cfg.model.init_from):
        bundle = _continue_checkpoint(cfg.model)
    else:
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

        tower_module(bundle).load_state_dict(load_file(cfg.vision_init), strict=True)
    if cfg.head_init:  # the classify stage's findings head: its findings go into the prompts
        from medvlm.heads import FindingsClassifier

        bundle.head = FindingsClassifier.load(cfg.head_init)
    bundle.model.to(rt.device)
    return bundle


def load_bundle(checkpoint: Path, rt: Runtime, *, trust_remote_code: bool = False) -> MedVLM:
    """A stage checkpoint reloaded with its adapter trainable (the next stage continues from it).

    Args:
        checkpoint: a `medvlm` checkpoint folder written by an earlier stage.
        rt: the runtime (the model is moved to its device).

    Returns:
        The bundle, on `rt.device`.
    """
    from medvlm.checkpoint import load_checkpoint

    bundle = load_checkpoint(checkpoint, trainable=True, trust_remote_code=trust_remote_code)
    bundle.model.to(rt.device)
    return bundle
