"""A Hugging Face `save_pretrained` folder: the checks that need no weights, its family, its model class.

Kept apart from `medvlm.loading` (which also reads medvlm checkpoints) so that
`medvlm.checkpoint` can load a fine-tuned remote-code model with the same class and checks
without an import circle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvlm.errors import CheckpointError, RemoteCodeError, UnsafeCheckpointError, UnsupportedFamilyError
from medvlm.families import FAMILIES, OWN, FamilySpec, get_family

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
"""Files that unpickle (run code) when loaded: refused in any model folder."""


def folder_files(directory: Path) -> list[str]:
    """Every file under `directory`, as sorted relative POSIX paths."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def check_folder(path: str | Path, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """The checks that need no model: folder, pickle files, remote code flag. Returns `config.json`."""
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise CheckpointError(
            f"{directory} has no config.json: not a Hugging Face model folder (save it with save_pretrained)"
        )
    unsafe = [f for f in folder_files(directory) if f.lower().endswith(PICKLE_SUFFIXES)]
    if unsafe:
        raise UnsafeCheckpointError(
            f"{directory} holds pickle files {unsafe}: refused (loading them can run code); "
            "re-save the model with save_pretrained (safetensors) and delete them"
        )
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if config.get("auto_map") and not trust_remote_code:
        raise RemoteCodeError(
            f"{directory} runs its own code ({sorted(config['auto_map'])} in config.json): read the *.py files, "
            "then pass trust_remote_code=True (--trust-remote-code) to allow it"
        )
    return config


AUTO_MODEL_KEYS = ("AutoModelForImageTextToText", "AutoModelForVision2Seq", "AutoModelForCausalLM", "AutoModel")
"""`auto_map` keys that may name a remote-code model class, in the order they are tried."""


def model_class(directory: str | Path, hf_config: dict[str, Any], *, trust_remote_code: bool = False) -> Any:
    """The class whose `from_pretrained` loads the folder.

    A trusted remote-code folder: the class its `auto_map` names (MAIRA-2 ships
    `AutoModelForVision2Seq`, others `AutoModelForImageTextToText` or `AutoModelForCausalLM`),
    imported from the folder itself (never downloaded). Otherwise `AutoModelForImageTextToText`.
    Call it only after `check_folder` and `verify_remote_code`: importing the class runs its code.
    """
    from transformers import AutoModelForImageTextToText

    auto_map = hf_config.get("auto_map") or {}
    key = next((k for k in AUTO_MODEL_KEYS if k in auto_map), None)
    if key is None or not trust_remote_code:
        return AutoModelForImageTextToText
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    return get_class_from_dynamic_module(str(auto_map[key]), str(directory), local_files_only=True)


def _supported_base(cls: type) -> FamilySpec | None:
    """The supported family whose transformers class `cls` is or subclasses (nearest in the MRO first)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as NAMES

    by_class = {name: model_type for model_type, name in NAMES.items()
                if isinstance(name, str) and model_type in FAMILIES and model_type != OWN}
    for base in cls.__mro__:
        if base.__module__.startswith("transformers.") and base.__name__ in by_class:
            return FAMILIES[by_class[base.__name__]]
    return None


def resolve_family(directory: str | Path, hf_config: dict[str, Any], *, trust_remote_code: bool = False,
                   family: str | None = None) -> FamilySpec:
    """The family row of a Hugging Face folder.

    Its `model_type` when that is on the allow-list; for a trusted remote-code model with its own
    `model_type` (MAIRA-2: "maira2"), the supported family its model class is built on
    (`Maira2ForConditionalGeneration` subclasses `LlavaForConditionalGeneration`: "llava"). A
    remote model that copies a family's code instead of subclassing it can name it with `family`.

    Raises:
        UnsupportedFamilyError: none of these finds an allowed family (the message lists them).
        CheckpointError: `family` given for a plain (not remote-code) folder of another family.
    """
    model_type = str(hf_config.get("model_type"))
    remote = bool(hf_config.get("auto_map"))
    if family:
        if family != model_type and not remote:
            raise CheckpointError(f"{directory} is a {model_type} checkpoint: family={family!r} is only for "
                                  "remote-code models built on a supported family; leave it unset")
        return get_family(family)
    if model_type in FAMILIES and model_type != OWN:
        return FAMILIES[model_type]
    if remote and trust_remote_code:
        cls = model_class(directory, hf_config, trust_remote_code=True)
        base = _supported_base(cls)
        if base is not None:
            return base
        try:
            get_family(model_type)
        except UnsupportedFamilyError as exc:
            raise UnsupportedFamilyError(
                f"remote-code model class {cls.__name__} is built on none of the supported families' "
                f"transformers classes. {exc}") from None
    return get_family(model_type)


def from_pretrained(directory: str | Path, hf_config: dict[str, Any], *, trust_remote_code: bool = False,
                    **kwargs: Any) -> Any:
    """`model_class(...).from_pretrained` on local safetensors only (`kwargs`: dtype, device_map, ...)."""
    cls = model_class(directory, hf_config, trust_remote_code=trust_remote_code)
    if cls.__name__.startswith("Auto"):
        kwargs["trust_remote_code"] = trust_remote_code
    return cls.from_pretrained(str(directory), local_files_only=True, use_safetensors=True, **kwargs)
