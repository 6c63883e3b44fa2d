"""ModelConfig: defaults, cross-field checks naming the field, YAML loading with overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlm.config import GenerationSettings, LoraSettings, ModelConfig
from medvlm.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"


def test_defaults_are_valid_and_image_seq_length_counts_patches():
    cfg = ModelConfig()
    assert cfg.image_seq_length == (32 // 8) ** 2
    assert ModelConfig.from_dict({"image_size": 64, "vision": {"patch_size": 16}}).image_seq_length == 16


def test_image_size_not_multiple_of_patch_size_names_both_fields():
    with pytest.raises(ConfigError, match=r"image_size=30.*vision\.patch_size=8"):
        ModelConfig(image_size=30)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"vision": {"kind": "resnet"}}, "vision.kind"),
        ({"decoder": {"kind": "gpt9"}}, "decoder.kind"),
        ({"decoder": {"hidden_size": 60, "num_heads": 8}}, "decoder.num_heads"),
        ({"decoder": {"num_heads": 4, "num_kv_heads": 3}}, "decoder.num_kv_heads"),
        ({"decoder": {"max_position_embeddings": 64}}, "decoder.max_position_embeddings"),
        ({"lora": {"dropout": 1.5}}, "lora.dropout"),
        ({"lora": {"r": 4, "target_modules": []}}, "lora.target_modules"),
        ({"generation": {"num_beams": 0}}, "generation.num_beams"),
        ({"generation": {"sentence_confidence": "max"}}, "generation.sentence_confidence"),
        ({"dtype": "float16"}, "dtype"),
        ({"max_views": 0}, "max_views"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        ModelConfig.from_dict(data)


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match=r"decoder\.hidden"):
        ModelConfig.from_dict({"decoder": {"hidden": 64}})
    with pytest.raises(ConfigError, match="visoin"):
        ModelConfig.from_dict({"visoin": {}})


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        ModelConfig(image_size=31)


def test_to_dict_round_trips_and_lists_become_tuples():
    cfg = ModelConfig.from_dict(
        {"lora": {"target_modules": ["q_proj", "k_proj"], "vision_target_modules": ["q_proj"]}}
    )
    assert cfg.lora.target_modules == ("q_proj", "k_proj")
    assert hash(cfg)  # frozen and hashable
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert cfg.to_dict()["lora"]["target_modules"] == ["q_proj", "k_proj"]


def test_frozen():
    cfg = ModelConfig()
    with pytest.raises(AttributeError):
        cfg.image_size = 64  # type: ignore[misc]


def test_lora_r_zero_disables():
    assert not LoraSettings(r=0).enabled
    assert LoraSettings().enabled


def test_from_yaml_top_level_and_under_model_key_with_overrides(tmp_path):
    top = tmp_path / "top.yaml"
    top.write_text("image_size: 64\nvision:\n  kind: siglip\n  patch_size: 16\n")
    nested = tmp_path / "recipe.yaml"
    nested.write_text("epochs: 3\nmodel:\n  image_size: 64\n  vision: {kind: siglip, patch_size: 16}\n")
    a = ModelConfig.from_yaml(top)
    b = ModelConfig.from_yaml(nested)
    assert a == b
    assert a.vision.kind == "siglip"
    c = ModelConfig.from_yaml(top, {"decoder.kind": "qwen2", "lora.r": "0", "generation.max_new_tokens": 12})
    assert c.decoder.kind == "qwen2"
    assert c.lora.r == 0 and not c.lora.enabled
    assert c.generation.max_new_tokens == 12
    with pytest.raises(ConfigError, match="image_size"):
        ModelConfig.from_yaml(top, {"image_size": "63"})


def test_generation_settings_checks():
    with pytest.raises(ConfigError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("model_*.yaml")), ids=lambda p: p.name)
def test_every_model_yaml_loads(path):
    cfg = ModelConfig.from_yaml(path)
    assert cfg.image_seq_length >= 1
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), "each YAML starts with a comment saying how it is run"
