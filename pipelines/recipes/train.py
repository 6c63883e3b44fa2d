"""`medvlm train CONFIG [k=v ...]`: run the configured stages in order, evaluate, register.

Parse -> build -> run -> close. The stages are single-purpose recipes in this package
(`contrastive` = stage 0, `projector` = stage 1, `lora` = stage 2), each also runnable alone; this
module chains them in one `training_session` (run folder layout, resume and tracking: see
`pipelines.training.session`), then evaluates the final model on the held-out split, writes the
model card and registers the checkpoint:

    out_dir/checkpoint/          the final checkpoint (registered in MLflow)
    out_dir/eval.json, eval.md   model vs. baselines on the held-out split
    out_dir/model_card.md        the model card
    out_dir/train_summary.json   wall time and losses per stage

`torchrun --nproc_per_node=N -m pipelines.recipes.train CONFIG` runs it under DDP; only rank 0
writes files, logs and tracks.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compliance.clock import utcnow
from pipelines.recipes import classify, contrastive, lora, projector
from pipelines.training.config import TrainConfig, config_from_argv, load_train_config
from pipelines.training.runtime import Runtime, shard
from pipelines.training.sampling import step_indices
from pipelines.training.session import Session, training_session

if TYPE_CHECKING:
    from torch import nn

    from medvlm.build import MedVLM

STAGE_RECIPES = {"contrastive": contrastive, "classify": classify, "projector": projector, "lora": lora}
"""Each stage's recipe module; `run_stage(session, bundle) -> bundle` runs (or skips) it."""
INTENDED_USE = (
    "Drafting chest radiograph reports for a radiologist to review, correct and sign. Never a "
    "diagnosis on its own."
)


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Run a training config end to end (see the module docstring).

    Args:
        cfg: the run config (`load_train_config`).

    Returns:
        The run summary: per-stage results, `stopped` (a `stop_after` interruption), the final
        checkpoint path, the evaluation summary (model and baselines) and the registry decision.

    Raises:
        medvlm.errors.ConfigError: e.g. the longest report does not fit the tokenizer's max_length.
        pipelines.training.datasets.DatasetError: the data folder is unusable.
    """
    with training_session(cfg) as session:  # build: runtime, tracker, data; close on leaving the block
        bundle = _run_stages(session)
        if bundle is not None and not session.summary["stopped"]:
            if session.rt.distributed:
                session.summary["ddp"] = _ddp_report(cfg, session.rt, bundle.model, len(session.dataset))
            if session.rt.is_main:
                _finish(session, bundle)
    return session.summary


def _run_stages(session: Session) -> MedVLM | None:
    """Run the configured stages in order; returns the LLaVA bundle (None after stage 0 alone)."""
    import torch

    bundle = None
    with torch.random.fork_rng(devices=[]):  # per-step reseeding stays inside this run
        for stage in session.cfg.stages:
            bundle = STAGE_RECIPES[stage].run_stage(session, bundle)
            if session.summary["stopped"]:
                break
    return bundle


def _param_checksum(model: nn.Module) -> float:
    import torch

    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))


def _ddp_report(cfg: TrainConfig, rt: Runtime, model: nn.Module, n: int) -> dict[str, Any]:
    """Under DDP: each rank's shard of step 0 and a checksum of its weights (equal when in sync)."""
    import torch
    import torch.distributed as dist

    loop = getattr(cfg, cfg.stages[-1])
    per_step = loop.batch_size * loop.grad_accum
    mine = torch.tensor(shard(step_indices(n, 0, per_step, cfg.seed), rt), dtype=torch.long)
    shards = [torch.zeros_like(mine) for _ in range(rt.world_size)]
    dist.all_gather(shards, mine)
    sums = [torch.zeros(1, dtype=torch.float64) for _ in range(rt.world_size)]
    dist.all_gather(sums, torch.tensor([_param_checksum(model)], dtype=torch.float64))
    return {
        "world_size": rt.world_size,
        "step0_shards": [s.tolist() for s in shards],
        "param_checksums": [float(s[0]) for s in sums],
    }


def _finish(session: Session, bundle: MedVLM) -> None:
    """Rank 0: final checkpoint, evaluation vs. baselines, model card, registry + release gate."""
    from medvlm.checkpoint import save_checkpoint
    from pipelines.evaluation.evaluate import evaluate_bundle, write_evaluation
    from pipelines.tracking.model_card import render_model_card
    from pipelines.tracking.tracker import git_info, log_model_card

    cfg, out, tracker, manifest, summary = session.cfg, session.out, session.tracker, session.manifest, session.summary
    ckpt = out / "checkpoint"
    save_checkpoint(bundle, ckpt, overwrite=True)
    summary["checkpoint"] = str(ckpt)
    metrics: dict[str, float] = {}
    per_finding = None
    if cfg.evaluate.enabled:
        t0 = time.perf_counter()
        evaluation = evaluate_bundle(
            bundle,
            cfg.data.dir,
            split=cfg.evaluate.split,
            train_split=cfg.data.train_split,
            cache_dir=cfg.data.cache_dir,
            max_studies=cfg.evaluate.max_studies,
            batch_size=cfg.evaluate.batch_size,
        )
        summary["eval_s"] = round(time.perf_counter() - t0, 2)
        json_path, md_path = write_evaluation(evaluation, out)
        metrics = {k: v for k, v in evaluation.summary.items() if v == v}  # drop NaN
        per_finding = evaluation.per_finding
        tracker.log_metrics({f"eval/{k}": v for k, v in metrics.items()})
        for name, base in evaluation.baselines.items():
            tracker.log_metrics({f"baseline_{name}/{k}": v for k, v in base.items() if v == v})
        tracker.log_artifact(json_path)
        tracker.log_artifact(md_path)
        summary["evaluation"] = {"model": evaluation.summary, **evaluation.baselines}
    run_info = {
        "model_name": "medvlm",
        "run_id": getattr(tracker, "run_id", None),
        "created": utcnow().strftime("%Y-%m-%d"),
        "architecture": _architecture(cfg, bundle),
        **git_info(),
        "trained_on_phantoms": manifest.get("synthetic", False),
    }
    limitations = [
        "Trained and evaluated on the data named above only; performance elsewhere is unknown.",
        "Every draft needs a radiologist's review and signature.",
    ]
    card = render_model_card(run_info, metrics, manifest, INTENDED_USE, limitations, per_finding=per_finding)
    (out / "model_card.md").write_text(card, encoding="utf-8")
    log_model_card(tracker, card)
    if cfg.register and cfg.tracking == "mlflow" and metrics:
        from pipelines.tracking.registry import promote_if_better, register_checkpoint

        version = register_checkpoint(
            ckpt, metrics, tracking_uri=cfg.tracking_uri, run_id=tracker.run_id, data_hash=manifest["hash"],
            baselines=evaluation.baselines,  # metrics exist only when evaluated; the gate needs both baselines
        )
        decision = promote_if_better(version.version, tracking_uri=cfg.tracking_uri)
        summary["registry"] = {"version": version.version, "promoted": decision.promoted, "reason": decision.reason}


def _architecture(cfg: TrainConfig, bundle: MedVLM) -> str:
    """One line for the model card: the family started from, or the from-scratch parts."""
    from medvlm.families import OWN

    if bundle.family.name != OWN:
        return f"{bundle.family.label}, from {cfg.model.init_from}, + LoRA on the decoder"
    return f"LLaVA: {cfg.model.vision.kind} tower, MLP projector, {cfg.model.decoder.kind} decoder + LoRA"


def train_command(config_path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """`medvlm train CONFIG [k=v ...]`: load the recipe YAML with overrides and run it.

    Args:
        config_path: a `pipelines/configs/train_*.yaml` file.
        overrides: `key=value` items with dotted keys (`lora.optim.lr=1e-3 model.decoder.hidden_size=64`).

    Returns:
        The run summary (stages with wall time and losses, checkpoint, evaluation, registry decision).

    Raises:
        medvlm.errors.ConfigError: a bad key, value or combination (the message names the flag).
        pipelines.training.datasets.DatasetError: the data folder is unusable.
    """
    return run_training(load_train_config(config_path, overrides))


def main(argv: list[str] | None = None) -> None:
    """`python -m pipelines.recipes.train CONFIG [k=v ...]` (what `torchrun` launches for DDP)."""
    cfg = config_from_argv(sys.argv[1:] if argv is None else argv, "pipelines.recipes.train")
    summary = run_training(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k in ("stopped", "world_size", "checkpoint")}))


if __name__ == "__main__":  # pragma: no cover - exercised by the DDP test through torchrun
    main()
