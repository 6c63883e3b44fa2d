"""`medvlm train CONFIG [k=v ...]`: run the configured stages in order, evaluate, register.

Parse -> build -> run -> close. The stages are single-purpose recipes in `pipelines.recipes`
(`contrastive` = stage 0, `projector` = stage 1, `lora` = stage 2); this module only chains them:

    out_dir/stage0_contrastive/  vision_tower.safetensors, report_index/, state/ (resume)
    out_dir/stage1_projector/    tokenizer/, checkpoint/ (medvlm checkpoint), state/
    out_dir/stage2_lora/         checkpoint/, state/
    out_dir/checkpoint/          the final checkpoint (registered in MLflow)
    out_dir/eval.json, eval.md   model vs. baselines on the held-out split
    out_dir/train_summary.json   wall time and losses per stage

A stage whose `done.json` exists is skipped on a re-run (resume=true), and a stage interrupted
mid-way resumes from its last state, so re-running a killed command finishes the same run.
Only rank 0 writes files, logs and tracks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipelines.training.common import (
    Runtime,
    TrainConfig,
    barrier,
    close_runtime,
    config_dict,
    setup_runtime,
    write_json,
)

STAGE_DIRS = {"contrastive": "stage0_contrastive", "projector": "stage1_projector", "lora": "stage2_lora"}
DONE_FILE = "done.json"
INTENDED_USE = (
    "Drafting chest radiograph reports for a radiologist to review, correct and sign. Never a "
    "diagnosis on its own."
)


def build_tracker(cfg: TrainConfig, rt: Runtime) -> Any:
    """MLflow on rank 0 when configured, else a `NullTracker`."""
    from pipelines.tracking.tracker import MlflowTracker, NullTracker

    if rt.is_main and cfg.tracking == "mlflow":
        return MlflowTracker(cfg.tracking_uri)
    return NullTracker()


def _data_manifest(cfg: TrainConfig, dataset: Any) -> dict[str, Any]:
    from pipelines.tracking.tracker import data_manifest_hash

    reports = Path(cfg.data.dir) / "reports.jsonl"
    first = reports.read_text(encoding="utf-8").splitlines()[0]
    phantom = '"spec"' in first  # phantom records carry the findings spec they were rendered from
    return {
        "hash": data_manifest_hash([reports]),
        "source": "phantoms" if phantom else "folder",
        "synthetic": phantom,
        "counts": {"train": len(dataset)},
    }


def _done(stage_dir: Path) -> bool:
    return (stage_dir / DONE_FILE).is_file()


def _param_checksum(model: Any) -> float:
    import torch

    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))


def _ddp_report(cfg: TrainConfig, rt: Runtime, model: Any, n: int) -> dict[str, Any]:
    """Under DDP: each rank's shard of step 0 and a checksum of its weights (equal when in sync)."""
    import torch
    import torch.distributed as dist

    from pipelines.training.common import shard, step_indices

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


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Run a training config end to end (see the module docstring).

    Returns:
        The run summary: per-stage results, `stopped` (a `stop_after` interruption), the final
        checkpoint path, the evaluation summary (model and baselines) and the registry decision.
    """
    import torch

    from pipelines.training.datasets import ImageCache, StudyDataset, load_records

    rt = setup_runtime(cfg)
    out = Path(cfg.out_dir)
    tracker = build_tracker(cfg, rt)
    records = load_records(cfg.data.dir, cfg.data.train_split)[: cfg.data.max_studies]
    dataset = StudyDataset(records, ImageCache(cfg.model.image_size, cfg.data.cache_dir), cfg.data.max_views)
    manifest = _data_manifest(cfg, dataset)
    summary: dict[str, Any] = {"stages": {}, "stopped": False, "world_size": rt.world_size}
    tracker.start_run(cfg.run_name, config_dict(cfg), data_hash=manifest["hash"])
    try:
        with torch.random.fork_rng(devices=[]):  # per-step reseeding stays inside this run
            t0 = time.perf_counter()
            dataset.warm()
            summary["image_decode_s"] = round(time.perf_counter() - t0, 2)
            bundle = _run_stages(cfg, dataset, out, rt, tracker, summary)
        if bundle is not None and not summary["stopped"]:
            if rt.distributed:
                summary["ddp"] = _ddp_report(cfg, rt, bundle.model, len(dataset))
            if rt.is_main:
                _finish(cfg, bundle, out, tracker, manifest, summary)
        if rt.is_main:
            write_json(out / "train_summary.json", summary)
            tracker.log_dict(summary, "train_summary.json")
        tracker.end_run("FINISHED")
    except BaseException:
        tracker.end_run("FAILED")
        raise
    finally:
        close_runtime(rt)
    return summary


def _run_stages(cfg: TrainConfig, dataset: Any, out: Path, rt: Runtime, tracker: Any, summary: dict) -> Any:
    """Run the configured stages in order; returns the LLaVA bundle (None after stage 0 alone)."""
    import dataclasses

    from pipelines.recipes import contrastive, lora, projector

    bundle = None
    for stage in cfg.stages:
        stage_dir = out / STAGE_DIRS[stage]
        if cfg.resume and _done(stage_dir):
            summary["stages"][stage] = {**json.loads((stage_dir / DONE_FILE).read_text()), "skipped": "done"}
            if stage == "contrastive":
                cfg = dataclasses.replace(cfg, vision_init=str(stage_dir / contrastive.TOWER_FILE))
            elif stage == "projector":
                bundle = lora.load_bundle(stage_dir / "checkpoint", rt)
            elif stage == "lora":
                bundle = lora.load_bundle(stage_dir / "checkpoint", rt)
            continue
        if stage == "contrastive":
            result, tower = contrastive.run_contrastive(cfg, dataset, stage_dir, rt, tracker)
            cfg = dataclasses.replace(cfg, vision_init=str(tower))
        else:
            if bundle is None:
                bundle = projector.build_bundle(cfg, dataset, stage_dir, rt)
            run = projector.run_projector if stage == "projector" else lora.run_lora
            result = run(cfg, bundle, dataset, stage_dir, rt, tracker)
        summary["stages"][stage] = result.summary()
        if not result.finished:
            summary["stopped"] = True
            return bundle
        if rt.is_main:
            if bundle is not None:
                from medvlm.checkpoint import save_checkpoint

                save_checkpoint(bundle, stage_dir / "checkpoint", overwrite=True)
            write_json(stage_dir / DONE_FILE, result.summary())
            tracker.log_metrics({f"{stage}/wall_s": result.wall_s})
        barrier(rt)
    return bundle


def _finish(cfg: TrainConfig, bundle: Any, out: Path, tracker: Any, manifest: dict, summary: dict) -> None:
    """Rank 0: final checkpoint, evaluation vs. baselines, model card, registry + release gate."""
    from medvlm.checkpoint import save_checkpoint
    from pipelines.evaluation.evaluate import evaluate_bundle, write_evaluation
    from pipelines.tracking.model_card import render_model_card
    from pipelines.tracking.tracker import git_info, log_model_card

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
        "created": time.strftime("%Y-%m-%d"),
        "architecture": f"LLaVA: {cfg.model.vision.kind} tower, MLP projector, {cfg.model.decoder.kind} decoder + LoRA",
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
            ckpt, metrics, tracking_uri=cfg.tracking_uri, run_id=tracker.run_id, data_hash=manifest["hash"]
        )
        decision = promote_if_better(version.version, tracking_uri=cfg.tracking_uri)
        summary["registry"] = {"version": version.version, "promoted": decision.promoted, "reason": decision.reason}


def main(argv: list[str] | None = None) -> None:
    """`python -m pipelines.recipes.train CONFIG [k=v ...]` (what `torchrun` launches for DDP)."""
    import sys

    from pipelines.recipes.train import train_command

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        raise SystemExit("usage: python -m pipelines.recipes.train CONFIG [key=value ...]")
    summary = train_command(args[0], args[1:])
    print(json.dumps({k: v for k, v in summary.items() if k in ("stopped", "world_size", "checkpoint")}))


if __name__ == "__main__":  # pragma: no cover - exercised by the DDP test through torchrun
    main()


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
    from pipelines.recipes.train import run_training
    from pipelines.training.common import load_train_config

    cfg = load_train_config(config_path, overrides)
    return run_training(cfg)
