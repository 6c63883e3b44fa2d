"""The `MedVLM` bundle: model + processor + config + family, passed around together (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medvlm.config import ModelConfig
from medvlm.families import (  # noqa: F401 - re-exported
    LANGUAGE_MODEL_PATH,
    PROJECTOR_PATH,
    VISION_TOWER_PATH,
    FamilySpec,
    own_family,
)

if TYPE_CHECKING:
    import torch
    from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerBase

@dataclass
class MedVLM:
    """The model, its processor, config and family, passed around together.

    `model` is an `...ForConditionalGeneration` of the family (`LlavaForConditionalGeneration` for
    medvlm's own), or a `peft.PeftModel` wrapping one when LoRA is on.
    """

    model: Any
    """The model (possibly wrapped by peft)."""
    processor: Any
    """Image processor + tokenizer + chat template (the checkpoint's own for a Hugging Face folder)."""
    config: ModelConfig
    """The config the model was built from (saved with checkpoints); prompts and generation settings."""
    family: FamilySpec = field(default_factory=own_family)
    """The family row (`medvlm.families`): module paths, images per prompt, template quirks."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where it was loaded from: `path`, `family`, `remote_code` (file -> sha256) for a Hugging Face folder."""
    head: Any = None
    """A `medvlm.heads.FindingsClassifier` on the vision tower (classification-guided drafting), or None."""

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The processor's tokenizer."""
        return self.processor.tokenizer

    @property
    def base_model(self) -> Any:
        """The underlying `...ForConditionalGeneration` (inside the peft wrapper, if any)."""
        return unwrap(self.model)

    @property
    def llava(self) -> LlavaForConditionalGeneration:
        """The underlying model (same as `base_model`; the name predates the other families)."""
        return unwrap(self.model)

    @property
    def image_seq_length(self) -> int:
        """Image tokens per view for medvlm's own LLaVA (other families: the processor decides; 0)."""
        return int(getattr(self.llava.config, "image_seq_length", 0) or 0)


def unwrap(model: Any) -> LlavaForConditionalGeneration:
    """The `LlavaForConditionalGeneration` inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def torch_dtype(name: str | None) -> torch.dtype:
    """"float32" (also for None) or "bfloat16" as a torch dtype."""
    import torch

    from medvlm.errors import ConfigError

    names = {None: torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16}
    if name not in names:
        raise ConfigError(f"dtype must be float32 or bfloat16, got {name!r}")
    return names[name]
