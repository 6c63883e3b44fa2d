"""LoRA for every family: peft adapters on the module paths the family table names.

By default only the decoder's self-attention gets adapters (`FamilySpec.lora_target_regex`): the
vision tower's attention layers share the names `q_proj`/`v_proj`, and Mllama's cross-attention
layers add more `q_proj`s. `LoraSettings.vision_target_modules` adds tower modules on purpose.

    bundle = apply_lora(load_vlm(path), LoraSettings(r=8))   # then freeze_for_stage(..., 2, family)
    save_adapter(bundle, "run/adapter")                      # adapter_config.json + safetensors
    bundle = load_adapter(load_vlm(path), "run/adapter")     # same logits as before saving
    bundle = merge_adapter(bundle)                           # plain model, same greedy output
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from medvlm.bundle import MedVLM, unwrap
from medvlm.config import LoraSettings
from medvlm.errors import ConfigError
from medvlm.families import OWN, FamilySpec, lora_target_regex


def target_regex(family: FamilySpec, lora: LoraSettings) -> str:
    """The peft `target_modules` regex for a family: decoder self-attention, plus tower modules if asked."""
    if family.name == OWN:
        return lora_target_regex(lora)
    parts = [family.lora_target_regex(lora.target_modules)] if lora.target_modules else []
    if lora.vision_target_modules:
        names = "|".join(re.escape(m) for m in lora.vision_target_modules)
        parts.append(rf"(?:.*\.)?{family.vision}\..*\.(?:{names})")
    return "|".join(f"(?:{p})" for p in parts)


def apply_lora(bundle: MedVLM, lora: LoraSettings) -> MedVLM:
    """A bundle whose model carries fresh LoRA adapters (peft `get_peft_model`); the input model is wrapped.

    Raises:
        ConfigError: the targets match no module (the message lists the decoder's linear layer names).
    """
    from peft import LoraConfig, get_peft_model
    from torch import nn

    regex = target_regex(bundle.family, lora)
    model = unwrap(bundle.model)
    matched = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.fullmatch(regex, n)]
    if not matched:
        decoder = re.compile(bundle.family.decoder)
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                        if isinstance(m, nn.Linear) and decoder.search(n)})
        raise ConfigError(f"lora.target_modules {list(lora.target_modules)} match no linear layer of the "
                          f"{bundle.family.name} decoder's self-attention; its linear layers are {names}")
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=regex, bias="none")
    return dataclasses.replace(bundle, model=get_peft_model(model, config))


def save_adapter(bundle: MedVLM, directory: str | Path) -> Path:
    """Write the LoRA adapter (safetensors) of a peft-wrapped bundle to `directory`."""
    if unwrap(bundle.model) is bundle.model:
        raise ConfigError("the bundle has no LoRA adapter to save: apply_lora first")
    bundle.model.save_pretrained(str(directory), safe_serialization=True)
    return Path(directory)


def load_adapter(bundle: MedVLM, directory: str | Path, *, trainable: bool = False) -> MedVLM:
    """A bundle whose base model (fresh from `load_vlm`) carries the adapter saved in `directory`."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(unwrap(bundle.model), str(directory), is_trainable=trainable)
    if not trainable:
        model.eval()
    return dataclasses.replace(bundle, model=model)


def merge_adapter(bundle: MedVLM) -> MedVLM:
    """A bundle whose adapter is folded into the base weights (peft `merge_and_unload`; changes the model)."""
    if unwrap(bundle.model) is bundle.model:
        return bundle
    return dataclasses.replace(bundle, model=bundle.model.merge_and_unload())


def trainable_parameters(model: Any) -> list[str]:
    """Names of the parameters that will train (for logs and tests)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]
