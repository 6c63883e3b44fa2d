"""Run configs: every recipe YAML loads with overrides; bad keys and combinations name the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlm.errors import ConfigError
from pipelines.training.config import (
    LoraStageConfig,
    ProjectorStageConfig,
    config_from_argv,
    load_train_config,
)

REPO_ROOT = Path(__file__).resolve().parents[3]

CONFIGS = REPO_ROOT / "pipelines" / "configs"
TINY = CONFIGS / "train_tiny.yaml"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("train_*.yaml")), ids=lambda p: p.name)
def test_every_recipe_yaml_loads_with_overrides(path: Path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# medvlm train pipelines/configs/" + path.name)
    cfg = load_train_config(path, ["lora.optim.lr=5e-4", "model.decoder.hidden_size=64", "tracking=none"])
    assert cfg.lora.optim.lr == pytest.approx(5e-4)
    assert cfg.model.decoder.hidden_size == 64 and cfg.tracking == "none"


def test_bad_keys_and_combinations_name_the_flag():
    with pytest.raises(ConfigError, match="lora.nope"):
        load_train_config(TINY, ["lora.nope=1"])
    with pytest.raises(ConfigError, match="projector.train_decoder"):
        load_train_config(TINY, ["projector.train_decoder=frozen"])
    with pytest.raises(ConfigError, match="model.lora.r"):
        load_train_config(TINY, ["model.lora.r=0"])
    with pytest.raises(ConfigError, match="key=value"):
        load_train_config(TINY, ["lora.steps"])


def test_a_single_stage_command_line_keeps_the_yaml_keys():
    cfg = config_from_argv([str(TINY), "lora.steps=7"], "pipelines.recipes.lora", ("lora",))
    assert cfg.stages == ("lora",) and cfg.lora.steps == 7
    assert isinstance(cfg.lora, LoraStageConfig) and isinstance(cfg.projector, ProjectorStageConfig)
    with pytest.raises(SystemExit, match="usage: python -m pipelines.recipes.lora CONFIG"):
        config_from_argv([], "pipelines.recipes.lora", ("lora",))
