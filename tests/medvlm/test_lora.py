"""LoRA placement (decoder only unless the tower is asked for) and the training stages."""

from __future__ import annotations

import re

import pytest

from medvlm.build import adapted_modules, count_parameters, freeze_for_stage, lora_target_regex
from medvlm.config import LoraSettings
from medvlm.errors import ConfigError


def _numel(model, *needles):
    return sum(p.numel() for n, p in model.named_parameters() if any(k in n for k in needles))


@pytest.mark.parametrize("tower", ["vit", "siglip", "clip"])
def test_adapters_only_on_decoder_attention(tower, build_tiny):
    bundle = build_tiny(vision={"kind": tower})
    names = adapted_modules(bundle.model)
    # 2 decoder layers x (q_proj, v_proj); the tower's q_proj/v_proj (same names in 5.x) get none
    assert len(names) == 4
    assert all(".language_model." in n for n in names)
    assert not any("vision_tower" in n for n in names)
    tower_qproj = [n for n, _ in bundle.model.named_modules() if "vision_tower" in n and n.endswith("q_proj")]
    assert tower_qproj, "the tower really has q_proj layers (the pitfall this guards against)"


def test_vision_target_modules_adapt_the_tower_too(build_tiny):
    bundle = build_tiny(vision={"kind": "siglip"}, lora={"vision_target_modules": ["q_proj"]})
    names = adapted_modules(bundle.model)
    tower = [n for n in names if "vision_tower" in n]
    decoder = [n for n in names if "language_model" in n]
    assert len(tower) == 2 and all(n.endswith("q_proj") for n in tower)
    assert len(decoder) == 4


def test_regex_matches_decoder_paths_only():
    rx = lora_target_regex(LoraSettings(target_modules=("q_proj", "v_proj")))
    assert re.fullmatch(rx, "base_model.model.model.language_model.layers.0.self_attn.q_proj")
    assert not re.fullmatch(
        rx, "base_model.model.model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj"
    )
    assert not re.fullmatch(rx, "base_model.model.model.language_model.layers.0.self_attn.k_proj")


def test_unknown_target_module_names_the_field(build_tiny):
    with pytest.raises(ConfigError, match=r"lora\.target_modules.*qkv_proj"):
        build_tiny(decoder={"kind": "phi3"})  # Phi-3 fuses q/k/v into qkv_proj


def test_stage1_trains_projector_only_stage2_adds_lora(build_tiny, make_image):
    from medvlm.generate import StudyInput, encode_studies
    from medvlm.processor import collate

    bundle = build_tiny()
    model = bundle.model
    projector = _numel(model, "multi_modal_projector")
    lora = _numel(model, "lora_")
    assert projector > 0 and lora > 0

    trainable, total = freeze_for_stage(model, 1)
    assert trainable == projector == count_parameters(model)[0]
    assert total == count_parameters(model)[1]

    trainable, _ = freeze_for_stage(model, 2)
    assert trainable == projector + lora == count_parameters(model)[0]

    batch = collate(encode_studies(bundle, [StudyInput([make_image(0)])]), bundle.tokenizer.pad_token_id)
    batch.pop("n_images")
    model.train()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    for name, param in model.named_parameters():
        has_grad = param.grad is not None
        assert has_grad == ("multi_modal_projector" in name or "lora_" in name), name


def test_stage_errors(build_tiny):
    with pytest.raises(ConfigError, match="stage"):
        freeze_for_stage(build_tiny().model, 3)
    model = build_tiny().model
    assert freeze_for_stage(model, 0)[0] == sum(p.numel() for p in model.parameters())
    with pytest.raises(ConfigError, match=r"lora\.r"):
        freeze_for_stage(build_tiny(lora={"r": 0}).model, 2)
