"""Experiment tracking behind a small Protocol; MLflow is one adapter, imported only inside it.

Embedded default (nothing to run): an MLflow SQLite store at ``{var_dir}/mlflow.db`` with artifacts
under ``{var_dir}/mlartifacts``, where ``var_dir`` is ``$MEDVLM_VAR_DIR`` or ``./var``.
``$MLFLOW_TRACKING_URI`` (or an explicit ``tracking_uri``) points at a shared ``mlflow server`` instead.

Every run started by ``MlflowTracker.start_run`` records the resolved config (flattened params plus
the whole config as ``config.json``), the git commit and a dirty flag, and the data-manifest hash
when given; ``log_evaluation`` and ``log_model_card`` add the evaluation table and the model card.
The tracker ends its own run, as FAILED when the ``with`` block raises.

PHI policy (decided: **fail loudly**). Nothing patient-identifying may reach params, tags or
artifacts. ``scrub_for_tracking`` refuses a mapping that holds a PHI-like key (patient_name,
patient_id, birth_date, accession, mrn, ...) with a non-boolean value, or any string that looks like
a DICOM person name (``FAMILY^GIVEN``); it raises ``PHIInTrackingError`` naming the key path (never
the value) *before* anything is written, so a refused run leaves no trace in the store. Records
that carry PHI (for example a data manifest) never go to the tracker as such: only
``data_manifest_hash(records)`` does, which is one-way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from compliance.clock import sha256_file
from compliance.phi import has_person_name, is_phi_key
from pipelines.errors import PipelineError
from pipelines.evaluation.metrics import EvalResult

DEFAULT_EXPERIMENT = "medvlm"
_MAX_PARAM_CHARS = 6000  # MLflow 3.x limit on a param value; the full config is also logged as JSON
_TEXT_SUFFIXES = {".json", ".jsonl", ".yaml", ".yml", ".md", ".txt", ".csv"}
_MAX_SCAN_BYTES = 16 * 2**20  # text artifacts larger than this are not scanned for PHI (weights are binary)



class TrackingError(PipelineError, RuntimeError):
    """The tracker is used out of order (no run started, a run already active) or the store failed."""


class PHIInTrackingError(PipelineError, ValueError):
    """A value bound for tracking looks like PHI; the message names the key path, never the value."""


# ---------------------------------------------------------------------------------------------
# Locations
# ---------------------------------------------------------------------------------------------


def default_var_dir() -> Path:
    """``$MEDVLM_VAR_DIR`` or ``./var``, made absolute (not created)."""
    return Path(os.environ.get("MEDVLM_VAR_DIR") or "var").resolve()


def resolve_tracking_uri(tracking_uri: str | None = None, var_dir: str | Path | None = None) -> str:
    """The tracking URI to use: explicit > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///{var_dir}/mlflow.db``."""
    if tracking_uri:
        return tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    var = Path(var_dir).resolve() if var_dir is not None else default_var_dir()
    return f"sqlite:///{var / 'mlflow.db'}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other kind of store."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def artifact_location_for(tracking_uri: str) -> str | None:
    """Artifact root for new experiments: ``<db dir>/mlartifacts`` for SQLite, else the server's choice."""
    db = sqlite_path(tracking_uri)
    return (db.parent / "mlartifacts").resolve().as_uri() if db is not None else None


def open_client(tracking_uri: str | None = None):
    """An ``mlflow.MlflowClient`` for the resolved URI (tracking and registry on the same store).

    The SQLite file's folder is created; ``mlflow`` is imported here, on first use.
    """
    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client, name: str, tracking_uri: str) -> str:
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


# ---------------------------------------------------------------------------------------------
# PHI guard, provenance
# ---------------------------------------------------------------------------------------------


text_looks_like_phi = has_person_name  # the one PN pattern, from compliance.phi


def _scan(value: Any, path: str, problems: list[str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if is_phi_key(str(k)) and not (v is None or isinstance(v, bool)):
                problems.append(f"{sub} (PHI-like key)")
            else:
                _scan(v, sub, problems)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, v in enumerate(value):
            _scan(v, f"{path}[{i}]", problems)
    elif isinstance(value, (str, bytes)):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if text_looks_like_phi(text):
            problems.append(f"{path} (DICOM person-name pattern)")


def scrub_for_tracking(mapping: Mapping[str, Any], *, where: str = "tracking data") -> dict[str, Any]:
    """Refuse PHI bound for params, tags or artifacts.

    Args:
        mapping: a config, tag set or dict artifact (nested mappings and lists are walked).
        where: what the mapping is, for the error message.

    Returns:
        A plain-dict copy of ``mapping`` when it is clean.

    Raises:
        PHIInTrackingError: a PHI-like key holds a value (booleans and None are allowed, so flags
            such as ``keep_patient_id: false`` pass), or a string looks like a DICOM person name.
            The message lists key paths only.
    """
    problems: list[str] = []
    _scan(mapping, "", problems)
    if problems:
        raise PHIInTrackingError(
            f"refused to track {where}: possible PHI at {', '.join(problems)}; "
            "remove these values or track a hash of them (data_manifest_hash)"
        )
    return json.loads(json.dumps(mapping, default=str))


def data_manifest_hash(paths_or_records: Iterable[str | os.PathLike | Mapping[str, Any]]) -> str:
    """A sha256 that identifies a data set, insensitive to order and location.

    Entries: a file path contributes the sha256 of its bytes; a folder contributes each file under
    it as ``relative/path:sha256``; a record (mapping) contributes its canonical JSON
    (sorted keys). The hex sha256 of the sorted entries, joined by newlines, is returned.
    The hash is one-way, so records holding PHI may be hashed; the records are never logged.

    Raises:
        FileNotFoundError: a path does not exist (the message names the path).
        TypeError: an entry is neither a path nor a mapping.
    """
    entries: list[str] = []
    for item in paths_or_records:
        if isinstance(item, Mapping):
            entries.append("record:" + json.dumps(item, sort_keys=True, default=str, ensure_ascii=False))
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.is_dir():
                for f in sorted(p for p in path.rglob("*") if p.is_file()):
                    entries.append(f"file:{f.relative_to(path).as_posix()}:{sha256_file(f)}")
            elif path.is_file():
                entries.append(f"file:{sha256_file(path)}")
            else:
                raise FileNotFoundError(f"data manifest entry not found: {path}")
        else:
            raise TypeError(f"data manifest entries must be paths or mappings, got {type(item).__name__}")
    return hashlib.sha256("\n".join(sorted(entries)).encode("utf-8")).hexdigest()


def git_info(repo_dir: str | Path | None = None) -> dict[str, str]:
    """``{"git_commit": sha | "unknown", "git_dirty": "true" | "false" | "unknown"}``.

    Args:
        repo_dir: a folder inside the checkout; default: the folder holding this package.
    """
    cwd = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if status is None else ("true" if status else "false")
    return {"git_commit": commit, "git_dirty": dirty}


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config (mapping or dataclass instance, possibly nested) as a plain dict."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return {str(k): config_to_dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
    raise TypeError(f"config must be a mapping or a dataclass instance, got {type(config).__name__}")


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists become JSON strings; values cut to MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, name))
            continue
        text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
        flat[name] = text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."
    return flat


# ---------------------------------------------------------------------------------------------
# The Protocol and its adapters
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class Tracker(Protocol):
    """What recipes need from experiment tracking. Use as ``with tracker.start_run(...) as t:``."""

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
        self._client = None
        self.run_id: str | None = None

    @property
    def client(self):
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
        from mlflow.entities import Param

        run_id = self._need_run()
        flat = flatten_config(scrub_for_tracking(params, where="params"))
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
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
        if text_looks_like_phi(text):
            raise PHIInTrackingError(f"refused to track {artifact_file}: DICOM person-name pattern in text")
        self.client.log_text(self._need_run(), text, artifact_file)

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self._need_run(), scrub_for_tracking(obj, where=artifact_file), artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
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
