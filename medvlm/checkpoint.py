"""Checkpoint directories: everything needed to rebuild the model, verified, safetensors only.

Layout of one checkpoint directory::

    medvlm_config.json        our ModelConfig (how the model was built; prompts; generation settings)
    config.json               the LlavaConfig          } an ordinary Hugging Face LLaVA checkpoint:
    model.safetensors         base weights (no LoRA)   } LlavaForConditionalGeneration.from_pretrained
    processor / tokenizer files (processor_config.json, tokenizer.json, chat_template.jinja, ...)
    adapter/                  peft LoRA adapter (adapter_config.json, adapter_model.safetensors)
    findings_head.*           optional findings head on the tower (`medvlm.heads`: safetensors + spec JSON)
    manifest.json             sha256 of every file above + one content hash over all of them

`load_checkpoint` rebuilds everything from the directory alone, refuses pickle-based weight files
(they can execute code when loaded) and refuses a directory whose files differ from the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compliance.clock import sha256_file
from medvlm.bundle import MedVLM, torch_dtype, unwrap
from medvlm.config import ModelConfig
from medvlm.errors import CheckpointError, CheckpointIntegrityError, UnsafeCheckpointError
from medvlm.hf_folder import PICKLE_SUFFIXES

CONFIG_FILE = "medvlm_config.json"
MANIFEST_FILE = "manifest.json"
ADAPTER_DIR = "adapter"
FORMAT_VERSION = 1


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def content_hash(file_hashes: dict[str, str]) -> str:
    """One sha256 over all (path, sha256) pairs, in path order: the checkpoint's identity."""
    h = hashlib.sha256()
    for name in sorted(file_hashes):
        h.update(f"{name}\0{file_hashes[name]}\n".encode())
    return h.hexdigest()


def _canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """The one identity of a checkpoint folder, read from its verified manifest.

    The registry tags versions with it and the drafting job keys its queue on it, so both name the
    same checkpoint the same way.
    """

    model_version: str
    """The manifest's content hash: sha256 over every (file, sha256) pair."""
    weights_hash: str
    """sha256 over the (file, sha256) pairs of the ``*.safetensors`` files."""
    adapter_hash: str | None
    """sha256 over the (file, sha256) pairs under ``adapter/``; None without a LoRA adapter."""


def fingerprint(directory: str | Path, manifest: dict[str, Any] | None = None) -> Fingerprint:
    """The checkpoint's `Fingerprint` (from ``manifest`` when the caller has verified it already)."""
    if manifest is None:
        manifest = verify_checkpoint(directory)
    files: dict[str, str] = manifest["files"]
    adapter = {k: v for k, v in files.items() if k.startswith(f"{ADAPTER_DIR}/")}
    weights = {k: v for k, v in files.items() if k.endswith(".safetensors")}
    return Fingerprint(
        model_version=str(manifest["content_hash"]),
        weights_hash=_canonical_hash(weights),
        adapter_hash=_canonical_hash(adapter) if adapter else None,
    )


def _base_state_dict(model: Any) -> dict[str, Any]:
    """Base weights of a peft-wrapped model, in the plain model's key names, LoRA tensors left out."""
    state = unwrap(model).state_dict()
    out = {}
    for key, value in state.items():
        if "lora_" in key:
            continue
        out[key.replace(".base_layer.", ".")] = value
    return out


def save_checkpoint(bundle: MedVLM, directory: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write a checkpoint directory (layout in the module docstring).

    Args:
        bundle: model + processor + config.
        directory: target directory; created if missing.
        overwrite: allow a non-empty directory (its files are replaced, extra files removed).

    Returns:
        The manifest: `{"format": 1, "files": {path: sha256}, "content_hash": ...}`.

    Raises:
        CheckpointError: the directory is not empty and `overwrite` is False.
    """
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise CheckpointError(f"{directory} is not empty: choose a new directory or pass overwrite=True")
        import shutil

        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)

    (directory / CONFIG_FILE).write_text(
        json.dumps({"format": FORMAT_VERSION, "family": bundle.family.name, "model": bundle.config.to_dict()}, indent=2),
        encoding="utf-8",
    )
    bundle.processor.save_pretrained(str(directory))
    llava = unwrap(bundle.model)
    if llava is not bundle.model:  # peft: base weights without LoRA, adapter separately
        llava.save_pretrained(str(directory), state_dict=_base_state_dict(bundle.model))
        bundle.model.save_pretrained(str(directory / ADAPTER_DIR), safe_serialization=True)
    else:
        llava.save_pretrained(str(directory))
    if bundle.head is not None:  # the findings head (classification-guided drafting), hashed with the rest
        bundle.head.save(directory)
    unsafe = [f for f in _files(directory) if f.endswith(PICKLE_SUFFIXES)]
    if unsafe:  # defensive: a library default changing back to pickle must not go unnoticed
        raise UnsafeCheckpointError(f"{directory}: pickle files were written: {unsafe}")

    hashes = {name: sha256_file(directory / name) for name in _files(directory)}
    manifest = {"format": FORMAT_VERSION, "files": hashes, "content_hash": content_hash(hashes)}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def verify_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Check a checkpoint directory against its manifest and for pickle files.

    Returns:
        The manifest.

    Raises:
        CheckpointError: not a directory, or no manifest / config.
        UnsafeCheckpointError: a `*.bin`, `*.pt`, `*.pth`, `*.pkl`, `*.pickle` or `*.ckpt` file is present.
        CheckpointIntegrityError: a file is missing, added, or its sha256 differs from the manifest.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a checkpoint directory")
    files = _files(directory)
    unsafe = [f for f in files if f.lower().endswith(PICKLE_SUFFIXES)]
    if unsafe:
        raise UnsafeCheckpointError(
            f"{directory} holds pickle-based weight files {unsafe}: refused (loading them can run code); "
            "convert them to safetensors"
        )
    if MANIFEST_FILE not in files or CONFIG_FILE not in files:
        raise CheckpointError(f"{directory} has no {MANIFEST_FILE} or {CONFIG_FILE}: not a medvlm checkpoint")
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        expected: dict[str, str] = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointIntegrityError(
            f"{directory / MANIFEST_FILE} is unreadable: {type(exc).__name__}"
        ) from exc
    present = set(files) - {MANIFEST_FILE}
    if present != set(expected):
        raise CheckpointIntegrityError(
            f"{directory}: files differ from the manifest (missing {sorted(set(expected) - present)}, "
            f"unexpected {sorted(present - set(expected))})"
        )
    changed = [name for name in sorted(expected) if sha256_file(directory / name) != expected[name]]
    if changed:
        raise CheckpointIntegrityError(f"{directory}: sha256 differs from the manifest for {changed}")
    if manifest.get("content_hash") != content_hash(expected):
        raise CheckpointIntegrityError(
            f"{directory / MANIFEST_FILE}: content_hash does not match its file list"
        )
    return manifest


def load_checkpoint(directory: str | Path, *, merge: bool = False, trainable: bool = False,
                    trust_remote_code: bool = False, dtype: str | None = None) -> MedVLM:
    """Rebuild model, processor and config from a checkpoint directory alone.

    Args:
        directory: written by `save_checkpoint`.
        merge: fold the LoRA adapter into the base weights (faster inference, no peft wrapper).
        trainable: keep the adapter trainable (to resume training); ignored with `merge`.
        trust_remote_code: a model fine-tuned from a remote-code folder (its `*.py` saved beside the
            weights, covered by the manifest) loads with its own class only with this flag.
        dtype: "float32" or "bfloat16" instead of the checkpoint's own `model.dtype`.

    Returns:
        `MedVLM`, model in eval mode.

    Raises:
        CheckpointError: see `verify_checkpoint` (pickle files, tampering, missing files);
            RemoteCodeError: remote code without `trust_remote_code`.
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from medvlm.families import FAMILIES, OWN, get_family

    directory = Path(directory)
    verify_checkpoint(directory)
    stored = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    if stored.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{directory / CONFIG_FILE}: format {stored.get('format')} unsupported")
    cfg = ModelConfig.from_dict(stored["model"])
    family = FAMILIES[OWN] if stored.get("family", OWN) == OWN else get_family(stored["family"])
    if dtype is not None:
        cfg = dataclasses.replace(cfg, dtype=dtype)
    if family.name == OWN:
        model = LlavaForConditionalGeneration.from_pretrained(
            str(directory), local_files_only=True, use_safetensors=True, dtype=torch_dtype(cfg.dtype)
        )
        processor = AutoProcessor.from_pretrained(str(directory), local_files_only=True)
    else:  # a fine-tuned Hugging Face family: its own class and processor (images-only when video-capable)
        from medvlm.hf_folder import check_folder, from_pretrained
        from medvlm.hub_processor import load_processor

        # the manifest already pins every file, the remote code included: only the flag is checked here
        hf_config = check_folder(directory, trust_remote_code=trust_remote_code)
        model = from_pretrained(directory, hf_config, trust_remote_code=trust_remote_code,
                                dtype=torch_dtype(cfg.dtype))
        processor = load_processor(directory, family, trust_remote_code=trust_remote_code)
    if (directory / ADAPTER_DIR).is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(
            model, str(directory / ADAPTER_DIR), is_trainable=trainable and not merge
        )
        if merge:
            model = model.merge_and_unload()
    model.eval()
    from medvlm.heads import FindingsClassifier

    return MedVLM(model=model, processor=processor, config=cfg, family=family,
                  source={"path": str(directory), "family": family.name}, head=FindingsClassifier.load(directory))


def merge_adapter(bundle: MedVLM) -> MedVLM:
    """A bundle whose LoRA adapter is folded into the base weights (peft `merge_and_unload`).

    The input bundle's model is changed in place by peft (its layers are replaced); use the
    returned bundle afterwards.
    """
    if unwrap(bundle.model) is bundle.model:
        return bundle
    import dataclasses

    return dataclasses.replace(bundle, model=bundle.model.merge_and_unload())
