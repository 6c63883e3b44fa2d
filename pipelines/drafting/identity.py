"""Which model drafts, with which prompt, under which run settings.

The model is a checkpoint folder (or an MLflow URI resolved to one); its model version is the
manifest's content hash (`medvlm.checkpoint.fingerprint`), the prompt hash is the sha256 of the
prompt and decoding settings. A job is keyed on (study UID, model version, prompt hash), so
re-running the job skips studies already drafted and resumes those left queued or leased by a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
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

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0:
            raise DraftError(f"--lease-seconds must be > 0, got {self.lease_seconds}")
        if self.batch_size < 1:
            raise DraftError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_attempts < 1:
            raise DraftError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise DraftError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")


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
    """

    checkpoint: str
    model_version: str
    prompt_hash: str
    adapter_hash: str | None
    image_size: int
    max_views: int = 2


def _canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def generation_settings(cfg: ModelConfig, options: DraftOptions) -> GenerationSettings:
    """The checkpoint's decoding settings with this run's overrides (max tokens, batch size)."""
    gen = cfg.generation
    changes: dict[str, Any] = {"batch_size": options.batch_size}
    if options.max_new_tokens is not None:
        changes["max_new_tokens"] = options.max_new_tokens
    return dataclasses.replace(gen, **changes)


def model_identity(checkpoint: str | Path, options: DraftOptions | None = None) -> ModelIdentity:
    """Read a checkpoint's identity from its manifest and config, without loading the weights.

    Args:
        checkpoint: a folder written by `medvlm.checkpoint.save_checkpoint`.
        options: run options (a `max_new_tokens` override changes the prompt hash).

    Returns:
        The identity.

    Raises:
        medvlm.errors.CheckpointError: not a checkpoint folder (manifest or config missing).
    """
    from medvlm.checkpoint import CONFIG_FILE, MANIFEST_FILE, fingerprint
    from medvlm.config import ModelConfig
    from medvlm.errors import CheckpointError

    options = options or DraftOptions()
    folder = Path(checkpoint)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        stored = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: not a medvlm checkpoint ({type(exc).__name__})") from exc
    cfg = ModelConfig.from_dict(stored["model"])
    gen = generation_settings(cfg, options)
    prompt = {
        "prompt": dataclasses.asdict(cfg.prompt),
        # batch size changes padding only, not what a study's prompt asks for
        "generation": {k: v for k, v in dataclasses.asdict(gen).items() if k != "batch_size"},
        "max_views": cfg.max_views,
    }
    fp = fingerprint(folder, manifest)
    return ModelIdentity(
        checkpoint=str(folder.resolve()),
        model_version=fp.model_version,
        prompt_hash=_canonical_hash(prompt),
        adapter_hash=fp.adapter_hash,
        image_size=int(cfg.image_size),
        max_views=int(cfg.max_views),
    )


def author(ident: ModelIdentity) -> str:
    """The author recorded on the review versions this model drafts."""
    return f"medvlm@{ident.model_version[:12]}"
