"""One training process's shared parts: runtime, tracker, data, and the run folder's stage layout.

The all-stages recipe (`pipelines.recipes.train`) and each single-stage recipe (`contrastive`,
`projector`, `lora`) open a session, run stages in it and close it, so resume, tracking and the run
folder look the same whichever command ran:

    out_dir/stage0_contrastive/  vision_tower.safetensors, report_index/, state/ (resume)
    out_dir/stage1_projector/    tokenizer/, checkpoint/ (medvlm checkpoint), state/
    out_dir/stage2_lora/         checkpoint/, state/
    out_dir/<name>_summary.json  wall time and losses per stage

A stage whose `done.json` exists is skipped on a re-run (resume=true), and a stage interrupted
mid-way resumes from its last state, so re-running a killed command finishes the same run.
Only rank 0 writes files, logs and tracks.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.training.config import STAGES, TrainConfig, config_dict
from pipelines.training.runtime import Runtime, barrier, close_runtime, setup_runtime
from pipelines.training.state import write_json

if TYPE_CHECKING:
    from medvlm.build import MedVLM
    from pipelines.tracking.tracker import Tracker
    from pipelines.training.datasets import StudyDataset
    from pipelines.training.loop import StageResult

STAGE_DIRS = {"contrastive": "stage0_contrastive", "classify": "stage0b_classify", "projector": "stage1_projector",
              "lora": "stage2_lora"}
DONE_FILE = "done.json"
CHECKPOINT_DIR = "checkpoint"
TOWER_FILE = "vision_tower.safetensors"
"""Stage 0's output: the adapted vision-tower weights that stages 1/2 start from (`vision_init`)."""


@dataclass
class Session:
    """What the stages of one process share (built by `training_session`)."""

    cfg: TrainConfig
    """The run config; a stage may replace it (stage 0 sets `vision_init` for the stages after it)."""
    rt: Runtime
    """Device, precision, rank."""
    tracker: Tracker
    """Experiment tracking (a `NullTracker` on ranks other than 0)."""
    dataset: StudyDataset
    """The training studies."""
    manifest: dict[str, Any]
    """Data manifest: hash, source, synthetic, counts."""
    summary: dict[str, Any] = field(default_factory=dict)
    """The run summary, written at the end: `stages`, `stopped`, `world_size`, ..."""

    @property
    def out(self) -> Path:
        """The run folder."""
        return Path(self.cfg.out_dir)

    def stage_dir(self, stage: str) -> Path:
        """The folder of one stage (`out_dir/stage<k>_<name>`)."""
        return self.out / STAGE_DIRS[stage]

    def reload_stage(self, stage: str) -> MedVLM:
        """A finished LLaVA stage's checkpoint, adapter trainable, on this runtime's device (the next stage
        continues from it; a remote-code model only with the recipe's `model.trust_remote_code`)."""
        from pipelines.training.bundles import load_bundle

        return load_bundle(self.stage_dir(stage) / CHECKPOINT_DIR, self.rt,
                           trust_remote_code=self.cfg.model.trust_remote_code)

    def skip_if_done(self, stage: str) -> bool:
        """With `resume` on and the stage's `done.json` present, record the stage as skipped.

        Returns:
            Whether the stage is done (the caller then loads its outputs instead of training).
        """
        done = self.stage_dir(stage) / DONE_FILE
        if not (self.cfg.resume and done.is_file()):
            return False
        self.summary["stages"][stage] = {**json.loads(done.read_text()), "skipped": "done"}
        return True

    def end_stage(self, stage: str, result: StageResult, bundle: MedVLM | None) -> bool:
        """Record a stage's result; when it finished, save its checkpoint and `done.json` (rank 0).

        Args:
            stage: the stage name.
            result: what the stage did in this process.
            bundle: the model trained by a LLaVA stage (None for stage 0, which saves its own tower).

        Returns:
            Whether the stage finished (False: `stop_after` interrupted it and the run stops here).
        """
        self.summary["stages"][stage] = result.summary()
        if not result.finished:
            self.summary["stopped"] = True
            return False
        stage_dir = self.stage_dir(stage)
        if self.rt.is_main:
            if bundle is not None:
                from medvlm.checkpoint import save_checkpoint

                save_checkpoint(bundle, stage_dir / CHECKPOINT_DIR, overwrite=True)
            write_json(stage_dir / DONE_FILE, result.summary())
            self.tracker.log_metrics({f"{stage}/wall_s": result.wall_s})
        barrier(self.rt)
        return True

    def note_model(self, bundle: MedVLM) -> None:
        """Record where the trained model came from (family, path, remote-code hashes) in the run summary."""
        if bundle.source and "model_source" not in self.summary:
            self.summary["model_source"] = dict(bundle.source)

    def pick_up_earlier(self, stage: str) -> MedVLM | None:
        """For a stage run on its own: start from what the earlier stages left in the same `out_dir`.

        A finished stage 0 sets `vision_init` (unless the config names one); the newest finished
        LLaVA stage's checkpoint is reloaded and returned.

        Returns:
            The bundle to continue training, or None (the stage builds a fresh one).
        """
        bundle = None
        for earlier in STAGES[: STAGES.index(stage)]:
            stage_dir = self.stage_dir(earlier)
            if not (stage_dir / DONE_FILE).is_file():
                continue
            if earlier == "contrastive":
                if self.cfg.vision_init is None:
                    self.cfg = dataclasses.replace(self.cfg, vision_init=str(stage_dir / TOWER_FILE))
            elif earlier == "classify":  # its tuned tower replaces stage 0's; the LLaVA stages attach its head
                self.cfg = dataclasses.replace(self.cfg, vision_init=str(stage_dir / TOWER_FILE),
                                               head_init=str(stage_dir))
            else:
                bundle = self.reload_stage(earlier)
        return bundle


def build_tracker(cfg: TrainConfig, rt: Runtime) -> Tracker:
    """MLflow on rank 0 when configured, else a `NullTracker`."""
    from pipelines.tracking.tracker import MlflowTracker, NullTracker

    if rt.is_main and cfg.tracking == "mlflow":
        return MlflowTracker(cfg.tracking_uri)
    return NullTracker()


def load_dataset(cfg: TrainConfig) -> StudyDataset:
    """The training studies of `cfg.data` (split, cap, views, image cache)."""
    from pipelines.training.datasets import ImageCache, StudyDataset, load_records

    records = load_records(cfg.data.dir, cfg.data.train_split)[: cfg.data.max_studies]
    return StudyDataset(records, ImageCache(cfg.model.image_size, cfg.data.cache_dir), cfg.data.max_views)


def data_manifest(cfg: TrainConfig, dataset: StudyDataset) -> dict[str, Any]:
    """Hash, source (phantoms or folder) and counts of the training data, for tracking and the model card."""
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


@contextmanager
def training_session(cfg: TrainConfig, summary_file: str = "train_summary.json") -> Iterator[Session]:
    """Build runtime, tracker and data, start the tracked run; on exit write the summary and close.

    Args:
        cfg: the run config.
        summary_file: name of the summary JSON written to `out_dir` (and tracked) by rank 0.

    Yields:
        The session; its `summary` is written when the block ends without an error.

    Raises:
        pipelines.training.datasets.DatasetError: the data folder is unusable.
    """
    from pipelines.training.bundles import resolve_model_config

    # Before any data is decoded: `model.init_from` decides the image size (and is refused early when unusable).
    cfg = dataclasses.replace(cfg, model=resolve_model_config(cfg.model))
    rt = setup_runtime(cfg)
    try:
        tracker = build_tracker(cfg, rt)
        dataset = load_dataset(cfg)
        manifest = data_manifest(cfg, dataset)
        session = Session(cfg, rt, tracker, dataset, manifest,
                          {"stages": {}, "stopped": False, "world_size": rt.world_size})
        tracker.start_run(cfg.run_name, config_dict(cfg), data_hash=manifest["hash"])
        try:
            t0 = time.perf_counter()
            dataset.warm()
            session.summary["image_decode_s"] = round(time.perf_counter() - t0, 2)
            yield session
            if rt.is_main:
                write_json(session.out / summary_file, session.summary)
                tracker.log_dict(session.summary, summary_file)
            tracker.end_run("FINISHED")
        except BaseException:
            tracker.end_run("FAILED")
            raise
    finally:
        close_runtime(rt)
