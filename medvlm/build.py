"""Build the model from a `ModelConfig`: vision tower -> projector -> decoder, plus LoRA.

The model is a stock `transformers.LlavaForConditionalGeneration`, so a saved checkpoint is an
ordinary Hugging Face one and public LLaVA-style checkpoints load without conversion. Its parts
in transformers 5.x (read `models/llava/modeling_llava.py` for the forward pass, top to bottom):

    model.model.vision_tower            AutoModel of the vision config (ViT / SigLIP / CLIP / DINOv2)
    model.model.multi_modal_projector   Linear -> act -> Linear (vision width -> decoder width)
    model.model.language_model          AutoModel of the text config (the decoder without its head)
    model.lm_head                       Linear (decoder width -> vocab)

Three ways in: a tiny model from the config's spec (tests, demo); local vision and decoder
checkpoints assembled into one LLaVA model; or an existing LLaVA-style checkpoint (`init_from`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from medvlm.bundle import (  # noqa: F401 - re-exported: the rest of the project imports them from here
    LANGUAGE_MODEL_PATH,
    PROJECTOR_PATH,
    VISION_TOWER_PATH,
    MedVLM,
    torch_dtype,
    unwrap,
)
from medvlm.config import DecoderConfig, LoraSettings, ModelConfig, VisionConfig
from medvlm.errors import ConfigError
from medvlm.families import FamilySpec, lora_target_regex, own_family
from medvlm.processor import build_processor, has_cls_token
from medvlm.tokenizer import image_token_id

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase



# ---- configs -------------------------------------------------------------------------------


def build_vision_config(vision: VisionConfig, image_size: int) -> Any:
    """Hugging Face config of a tiny vision tower built from scratch.

    Args:
        vision: tower spec.
        image_size: input edge in pixels.

    Returns:
        A `ViTConfig`, `SiglipVisionConfig`, `CLIPVisionConfig` or `Dinov2Config`.
    """
    from transformers import CLIPVisionConfig, Dinov2Config, SiglipVisionConfig, ViTConfig

    common = {
        "hidden_size": vision.hidden_size,
        "num_hidden_layers": vision.num_layers,
        "num_attention_heads": vision.num_heads,
        "image_size": image_size,
        "patch_size": vision.patch_size,
    }
    if vision.kind == "vit":
        return ViTConfig(intermediate_size=vision.intermediate_size, **common)
    if vision.kind == "clip":
        return CLIPVisionConfig(intermediate_size=vision.intermediate_size, **common)
    if vision.kind == "siglip":
        return SiglipVisionConfig(intermediate_size=vision.intermediate_size, **common)
    if vision.kind == "dinov2":
        return Dinov2Config(mlp_ratio=max(1, vision.intermediate_size // vision.hidden_size), **common)
    raise ConfigError(f"vision.kind {vision.kind!r} unsupported")


def build_text_config(decoder: DecoderConfig, tokenizer: PreTrainedTokenizerBase) -> Any:
    """Hugging Face config of a tiny decoder built from scratch, sized to the tokenizer's vocabulary."""
    from transformers import GemmaConfig, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config

    common: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": decoder.hidden_size,
        "num_hidden_layers": decoder.num_layers,
        "num_attention_heads": decoder.num_heads,
        "num_key_value_heads": decoder.num_kv_heads,
        "intermediate_size": decoder.intermediate_size,
        "max_position_embeddings": decoder.max_position_embeddings,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if decoder.tie_word_embeddings is not None:
        common["tie_word_embeddings"] = decoder.tie_word_embeddings
    if decoder.kind == "llama":
        return LlamaConfig(**common)
    if decoder.kind == "qwen2":
        return Qwen2Config(**common)
    if decoder.kind == "mistral":
        return MistralConfig(**common)
    if decoder.kind == "gemma":
        # Gemma's default head_dim is 256 regardless of width; tie it to the tiny width.
        return GemmaConfig(head_dim=decoder.hidden_size // decoder.num_heads, **common)
    if decoder.kind == "phi3":
        return Phi3Config(original_max_position_embeddings=decoder.max_position_embeddings, **common)
    raise ConfigError(f"decoder.kind {decoder.kind!r} unsupported")


def build_llava_config(cfg: ModelConfig, vision_config: Any, text_config: Any, image_token_index: int) -> Any:
    """The `LlavaConfig` joining tower and decoder.

    `vision_feature_select_strategy` is "full" for SigLIP (no CLS token) and "default" (drop CLS)
    otherwise, so every tower yields one feature per patch; `vision_feature_layer` comes from
    `vision.feature_layer` (-1 here, LLaVA-1.5 uses -2; see `VisionConfig`).
    """
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_index,
        image_seq_length=cfg.image_seq_length,
        projector_hidden_act=cfg.projector.hidden_act,
        multimodal_projector_bias=cfg.projector.bias,
        vision_feature_select_strategy="default" if has_cls_token(cfg.vision.kind) else "full",
        vision_feature_layer=cfg.vision.feature_layer,
    )


# ---- model ---------------------------------------------------------------------------------


def _load_vision_tower(path: str) -> Any:
    """Load a vision tower from a local checkpoint; a full CLIP/SigLIP dir gives its vision half."""
    from transformers import AutoConfig, AutoModel

    hf_cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    vision_cfg = getattr(hf_cfg, "vision_config", None) or hf_cfg
    tower_cls = AutoModel._model_mapping[type(vision_cfg)]
    return tower_cls.from_pretrained(path, local_files_only=True)


def _load_decoder(path: str, tokenizer: PreTrainedTokenizerBase) -> Any:
    """Load a causal LM from a local checkpoint and grow its vocabulary to the tokenizer's (adds `<image>`)."""
    from transformers import AutoModelForCausalLM

    decoder = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    if decoder.get_input_embeddings().num_embeddings < len(tokenizer):
        decoder.resize_token_embeddings(len(tokenizer))
    return decoder


def _check_tower(cfg: ModelConfig, vision_config: Any) -> None:
    """A pretrained tower's patch size and image size must be the config's (they set the image token count)."""
    patch = getattr(vision_config, "patch_size", None)
    size = getattr(vision_config, "image_size", None)
    if patch != cfg.vision.patch_size or size != cfg.image_size:
        raise ConfigError(
            f"{cfg.vision.path}: tower has patch_size={patch}, image_size={size} but the config says "
            f"vision.patch_size={cfg.vision.patch_size}, image_size={cfg.image_size}: set them to the tower's"
        )


def build_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> MedVLM:
    """Build the model, processor and LoRA adapters a config describes.

    Args:
        cfg: the model config.
        tokenizer: from `medvlm.tokenizer.build_tokenizer(cfg, texts)`; ignored (may be None)
            with `cfg.init_from`, whose processor carries its tokenizer.

    Returns:
        `MedVLM(model, processor, config)`; the model is in train mode with LoRA applied when
        `cfg.lora.r > 0` (call `freeze_for_stage` to pick what trains).

    Raises:
        ConfigError: a missing tokenizer, or LoRA target modules that match nothing in the decoder.
        CheckpointError: `init_from` refused by `medvlm.loading.load_vlm` (family, weights, pickle).
    """
    import torch
    from transformers import LlavaForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # reproducible initialisation without touching the caller's RNG
        if cfg.init_from is not None:  # any supported family, refused when a weight would stay random
            from medvlm.loading import load_vlm

            loaded = load_vlm(cfg.init_from, dtype=cfg.dtype, config=cfg, trust_remote_code=cfg.trust_remote_code)
            if cfg.lora.enabled:
                from medvlm.adapters import apply_lora as apply_family_lora

                loaded = apply_family_lora(loaded, cfg.lora)
            loaded.model.train()
            return loaded
        else:
            if tokenizer is None:
                raise ConfigError(
                    "build_model needs a tokenizer (medvlm.tokenizer.build_tokenizer) unless init_from is set"
                )
            tower = _load_vision_tower(cfg.vision.path) if cfg.vision.path else None
            decoder = _load_decoder(cfg.decoder.path, tokenizer) if cfg.decoder.path else None
            if tower is not None:
                _check_tower(cfg, tower.config)
            vision_config = (
                tower.config if tower is not None else build_vision_config(cfg.vision, cfg.image_size)
            )
            text_config = decoder.config if decoder is not None else build_text_config(cfg.decoder, tokenizer)
            llava_config = build_llava_config(cfg, vision_config, text_config, image_token_id(tokenizer))
            model = LlavaForConditionalGeneration(llava_config)
            # Copy pretrained parts in with strict key checks (a silent partial load would be worse).
            if tower is not None:
                model.model.vision_tower.load_state_dict(tower.state_dict(), strict=True)
            if decoder is not None:
                model.model.language_model.load_state_dict(decoder.base_model.state_dict(), strict=True)
                model.lm_head.load_state_dict(decoder.get_output_embeddings().state_dict(), strict=True)
            model = model.to(torch_dtype(cfg.dtype))
            processor = build_processor(cfg, tokenizer)
        if cfg.lora.enabled:
            model = apply_lora(model, cfg.lora)
    model.train()
    return MedVLM(model=model, processor=processor, config=cfg)


# ---- LoRA and stages -----------------------------------------------------------------------


def apply_lora(model: Any, lora: LoraSettings) -> Any:
    """Wrap the model with peft LoRA adapters on the configured modules.

    Raises:
        ConfigError: a target list matches no module (the message lists the linear layer names there).
    """
    from peft import LoraConfig, get_peft_model
    from torch import nn

    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_target_regex(lora),
        bias="none",
    )
    for names, path, field_name in (
        (lora.target_modules, LANGUAGE_MODEL_PATH, "lora.target_modules"),
        (lora.vision_target_modules, VISION_TOWER_PATH, "lora.vision_target_modules"),
    ):
        if not names:
            continue
        linear = {
            n.rsplit(".", 1)[-1]
            for n, m in model.named_modules()
            if f".{path}." in f".{n}" and isinstance(m, nn.Linear)
        }
        missing = sorted(set(names) - linear)
        if missing:
            raise ConfigError(
                f"{field_name} {missing} match no linear layer in the {path}; it has {sorted(linear)}"
            )
    return get_peft_model(model, peft_config)


def adapted_modules(model: Any) -> list[str]:
    """Paths of the modules that carry a LoRA adapter."""
    return [
        name for name, module in model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A) > 0
    ]


def freeze_for_stage(model: Any, stage: int, family: FamilySpec | None = None) -> tuple[int, int]:
    """Set `requires_grad` for a training stage.

    Stage 1 (projector alignment): only the projector trains. Stage 2 (instruction tuning): the
    LoRA adapters (decoder, and tower when configured) and the projector train. Everything else
    is frozen in both. Stage 0 trains everything: for a tiny decoder built from scratch (the
    phantom demo), whose random embeddings and head LoRA alone cannot fix.

    Args:
        model: the (peft-wrapped) model.
        stage: 0, 1 or 2.
        family: where the projector lives (`bundle.family`); default medvlm's own LLaVA.

    Returns:
        (trainable parameters, total parameters).

    Raises:
        ConfigError: stage is not 0, 1 or 2, or stage 2 on a model without LoRA.
    """
    if stage not in (0, 1, 2):
        raise ConfigError(f"stage must be 0 (everything), 1 (projector) or 2 (LoRA + projector), got {stage}")
    has_lora = any("lora_" in name for name, _ in model.named_parameters())
    if stage == 2 and not has_lora:
        raise ConfigError("stage 2 needs LoRA adapters: set lora.r > 0")
    projector = re.compile((family or own_family()).projector)
    trainable = total = 0
    for name, param in model.named_parameters():
        train = stage == 0 or bool(projector.search(name)) or (stage == 2 and "lora_" in name)
        param.requires_grad_(train)
        total += param.numel()
        trainable += param.numel() if train else 0
    return trainable, total


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
