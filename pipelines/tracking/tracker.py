"""Experiment tracking behind a small Protocol; MLflow is one adapter, imported only inside it.

``Tracker`` is what recipes and the training loop need; ``MlflowTracker`` (an explicit
``MlflowClient``, no fluent global run state) and ``NullTracker`` (stores nothing) satisfy it.

Every run started by ``MlflowTracker.start_run`` records the resolved config (flattened params plus
the whole config as ``config.json``), the git commit and a dirty flag, and the data-manifest hash
when given; ``log_evaluation`` and ``log_model_card`` add the evaluation table and the model card.
The tracker ends its own run, as FAILED when the ``with`` block raises. Everything is checked for
PHI before it is written (``pipelines.tracking.phi_guard``).

The other modules of this package: ``locations`` (var folder, tracking URI), ``phi_guard``
(``scrub_for_tracking``), ``provenance`` (data manifest hash, git info, config flattening). Their
public names are re-exported here, so ``from pipelines.tracking.tracker import ...`` keeps working.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pipelines.errors import PipelineError
from pipelines.tracking.locations import (
    artifact_location_for,
    default_var_dir,
    resolve_tracking_uri,
    sqlite_path,
)
from pipelines.tracking.phi_guard import PHIInTrackingError, scrub_for_tracking, text_looks_like_phi
from pipelines.tracking.provenance import config_to_dict, data_manifest_hash, flatten_config, git_info

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.evaluation.metrics import EvalResult

DEFAULT_EXPERIMENT = "medvlm"
_TEXT_SUFFIXES = {".json", ".jsonl", ".yaml", ".yml", ".md", ".txt", ".csv"}
_MAX_SCAN_BYTES = 16 * 2**20  # text artifacts larger than this are not scanned for PHI (weights are binary)


class TrackingError(PipelineError, RuntimeError):
    """The tracker is used out of order (no run started, a run already active) or the store failed."""


def open_client(tracking_uri: str | None = None) -> MlflowClient:
    """An ``mlflow.MlflowClient`` for the resolved URI (tracking and registry on the same store).

    The SQLite file's folder is created; ``mlflow`` is imported here, on first use.
    """
    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (with the SQLite artifact root) when missing."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location_for(tracking_uri))
    except MlflowException:  # created by another process in between
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@runtime_checkable
class Tracker(Protocol):
    """What recipes need from experiment tracking. Use as ``with tracker.start_run(...) as t:``.

    Attributes:
        run_id: the active run's id; None before ``start_run`` and after ``end_run``.
    """

    run_id: str | None

    def start_run(self, name: str, config: Mapping[str, Any], *, data_hash: str | None = None) -> Tracker:
        """Start a run and log the resolved config, git commit and data hash; returns self."""
        ...

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log more params (flattened)."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at an optional step."""
        ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or a folder."""
        ...

    def log_text(self, text: str, artifact_file: str) -> None:
        """Log a string as a file."""
        ...

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        """Log a mapping as a JSON (or YAML, by suffix) file."""
        ...

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags."""
        ...

    def end_run(self, status: str = "FINISHED") -> None:
        """End the run (idempotent)."""
        ...

    def __enter__(self) -> Tracker: ...

    def __exit__(self, exc_type, exc, tb) -> None: ...


class NullTracker:
    """A tracker that checks for PHI like the real one but stores nothing (tests, dry runs)."""

    run_id: str | None = None

    def start_run(self, name: str, config: Mapping[str, Any], *, data_hash: str | None = None) -> NullTracker:
        scrub_for_tracking(config_to_dict(config), where="config")
        return self

    def log_params(self, params: Mapping[str, Any]) -> None:
        scrub_for_tracking(params, where="params")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        return None

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        return None

    def log_text(self, text: str, artifact_file: str) -> None:
        if text_looks_like_phi(text):
            raise PHIInTrackingError(f"refused to track {artifact_file}: DICOM person-name pattern in text")

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        scrub_for_tracking(obj, where=artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        scrub_for_tracking(tags, where="tags")

    def end_run(self, status: str = "FINISHED") -> None:
        return None

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end_run("FAILED" if exc_type else "FINISHED")


class MlflowTracker:
    """Tracking in MLflow through an explicit ``MlflowClient`` (no fluent global run state).

    Args:
        tracking_uri: store URI; default from ``resolve_tracking_uri`` (SQLite under ``var/``).
        experiment: experiment name, created on first use with the embedded artifact root.
        repo_dir: folder inside the git checkout whose commit is recorded.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        repo_dir: str | Path | None = None,
    ) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment = experiment
        self.repo_dir = repo_dir
        self._client: MlflowClient | None = None
        self.run_id: str | None = None

    @property
    def client(self) -> MlflowClient:
        """The ``MlflowClient`` (created, and mlflow imported, on first use)."""
        if self._client is None:
            self._client = open_client(self.tracking_uri)
        return self._client

    def _need_run(self) -> str:
        if self.run_id is None:
            raise TrackingError("no active run: call start_run(name, config) first")
        return self.run_id

    @property
    def artifact_uri(self) -> str:
        """The active run's artifact root URI."""
        return self.client.get_run(self._need_run()).info.artifact_uri

    def start_run(
        self, name: str, config: Mapping[str, Any], *, data_hash: str | None = None
    ) -> MlflowTracker:
        """Start a run; log the config (params + ``config.json``), git commit/dirty and data hash.

        Args:
            name: run name.
            config: the resolved config (mapping or dataclass); checked for PHI before any write.
            data_hash: ``data_manifest_hash(...)`` of the training/evaluation data.

        Returns:
            self, for ``with tracker.start_run(...) as t:``.

        Raises:
            TrackingError: a run is already active on this tracker.
            PHIInTrackingError: the config holds PHI-like values (nothing is written then).
        """
        if self.run_id is not None:
            raise TrackingError(f"run {self.run_id} is still active: end_run() it first")
        cfg = scrub_for_tracking(config_to_dict(config), where="config")
        tags = {"medvlm.run_name": name, **git_info(self.repo_dir)}
        if data_hash is not None:
            tags["data_manifest_hash"] = data_hash
        client = self.client
        experiment_id = ensure_experiment(client, self.experiment, self.tracking_uri)
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        try:
            self.log_params(cfg)
            client.log_dict(self.run_id, cfg, "config.json")
        except BaseException:
            self.end_run("FAILED")
            raise
        return self

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (PHI-checked, flattened, in batches of 100)."""
        from mlflow.entities import Param

        run_id = self._need_run()
        flat = flatten_config(scrub_for_tracking(params, where="params"))
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (0 when None).

        Raises:
            TypeError: a value is not a number (booleans are refused too).
        """
        from mlflow.entities import Metric

        run_id = self._need_run()
        now = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}")
            items.append(Metric(key, float(value), now, step or 0))
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i : i + 1000])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or a folder; text files (json, yaml, md, txt, csv) are checked for PHI first."""
        run_id = self._need_run()
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact not found: {path}")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if f.suffix.lower() in _TEXT_SUFFIXES and f.stat().st_size <= _MAX_SCAN_BYTES:
                text = f.read_text(encoding="utf-8", errors="replace")
                if text_looks_like_phi(text):
                    raise PHIInTrackingError(f"refused to track {f}: DICOM person-name pattern in text")
                if f.suffix.lower() == ".json":
                    try:
                        obj = json.loads(text)
                    except ValueError:
                        obj = None
                    if isinstance(obj, Mapping):
                        scrub_for_tracking(obj, where=str(f))
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Log ``text`` as ``artifact_file``; refused when it holds a DICOM person name."""
        if text_looks_like_phi(text):
            raise PHIInTrackingError(f"refused to track {artifact_file}: DICOM person-name pattern in text")
        self.client.log_text(self._need_run(), text, artifact_file)

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        """Log a PHI-checked mapping as ``artifact_file`` (JSON or YAML by suffix)."""
        self.client.log_dict(self._need_run(), scrub_for_tracking(obj, where=artifact_file), artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set PHI-checked run tags (values as strings)."""
        run_id = self._need_run()
        for key, value in scrub_for_tracking(tags, where="tags").items():
            self.client.set_tag(run_id, key, str(value))

    def end_run(self, status: str = "FINISHED") -> None:
        """End the active run with ``status`` (FINISHED, FAILED, KILLED); no-op when none is active."""
        if self.run_id is None:
            return
        run_id, self.run_id = self.run_id, None
        self.client.set_terminated(run_id, status=status)

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end_run("FAILED" if exc_type else "FINISHED")


# ---------------------------------------------------------------------------------------------
# What every evaluation logs
# ---------------------------------------------------------------------------------------------


def log_evaluation(tracker: Tracker, result: EvalResult, step: int | None = None, prefix: str = "") -> None:
    """Log an evaluation: summary metrics (NaN ones skipped) and the per-finding table (JSON + Markdown)."""
    metrics = {
        f"{prefix}{k}": v for k, v in result.summary.items() if not (isinstance(v, float) and math.isnan(v))
    }
    tracker.log_metrics(metrics, step=step)
    tracker.log_dict(
        {"per_finding": result.per_finding, "summary": result.summary}, f"{prefix}evaluation.json"
    )
    tracker.log_text(result.to_markdown(), f"{prefix}evaluation.md")


def log_model_card(tracker: Tracker, card_markdown: str) -> None:
    """Log the rendered model card as ``model_card.md``."""
    tracker.log_text(card_markdown, "model_card.md")


__all__ = [
    "DEFAULT_EXPERIMENT",
    "MlflowTracker",
    "NullTracker",
    "PHIInTrackingError",
    "Tracker",
    "TrackingError",
    "artifact_location_for",
    "config_to_dict",
    "data_manifest_hash",
    "default_var_dir",
    "ensure_experiment",
    "flatten_config",
    "git_info",
    "log_evaluation",
    "log_model_card",
    "open_client",
    "resolve_tracking_uri",
    "scrub_for_tracking",
    "sqlite_path",
    "text_looks_like_phi",
]
