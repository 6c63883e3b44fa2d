"""The MLflow model registry for medvlm checkpoints, with a release gate on the champion alias.

A version of the registered model ``medvlm`` is a checkpoint **folder** logged as run artifacts
(``checkpoint/``); the version's source is that artifact folder. No pyfunc model is logged and
nothing is pickled: the weights stay safetensors and the registry only points at the files.
A checkpoint is verified against its manifest first (``medvlm.checkpoint.verify_checkpoint``):
pickle-based weight files and files that differ from the manifest are refused.

Release gate: ``promote_if_better`` moves the ``champion`` alias to a new version only when its
metric (a version tag, ``clinical_macro_f1`` by default) is strictly higher than the champion's,
or there is no champion; the decision is written as tags on the version and returned.

``mlflow`` is imported inside the functions (with ``pipelines.tracking.tracker``, the only modules that do).
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import PipelineError
from pipelines.tracking.locations import default_var_dir, resolve_tracking_uri, sqlite_path
from pipelines.tracking.phi_guard import scrub_for_tracking
from pipelines.tracking.tracker import MlflowTracker, open_client

if TYPE_CHECKING:
    from medvlm.build import MedVLM

DEFAULT_MODEL_NAME = "medvlm"
CHAMPION = "champion"
CHECKPOINT_ARTIFACT = "checkpoint"
_MODEL_URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


class RegistryError(PipelineError, RuntimeError):
    """The registry cannot do what was asked (bad checkpoint folder, unknown version or URI)."""


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version created by ``register_checkpoint``.

    Attributes:
        name: registered model name.
        version: version number as MLflow returns it (a string).
        run_id: the run whose artifacts hold the checkpoint.
        source: the artifact URI of the checkpoint folder.
        tags: the tags set on the version.
    """

    name: str
    version: str
    run_id: str
    source: str
    tags: dict[str, str]


@dataclass(frozen=True)
class GateDecision:
    """The release gate's decision for one version.

    Attributes:
        version: the candidate version.
        promoted: whether the candidate is now the champion.
        metric_name: the compared metric.
        candidate_value: the candidate's metric (NaN when missing or not a number).
        champion_version: the champion before the decision, or None.
        champion_value: its metric, or None.
        reason: one line explaining the decision.
    """

    version: str
    promoted: bool
    metric_name: str
    candidate_value: float
    champion_version: str | None
    champion_value: float | None
    reason: str


def checkpoint_hashes(checkpoint_dir: str | Path) -> dict[str, str]:
    """The checkpoint's fingerprint as version tags (``medvlm.checkpoint.fingerprint``, the one identity).

    Returns:
        ``content_hash`` (the manifest's content hash, also the drafting job's model version),
        ``weights_hash`` (the ``*.safetensors`` files) and ``adapter_hash`` (files under ``adapter/``;
        ``"none"`` when the checkpoint has no adapter).
    """
    from medvlm.checkpoint import fingerprint

    fp = fingerprint(checkpoint_dir)
    return {"content_hash": fp.model_version, "weights_hash": fp.weights_hash, "adapter_hash": fp.adapter_hash or "none"}


def _check_checkpoint_dir(checkpoint_dir: Path) -> dict[str, Any]:
    """The checkpoint's manifest, after ``medvlm.checkpoint.verify_checkpoint`` and a weights check."""
    from medvlm.checkpoint import verify_checkpoint

    manifest = verify_checkpoint(checkpoint_dir)  # no pickles, every file matches its sha256
    if not any(checkpoint_dir.rglob("*.safetensors")):
        raise RegistryError(f"refused to register {checkpoint_dir}: no *.safetensors weights in it")
    return manifest


def _metric_tag(value: Any) -> str:
    return repr(float(value))


def register_checkpoint(
    checkpoint_dir: str | Path,
    metrics: Mapping[str, float],
    *,
    tracking_uri: str | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    run_id: str | None = None,
    experiment: str = "medvlm",
    data_hash: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> RegisteredVersion:
    """Register a checkpoint folder as a new version of ``model_name``.

    Args:
        checkpoint_dir: the folder (config, safetensors weights, processor, manifest).
        metrics: its evaluation summary; each number becomes a version tag (the release gate reads
            ``clinical_macro_f1`` from there).
        tracking_uri: store URI; default as ``pipelines.tracking.locations.resolve_tracking_uri``.
        model_name: registered model name.
        run_id: the training run to attach the checkpoint to; when None a short ``register``
            run is created (with git commit and the metrics) and ended.
        experiment: experiment of that new run.
        data_hash: ``data_manifest_hash`` of the training data.
        tags: more version tags (checked for PHI).

    Returns:
        The new ``RegisteredVersion``.

    Raises:
        medvlm.errors.CheckpointError: not a medvlm checkpoint folder (no manifest or config);
            ``UnsafeCheckpointError`` for pickle files, ``CheckpointIntegrityError`` when a file
            differs from the manifest (all ``ValueError``).
        RegistryError: no safetensors weights.
        PHIInTrackingError: a tag looks like PHI.
    """
    from mlflow.exceptions import MlflowException

    ckpt = Path(checkpoint_dir).resolve()
    _check_checkpoint_dir(ckpt)
    uri = resolve_tracking_uri(tracking_uri)
    numeric = {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    version_tags = {k: _metric_tag(v) for k, v in numeric.items()}
    version_tags.update(checkpoint_hashes(ckpt))
    version_tags["data_hash"] = data_hash or "unknown"
    version_tags.update(scrub_for_tracking(dict(tags or {}), where="version tags"))

    tracker = MlflowTracker(uri, experiment=experiment)
    if run_id is None:
        tracker.start_run(f"register-{ckpt.name}", {"checkpoint_dir_name": ckpt.name}, data_hash=data_hash)
        owns_run = True
    else:
        tracker.run_id = run_id  # attach to the caller's run; the caller ends it
        owns_run = False
    try:
        tracker.log_artifact(ckpt, CHECKPOINT_ARTIFACT)
        if owns_run:
            tracker.log_metrics({k: v for k, v in numeric.items() if math.isfinite(v)})
        client = tracker.client
        run = client.get_run(tracker.run_id)
        version_tags["git_commit"] = run.data.tags.get("git_commit", "unknown")
        version_tags["git_dirty"] = run.data.tags.get("git_dirty", "unknown")
        source = f"{run.info.artifact_uri.rstrip('/')}/{CHECKPOINT_ARTIFACT}"
        try:
            client.create_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        mv = client.create_model_version(model_name, source, run_id=run.info.run_id, tags=version_tags)
    except BaseException:
        if owns_run:
            tracker.end_run("FAILED")
        raise
    if owns_run:
        tracker.end_run("FINISHED")
    return RegisteredVersion(model_name, str(mv.version), run.info.run_id, source, version_tags)


def _champion(client, model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _tag_value(mv, metric_name: str) -> float:
    try:
        return float(mv.tags.get(metric_name, "nan"))
    except ValueError:
        return float("nan")


def promote_if_better(
    version: str | int,
    metric_name: str = "clinical_macro_f1",
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    tracking_uri: str | None = None,
    alias: str = CHAMPION,
) -> GateDecision:
    """Move ``alias`` to ``version`` only if it beats the current holder on ``metric_name``.

    Higher is better; a tie keeps the champion; a candidate whose metric is missing or not finite
    is never promoted. The decision is written on the candidate as tags ``gate_decision``
    (``promoted`` | ``rejected``), ``gate_reason`` and ``gate_compared_to``.

    Args:
        version: the candidate version.
        metric_name: the version tag compared.
        model_name: registered model name.
        tracking_uri: store URI; default as ``resolve_tracking_uri``.
        alias: the alias to move.

    Returns:
        The ``GateDecision``.
    """
    client = open_client(tracking_uri)
    version = str(version)
    candidate = client.get_model_version(model_name, version)
    value = _tag_value(candidate, metric_name)
    champ = _champion(client, model_name, alias)
    champ_version = str(champ.version) if champ is not None else None
    champ_value = _tag_value(champ, metric_name) if champ is not None else None
    if not math.isfinite(value):
        promoted, reason = False, f"candidate has no finite {metric_name}"
    elif champ is None:
        promoted, reason = True, f"no {alias} yet"
    elif champ_version == version:
        promoted, reason = True, f"already {alias}"
    elif champ_value is None or not math.isfinite(champ_value) or value > champ_value:
        promoted, reason = True, f"{metric_name} {value:.4f} > {champ_value:.4f} of v{champ_version}"
    else:
        promoted, reason = False, f"{metric_name} {value:.4f} <= {champ_value:.4f} of v{champ_version}"
    if promoted and champ_version != version:
        client.set_registered_model_alias(model_name, alias, version)
    client.set_model_version_tag(model_name, version, "gate_decision", "promoted" if promoted else "rejected")
    client.set_model_version_tag(model_name, version, "gate_reason", reason)
    client.set_model_version_tag(model_name, version, "gate_compared_to", champ_version or "none")
    return GateDecision(version, promoted, metric_name, value, champ_version, champ_value, reason)


def champion_exists(
    model_name: str = DEFAULT_MODEL_NAME, *, tracking_uri: str | None = None, alias: str = CHAMPION
) -> bool:
    """Whether ``models:/{model_name}@{alias}`` resolves; a missing SQLite file means no (not created)."""
    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return False
    from mlflow.exceptions import MlflowException

    client = open_client(uri)
    try:
        return _champion(client, model_name, alias) is not None
    except MlflowException:  # registered model missing
        return False


def load_model(model: str | Path, *, merge: bool = False, tracking_uri: str | None = None) -> MedVLM:
    """The one way `pipelines` and the dashboard load a model: a folder or an MLflow models URI.

    Args:
        model: a checkpoint folder or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``.
        merge: fold a LoRA adapter into the base weights (inference only).
        tracking_uri: store URI for a models URI; default as ``resolve_tracking_uri``.

    Returns:
        The loaded `MedVLM`, verified against its manifest, in eval mode.

    Raises:
        RegistryError: see `resolve_model_uri`.
        medvlm.errors.CheckpointError: not a usable checkpoint (pickle, tampering, missing files).
    """
    from medvlm.checkpoint import load_checkpoint

    return load_checkpoint(resolve_model_uri(model, tracking_uri=tracking_uri), merge=merge)


def resolve_model_uri(
    model: str | Path, *, tracking_uri: str | None = None, cache_dir: str | Path | None = None
) -> Path:
    """A local checkpoint folder for ``model``.

    Args:
        model: a checkpoint folder (returned as is) or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``.
        tracking_uri: store URI; default as ``resolve_tracking_uri``.
        cache_dir: where downloaded versions are kept, one folder per ``NAME/VERSION`` (versions are
            immutable, so a cached one is reused); default ``{var_dir}/models``.

    Returns:
        The folder path.

    Raises:
        RegistryError: ``model`` is neither an existing folder nor a valid models URI, or the
            alias / version does not exist.
    """
    text = str(model)
    if not text.startswith("models:/"):
        path = Path(text)
        if not path.is_dir():
            raise RegistryError(f"model must be a checkpoint folder or a models:/ URI; not a folder: {path}")
        return path
    match = _MODEL_URI_RE.match(text)
    if match is None:
        raise RegistryError(f"unsupported model URI {text!r}: use models:/NAME@ALIAS or models:/NAME/VERSION")
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    client = open_client(uri)
    name = match["name"]
    try:
        if match["alias"]:
            mv = client.get_model_version_by_alias(name, match["alias"])
        else:
            mv = client.get_model_version(name, match["version"])
    except MlflowException as exc:
        raise RegistryError(f"{text} does not resolve to a registered version ({exc.error_code})") from exc
    if cache_dir is None:
        cache_dir = default_var_dir() / "models"
    dest = Path(cache_dir) / name / str(mv.version)
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{mv.version}-", dir=dest.parent))
    try:
        # Resolve the version's artifact location with our client: a ``models:/`` URI given to
        # download_artifacts is resolved against MLflow's global registry URI, not ours (MLflow 3.17).
        source = client.get_model_version_download_uri(name, str(mv.version))
        got = Path(download_artifacts(artifact_uri=source, dst_path=str(tmp), tracking_uri=uri))
        got.rename(dest) if got != tmp else tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


__all__ = [
    "CHAMPION",
    "GateDecision",
    "RegisteredVersion",
    "RegistryError",
    "champion_exists",
    "checkpoint_hashes",
    "promote_if_better",
    "register_checkpoint",
    "load_model",
    "resolve_model_uri",
]
