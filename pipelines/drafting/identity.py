"""Which model drafts, with which prompt, under which run settings.

The model is a medvlm checkpoint or a plain Hugging Face folder of an allowed family (or an MLflow
URI resolved to one); its model version is `medvlm.loading.model_fingerprint` (a checkpoint's
manifest hash; a hash over every file of a Hugging Face folder), the prompt hash is the sha256 of
the family, prompt and decoding settings. Both are read without loading the weights. A job is keyed on (study UID, model version, prompt hash), so
re-running the job skips studies already drafted and resumes those left queued or leased by a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import PipelineError

if TYPE_CHECKING:
    from medvlm.config import GenerationSettings, ModelConfig


class DraftError(PipelineError, ValueError):
    """Bad drafting settings (the message names the flag to change)."""


@dataclass(frozen=True)
class DraftOptions:
    """Settings of one drafting run."""

    lease_seconds: float = 300.0
    """Lease per claimed job; renewed every third of it while drafting, so a live worker keeps
    its jobs and a dead one loses them after at most this long."""
    batch_size: int = 4
    """Jobs claimed together and drafted in one `generate` call. Small enough that two workers
    share the tail of a batch job evenly; large enough to amortise the prompt pass."""
    max_attempts: int = 3
    """Claims allowed per job before it is marked failed."""
    poll_seconds: float = 0.2
    """Wait between claims when nothing is claimable but jobs are still pending."""
    max_new_tokens: int | None = None
    """Override of the checkpoint's `generation.max_new_tokens` (part of the prompt hash)."""
    low_confidence: float = 0.5
    """Sentences with a confidence below this are flagged ``low_confidence``."""
    window: str = "auto"
    """Intensity rule used when images are normalised (see `dicom_io.normalise`)."""
    throttle_s: float = 0.0
    """Sleep this long after claiming each batch, before drafting (tests: reproducible crash points)."""
    threads_per_worker: int | None = None
    """Torch intra-op threads per worker process; None: 1 with several workers, torch's default with one."""
    trust_remote_code: bool = False
    """Allow a Hugging Face folder's own code (``--trust-remote-code``); its hashes are pinned for the run."""
    dtype: str | None = None
    """Weights dtype ("float32" | "bfloat16"); None: a medvlm checkpoint's own, float32 for a Hugging Face folder."""

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0:
            raise DraftError(f"--lease-seconds must be > 0, got {self.lease_seconds}")
        if self.batch_size < 1:
            raise DraftError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_attempts < 1:
            raise DraftError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise DraftError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        from medvlm.config import DTYPES

        if self.dtype not in (None, *DTYPES):
            raise DraftError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


@dataclass(frozen=True)
class ModelIdentity:
    """Which model drafts, and with which prompt.

    Attributes:
        checkpoint: local checkpoint folder.
        model_version: the checkpoint manifest's content hash (sha256 hex).
        prompt_hash: sha256 hex of the prompt wording and decoding settings.
        adapter_hash: hash over the LoRA adapter files, or None without an adapter.
        image_size: the model's input edge (images are resized to it when loaded).
        max_views: most views the model takes per study (frontal first, then lateral).
        family: the model's family (`medvlm.families`; ``medvlm`` for medvlm's own checkpoints).
        trust_remote_code: the folder's own code may run (``--trust-remote-code``).
        remote_code: sha256 of each remote code file, pinned when the job started: every worker
            refuses code that differs (empty without remote code).
        dtype: the weights dtype the workers load (None: the checkpoint's own / float32).
    """

    checkpoint: str
    model_version: str
    prompt_hash: str
    adapter_hash: str | None
    image_size: int
    max_views: int = 2
    family: str = "medvlm"
    trust_remote_code: bool = False
    remote_code: dict[str, str] = field(default_factory=dict)
    dtype: str | None = None


def _canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def generation_settings(cfg: ModelConfig, options: DraftOptions) -> GenerationSettings:
    """The checkpoint's decoding settings with this run's overrides (max tokens, batch size)."""
    gen = cfg.generation
    changes: dict[str, Any] = {"batch_size": options.batch_size}
    if options.max_new_tokens is not None:
        changes["max_new_tokens"] = options.max_new_tokens
    return dataclasses.replace(gen, **changes)


def _prompt_hash(cfg: ModelConfig, options: DraftOptions, max_views: int, family: str | None = None) -> str:
    gen = generation_settings(cfg, options)
    prompt = {
        "prompt": dataclasses.asdict(cfg.prompt),
        # batch size changes padding only, not what a study's prompt asks for
        "generation": {k: v for k, v in dataclasses.asdict(gen).items() if k != "batch_size"},
        "max_views": max_views,
    }
    if family is not None:  # a Hugging Face folder: its chat template renders the same settings differently
        prompt["family"] = family
    if options.dtype is not None:  # bf16 weights may choose other tokens than the checkpoint's own dtype
        prompt["dtype"] = options.dtype
    return _canonical_hash(prompt)


def model_identity(checkpoint: str | Path, options: DraftOptions | None = None) -> ModelIdentity:
    """Read a model folder's identity without loading the weights.

    Args:
        checkpoint: a folder written by `medvlm.checkpoint.save_checkpoint`, or a Hugging Face
            ``save_pretrained`` folder (model + processor) of an allowed family.
        options: run options (a `max_new_tokens` override changes the prompt hash;
            ``trust_remote_code`` allows a folder's own code).

    Returns:
        The identity.

    Raises:
        medvlm.errors.CheckpointError: not a usable folder: manifest or config missing, a family
            off the allow-list, pickle files, remote code without the flag or changed since trusted.
    """
    from medvlm.checkpoint import CONFIG_FILE, MANIFEST_FILE, fingerprint
    from medvlm.config import ModelConfig
    from medvlm.errors import CheckpointError
    from medvlm.families import FAMILIES, OWN
    from medvlm.loading import is_medvlm_checkpoint

    options = options or DraftOptions()
    folder = Path(checkpoint)
    if not is_medvlm_checkpoint(folder):
        return _folder_identity(folder, options)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        stored = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: not a medvlm checkpoint ({type(exc).__name__})") from exc
    cfg = ModelConfig.from_dict(stored["model"])
    family = stored.get("family") or OWN  # another family: a fine-tuned Hugging Face model saved by medvlm
    if family != OWN:  # fine-tuned from a remote-code folder: its code runs only with the flag
        from medvlm.hf_folder import check_folder

        check_folder(folder, trust_remote_code=options.trust_remote_code)
    max_views = min(cfg.max_views, FAMILIES[family].max_images) if family in FAMILIES else cfg.max_views
    fp = fingerprint(folder, manifest)
    return ModelIdentity(
        checkpoint=str(folder.resolve()),
        model_version=fp.model_version,
        prompt_hash=_prompt_hash(cfg, options, max_views, None if family == OWN else family),
        adapter_hash=fp.adapter_hash,
        image_size=int(cfg.image_size),
        max_views=int(max_views),
        family=str(family or "medvlm"),
        trust_remote_code=options.trust_remote_code,
        dtype=options.dtype,
    )


def _folder_identity(folder: Path, options: DraftOptions) -> ModelIdentity:
    """A Hugging Face folder's identity: config, processor and file hashes only (no weights loaded).

    Image size and views come from the processor and the family row, with the same `ModelConfig`
    defaults `medvlm.loading.load_vlm` gives the loaded bundle, so the prompt hash matches what
    the workers draft with.
    """
    from medvlm.config import ModelConfig
    from medvlm.hub_processor import load_processor, nominal_image_size
    from medvlm.loading import inspect_folder, model_fingerprint

    hf_config, spec, remote_code = inspect_folder(folder, trust_remote_code=options.trust_remote_code)
    check_weights(folder, hf_config, trust_remote_code=options.trust_remote_code)
    processor = load_processor(folder, spec, trust_remote_code=options.trust_remote_code)
    cfg = ModelConfig(init_from=str(folder), image_size=nominal_image_size(processor))
    max_views = min(spec.max_images, cfg.max_views)
    fp = model_fingerprint(folder)
    return ModelIdentity(
        checkpoint=str(folder.resolve()),
        model_version=fp.model_version,
        prompt_hash=_prompt_hash(cfg, options, max_views, spec.name),
        adapter_hash=fp.adapter_hash,
        image_size=int(cfg.image_size),
        max_views=int(max_views),
        family=spec.name,
        trust_remote_code=options.trust_remote_code,
        dtype=options.dtype,
        remote_code=remote_code,
    )


def check_weights(folder: str | Path, hf_config: dict[str, Any], *, trust_remote_code: bool = False) -> None:
    """Refuse a Hugging Face folder whose tensors do not match its architecture, without loading them.

    The model is built on the meta device, so only the safetensors headers are read: a job is
    refused before it queues studies, not later in every worker (`medvlm.loading.load_vlm` checks
    the same when it loads).

    Raises:
        medvlm.errors.WeightsMismatchError: a missing, unexpected or mis-shaped tensor.
    """
    from medvlm.errors import WeightsMismatchError
    from medvlm.hf_folder import from_pretrained

    try:
        _, info = from_pretrained(folder, hf_config, trust_remote_code=trust_remote_code, device_map="meta",
                                  output_loading_info=True)
    except (RuntimeError, ValueError) as exc:  # transformers raises on a shape mismatch
        raise WeightsMismatchError(f"{folder}: the weights do not fit the architecture ({type(exc).__name__}). "
                                   "Re-save the model with save_pretrained") from exc
    problems = "; ".join(f"{k}: {sorted(v)[:5]}" for k, v in info.items() if v)
    if problems:
        raise WeightsMismatchError(f"{folder}: the weights do not match the architecture ({problems}). Refused: "
                                   "those tensors would be random. Re-save the model with save_pretrained")


def author(ident: ModelIdentity) -> str:
    """The author recorded on the review versions this model drafts."""
    return f"medvlm@{ident.model_version[:12]}"
