"""Load any supported model folder: a medvlm checkpoint, or a plain Hugging Face one of an allowed family.

`load_model(path)` is the one entry point: a folder with `medvlm_config.json` is a medvlm checkpoint
(`medvlm.checkpoint.load_checkpoint`, manifest-verified); any other folder is a Hugging Face
`save_pretrained` folder (model + processor) loaded by `load_vlm` through
`AutoModelForImageTextToText` + the checkpoint's own processor. `load_vlm` never runs a model it
cannot trust, and says what to do instead:

- `model_type` not on the allow-list (`medvlm.families`), and no
  trusted remote-code class built on an allowed family's class     -> UnsupportedFamilyError
- a pickle file anywhere in the folder (`*.bin`, `*.pt`, ...)       -> UnsafeCheckpointError
- an `auto_map` (remote code) without `trust_remote_code=True`      -> RemoteCodeError
- remote code that differs from the hashes recorded before          -> RemoteCodeChangedError
- any missing, unexpected or mis-shaped weight (random weights)     -> WeightsMismatchError
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvlm.bundle import MedVLM, torch_dtype
from medvlm.checkpoint import CONFIG_FILE, Fingerprint, _canonical_hash, content_hash
from medvlm.config import ModelConfig
from medvlm.errors import (
    CheckpointError,
    ConfigError,
    RemoteCodeChangedError,
    WeightsMismatchError,
)
from medvlm.families import FamilySpec
from medvlm.hf_folder import check_folder, folder_files, from_pretrained, resolve_family
from medvlm.hub_processor import load_processor, nominal_image_size

REMOTE_CODE_LOCK = "medvlm_remote_code.json"
"""Beside the model: sha256 of each remote code file, written on the first trusted load.

Why a file beside the model: the folder is what users copy, register and point the CLI at, so the
record of "the code we trusted" travels with it and every later load (CLI, dashboard, workers) checks
the same record without a database. It is trust-on-first-use: it catches code that changed after it
was trusted (a re-download, an edit); whoever can rewrite the folder can rewrite the lock too, so the
hashes are also returned for the caller's manifest and audit log, and `remote_code_hashes=` checks
against those instead.
"""


def is_medvlm_checkpoint(path: str | Path) -> bool:
    """Whether a folder is a medvlm checkpoint (has `medvlm_config.json`) rather than a Hugging Face folder."""
    return (Path(path) / CONFIG_FILE).is_file()


def load_model(path: str | Path, *, trust_remote_code: bool = False, dtype: str | None = None,
               merge: bool = False) -> MedVLM:
    """Load a medvlm checkpoint or a Hugging Face folder of an allowed family, in eval mode.

    Args:
        path: the folder.
        trust_remote_code: allow a Hugging Face folder's own `*.py` code (see `load_vlm`).
        dtype: "float32" or "bfloat16"; default: a medvlm checkpoint's own, float32 for a Hugging Face folder.
        merge: fold a medvlm checkpoint's LoRA adapter into the weights.

    Raises:
        CheckpointError: see `load_vlm` and `medvlm.checkpoint.load_checkpoint`.
    """
    if is_medvlm_checkpoint(path):
        from medvlm.checkpoint import load_checkpoint

        return load_checkpoint(path, merge=merge, trust_remote_code=trust_remote_code, dtype=dtype)
    return load_vlm(path, trust_remote_code=trust_remote_code, dtype=dtype)


def remote_code_hashes(path: str | Path) -> dict[str, str]:
    """sha256 of every `*.py` file of a folder, by relative path."""
    from compliance.clock import sha256_file

    directory = Path(path)
    return {name: sha256_file(directory / name) for name in folder_files(directory) if name.endswith(".py")}


def verify_remote_code(path: str | Path, expected: dict[str, str] | None = None) -> dict[str, str]:
    """Hash the remote code and compare it with `expected`, else with the lock file (written if absent).

    Returns:
        The hashes (file -> sha256), for the manifest and the audit log.

    Raises:
        RemoteCodeChangedError: a file was changed, added or removed since the hashes were recorded.
    """
    directory = Path(path)
    hashes = remote_code_hashes(directory)
    lock = directory / REMOTE_CODE_LOCK
    if expected is None and lock.is_file():
        expected = json.loads(lock.read_text(encoding="utf-8"))["files"]
    if expected is None:
        tmp = lock.with_suffix(".tmp")
        tmp.write_text(json.dumps({"files": hashes}, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(lock)
        return hashes
    changed = sorted(n for n in set(hashes) | set(expected) if hashes.get(n) != expected.get(n))
    if changed:
        raise RemoteCodeChangedError(
            f"{directory}: remote code differs from the hashes recorded when it was trusted: {changed}. "
            f"Review the change; if it is wanted, delete {REMOTE_CODE_LOCK} and load again with trust_remote_code"
        )
    return hashes


def inspect_folder(path: str | Path, *, trust_remote_code: bool = False, remote_code: dict[str, str] | None = None,
                   family: str | None = None) -> tuple[dict[str, Any], FamilySpec, dict[str, str]]:
    """Check a Hugging Face folder without loading weights, in the safe order.

    The pickle and flag checks, then the remote code against its recorded hashes, and only then
    the family (which, for a remote-code model, imports the folder's code).

    Returns:
        (`config.json` as a dict, the family row, the remote code hashes or {}).
    """
    hf_config = check_folder(path, trust_remote_code=trust_remote_code)
    hashes = verify_remote_code(path, remote_code) if hf_config.get("auto_map") else {}
    spec = resolve_family(path, hf_config, trust_remote_code=trust_remote_code, family=family)
    return hf_config, spec, hashes


def load_vlm(path: str | Path, *, trust_remote_code: bool = False, dtype: str | None = None,
             family: str | None = None, remote_code: dict[str, str] | None = None,
             config: ModelConfig | None = None) -> MedVLM:
    """Load a Hugging Face folder (`save_pretrained` model + processor) of an allowed family, in eval mode.

    Args:
        path: the folder (never a hub id: nothing is downloaded).
        trust_remote_code: allow the folder's `*.py` code (config `auto_map`); their sha256 are
            checked against `remote_code`, else the folder's lock file (written on the first load).
        dtype: "float32" (default) or "bfloat16".
        family: treat the checkpoint as this family (a remote-code model built on one, e.g.
            MAIRA-2 on "llava"); default its `model_type`.
        remote_code: recorded hashes (file -> sha256) to check the remote code against.
        config: prompts / generation settings; default `ModelConfig` defaults with `init_from=path`.

    Returns:
        `MedVLM` with `family` set and `source` = {"path", "family", "model_type", "remote_code"}.

    Raises:
        UnsupportedFamilyError, UnsafeCheckpointError, RemoteCodeError, RemoteCodeChangedError,
        WeightsMismatchError (all `CheckpointError`), ConfigError (the prompt cannot fit the context).
    """
    directory = Path(path)
    hf_config, spec, hashes = inspect_folder(directory, trust_remote_code=trust_remote_code,
                                             remote_code=remote_code, family=family)
    if not any(directory.glob("*.safetensors")):
        raise CheckpointError(f"{directory} has no *.safetensors weights: re-save the model with save_pretrained")
    model, info = from_pretrained(directory, hf_config, trust_remote_code=trust_remote_code,
                                  dtype=torch_dtype(dtype), output_loading_info=True)
    problems = {k: sorted(v) for k, v in info.items() if v}
    if problems:
        detail = "; ".join(f"{k}: {v[:5]}{' ...' if len(v) > 5 else ''}" for k, v in problems.items())
        raise WeightsMismatchError(
            f"{directory}: the weights do not match the {spec.name} architecture ({detail}). Refused: those "
            "tensors would be random. Re-save the model with save_pretrained, or pass the right family"
        )
    processor = load_processor(directory, spec, trust_remote_code=trust_remote_code)
    cfg = config or ModelConfig(init_from=str(directory), image_size=nominal_image_size(processor),
                                dtype=dtype or "float32")
    model.eval()
    source = {"path": str(directory), "family": spec.name, "model_type": hf_config.get("model_type"),
              "remote_code": hashes}
    bundle = MedVLM(model=model, processor=processor, config=cfg, family=spec, source=source)
    check_context(bundle)
    return bundle


def check_context(bundle: MedVLM) -> int:
    """Encode a blank study with as many images as the family takes; refuse when it cannot fit the context.

    Returns:
        The prompt's token count.

    Raises:
        ConfigError: the prompt alone is longer than the loaded decoder's `max_position_embeddings`.
    """
    import numpy as np

    from medvlm.chat import context_length, encode_study

    size = bundle.config.image_size
    n = min(bundle.family.max_images, bundle.config.max_views)
    blank = [np.zeros((size, size), dtype=np.float32)] * n
    tokens = int(encode_study(bundle, blank)["input_ids"].shape[-1])
    limit = context_length(bundle)
    if tokens > limit:
        raise ConfigError(
            f"a {n}-image prompt at {size} px is {tokens} tokens > the model's max_position_embeddings={limit}: "
            "lower max_views or the image size"
        )
    return tokens


def folder_fingerprint(path: str | Path) -> Fingerprint:
    """A Hugging Face folder's identity: sha256 over every (file, sha256) pair (the lock file excluded)."""
    from compliance.clock import sha256_file

    directory = Path(path)
    files = {n: sha256_file(directory / n) for n in folder_files(directory) if n != REMOTE_CODE_LOCK}
    weights = {k: v for k, v in files.items() if k.endswith(".safetensors")}
    return Fingerprint(model_version=content_hash(files), weights_hash=_canonical_hash(weights), adapter_hash=None)


def model_fingerprint(path: str | Path) -> Fingerprint:
    """The `Fingerprint` of a medvlm checkpoint (manifest-verified) or of a Hugging Face folder."""
    if is_medvlm_checkpoint(path):
        from medvlm.checkpoint import fingerprint

        return fingerprint(path)
    return folder_fingerprint(path)
