"""Tiny random checkpoints of each supported family for pipelines tests (built as in tests/medvlm/families).

`save_family` writes a family's tiny model + processor with `save_pretrained`, as a user would save a
downloaded checkpoint; `add_remote_code` turns a LLaVA folder into a remote-code model (a local
`LlavaForConditionalGeneration` subclass named by `auto_map`), as MAIRA-2 or CheXagent ship.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

TINY_VLMS = Path(__file__).resolve().parents[1] / "medvlm" / "families" / "_tiny_vlms.py"
REMOTE_CODE = '''from transformers import LlavaForConditionalGeneration


class RemoteLlava(LlavaForConditionalGeneration):
    """A LLaVA shipped with its own code (stands in for MAIRA-2 / CheXagent)."""
'''


def _tiny_vlms():
    module = sys.modules.get("_tiny_vlms")
    if module is None:
        spec = importlib.util.spec_from_file_location("_tiny_vlms", TINY_VLMS)
        module = importlib.util.module_from_spec(spec)
        sys.modules["_tiny_vlms"] = module
        spec.loader.exec_module(module)
    return module


def families() -> list[str]:
    """Every family with a tiny builder."""
    return sorted(_tiny_vlms().BUILDERS)


def save_family(family: str, directory: Path) -> Path:
    """Build `family`'s tiny model + processor (seed 0) and save both into `directory`."""
    return _tiny_vlms().save_tiny(family, Path(directory))


MAIRA_LIKE_CODE = '''from transformers import LlavaConfig, LlavaForConditionalGeneration


class MairaLikeConfig(LlavaConfig):
    model_type = "maira_like"


class MairaLikeForConditionalGeneration(LlavaForConditionalGeneration):
    """Its own model_type, built on LLaVA, named under AutoModelForVision2Seq (as MAIRA-2 ships)."""

    config_class = MairaLikeConfig
'''


def add_remote_code(folder: Path, *, own_model_type: bool = False) -> Path:
    """Make a saved LLaVA folder a remote-code model: a `*.py` file and an `auto_map` in config.json.

    The weights are re-saved under the module names the subclass loads (LLaVA saves legacy names that
    transformers maps back only for its own class), so a trusted load has no random tensor. With
    `own_model_type` the folder looks like MAIRA-2: `model_type` "maira_like" (on no allow-list),
    its own config class, the model class under `AutoModelForVision2Seq`.
    """
    from safetensors.torch import save_file
    from transformers import LlavaForConditionalGeneration

    state = LlavaForConditionalGeneration.from_pretrained(folder).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "modeling_remote.py").write_text(MAIRA_LIKE_CODE if own_model_type else REMOTE_CODE, encoding="utf-8")
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModelForImageTextToText": "modeling_remote.RemoteLlava"}
    if own_model_type:
        config["model_type"] = "maira_like"
        config["auto_map"] = {"AutoConfig": "modeling_remote.MairaLikeConfig",
                              "AutoModelForVision2Seq": "modeling_remote.MairaLikeForConditionalGeneration"}
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder
