"""The supported vision-language families, one row each: everything that differs between them.

A checkpoint's family is its `config.json` `model_type`. The rest of medvlm is family-agnostic:
the checkpoint's own processor resizes, tiles, normalises and expands image tokens (its extra
tensors such as `image_grid_thw` pass through untouched), its chat template renders the turns and
`AutoModelForImageTextToText` builds the model. What a row says:

- where the decoder, vision tower and projector live (regexes over `named_modules()` paths), for
  freezing and for LoRA targets. LoRA goes on the decoder's SELF-attention by default: vision
  attention layers are also called `q_proj`/`v_proj`, and Mllama's cross-attention layers add
  more `q_proj`s that would silently change what "decoder LoRA" means;
- how many images one prompt may carry (frontal, lateral, then the prior study's views);
- whether the chat template accepts a system turn (else the system text opens the first user turn)
  and whether there is a chat template at all (PaliGemma ships none: its prompt is plain text);
- whether the processor is video-capable (its video processor needs torchvision: see
  `medvlm.loading.load_processor`);
- PaliGemma only: the answer's `token_type_ids` are 1 (its prefix-LM mask; the prompt's are 0).

Turn and stop tokens are NOT in the table: they come from each checkpoint's chat template and
`generation_config` (`medvlm.chat.turn_format`), so a fine-tuned variant with another template works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medvlm.errors import UnsupportedFamilyError

if TYPE_CHECKING:
    from medvlm.config import LoraSettings

# Module names inside medvlm's own LLaVA (transformers 5.x `LlavaForConditionalGeneration`).
LANGUAGE_MODEL_PATH = "language_model"
VISION_TOWER_PATH = "vision_tower"
PROJECTOR_PATH = "multi_modal_projector"
OWN = "medvlm"
"""Pseudo model_type of medvlm's own from-scratch LLaVA (its checkpoints carry `medvlm_config.json`)."""


@dataclass(frozen=True)
class FamilySpec:
    """One vision-language family (one `model_type`)."""

    name: str
    """The `model_type` of the checkpoint's `config.json` (`OWN` for medvlm's own LLaVA)."""
    label: str
    """Human name, with the public checkpoints known to use it."""
    decoder: str
    """Regex of the decoder's module path (LoRA targets and freezing)."""
    vision: str
    """Regex of the vision tower's module path."""
    projector: str
    """Regex of the projector's module path (trains in stages 1 and 2)."""
    max_images: int = 4
    """Images one prompt may carry: current views first, then the prior study's; the rest are dropped."""
    system_role: bool = True
    """The chat template accepts a system turn; else the system text opens the first user turn."""
    chat_template: bool = True
    """The checkpoint ships a chat template; else (PaliGemma) the prompt is the plain user text."""
    video_processor: bool = False
    """The processor also holds a video processor (needs torchvision): loaded images-only."""
    answer_token_type: int | None = None
    """`token_type_ids` value of supervised answer tokens (PaliGemma: 1); None: copy the prompt's last."""

    def lora_target_regex(self, names: tuple[str, ...] = ("q_proj", "v_proj")) -> str:
        """peft `target_modules` regex (full match) for `names` in the decoder's self-attention only."""
        alternatives = "|".join(names)
        return rf"(?:.*\.)?{self.decoder}\.layers\.\d+\.self_attn\.(?:{alternatives})"


_LLAVA = {"decoder": r"model\.language_model", "vision": r"model\.vision_tower",
          "projector": r"model\.multi_modal_projector"}

FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec(OWN, "medvlm's own LLaVA (built from a ModelConfig)", max_images=6, **_LLAVA),
        FamilySpec("llava", "LLaVA-1.5 (llava-hf/llava-1.5-7b-hf; LLaVA-Rad after conversion)",
                   max_images=1, **_LLAVA),
        FamilySpec("llava_next", "LLaVA-Next / 1.6 (llava-hf/llava-v1.6-mistral-7b-hf)", max_images=1,
                   system_role=False, **_LLAVA),
        FamilySpec("llava_onevision", "LLaVA-OneVision (llava-hf/llava-onevision-qwen2-0.5b-ov-hf)",
                   video_processor=True, **_LLAVA),
        FamilySpec("gemma3", "Gemma 3 (google/medgemma-4b-it, google/gemma-3-4b-it)", **_LLAVA),
        FamilySpec("qwen2_vl", "Qwen2-VL (Qwen/Qwen2-VL-2B-Instruct)", decoder=r"model\.language_model",
                   vision=r"model\.visual", projector=r"model\.visual\.merger", video_processor=True),
        FamilySpec("qwen2_5_vl", "Qwen2.5-VL (Qwen/Qwen2.5-VL-3B-Instruct, lingshu-medical-mllm/Lingshu-7B)",
                   decoder=r"model\.language_model", vision=r"model\.visual",
                   projector=r"model\.visual\.merger", video_processor=True),
        FamilySpec("idefics3", "Idefics3 (HuggingFaceM4/Idefics3-8B-Llama3)", decoder=r"model\.text_model",
                   vision=r"model\.vision_model", projector=r"model\.connector"),
        FamilySpec("smolvlm", "SmolVLM (HuggingFaceTB/SmolVLM-256M-Instruct)", decoder=r"model\.text_model",
                   vision=r"model\.vision_model", projector=r"model\.connector", video_processor=True),
        FamilySpec("paligemma", "PaliGemma (google/paligemma-3b-mix-224)", max_images=1, chat_template=False,
                   answer_token_type=1, **_LLAVA),
        FamilySpec("mllama", "Llama 3.2 Vision (meta-llama/Llama-3.2-11B-Vision-Instruct)",
                   decoder=r"model\.language_model", vision=r"model\.vision_model",
                   projector=r"model\.multi_modal_projector", max_images=1),
    )
}


def lora_target_regex(lora: LoraSettings) -> str:
    """medvlm's own LLaVA: a regex (peft full-matches it against module paths) restricted to the decoder, plus the tower if asked.

    In transformers 5.x the ViT/CLIP/SigLIP attention layers are also called `q_proj`/`v_proj`,
    so a plain list of names would silently adapt the vision tower too.
    """
    parts = []
    if lora.target_modules:
        names = "|".join(re.escape(m) for m in lora.target_modules)
        parts.append(rf".*\.{LANGUAGE_MODEL_PATH}\..*\.(?:{names})")
    if lora.vision_target_modules:
        names = "|".join(re.escape(m) for m in lora.vision_target_modules)
        parts.append(rf".*\.{VISION_TOWER_PATH}\..*\.(?:{names})")
    return "|".join(f"(?:{p})" for p in parts)


def get_family(model_type: str) -> FamilySpec:
    """The family of a `model_type`.

    Raises:
        UnsupportedFamilyError: not on the allow-list (the message lists the supported ones).
    """
    spec = FAMILIES.get(model_type)
    if spec is None or spec.name == OWN:
        supported = ", ".join(f"{name} ({s.label})" for name, s in FAMILIES.items() if name != OWN)
        raise UnsupportedFamilyError(
            f"model_type {model_type!r} is not a supported vision-language family. Supported: {supported}. "
            "Convert the checkpoint to one of these Hugging Face layouts, or use a medvlm checkpoint"
        )
    return spec


def own_family() -> FamilySpec:
    """The row of medvlm's own LLaVA."""
    return FAMILIES[OWN]
