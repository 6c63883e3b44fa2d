"""The MLflow model registry: medvlm checkpoints and plain Hugging Face folders, one loader for both.

A version of the registered model ``medvlm`` is a model **folder** logged as run artifacts
(``checkpoint/``); the version's source is that artifact folder. No pyfunc model is logged and
nothing is pickled: the weights stay safetensors and the registry only points at the files. The
folder is either a medvlm checkpoint (verified against its manifest by
``medvlm.checkpoint.verify_checkpoint``) or a Hugging Face ``save_pretrained`` folder of an allowed
family (``medvlm.loading.check_folder``: no pickle, remote code only with ``trust_remote_code``, its
hashes recorded as a tag), so ``models:/medvlm@champion`` can be a MedGemma that was only evaluated.
Either way its identity is ``medvlm.loading.model_fingerprint``.

The release gate (``promote_if_better``, ``champion_exists``) lives in
``pipelines.tracking.release_gate`` and is re-exported here. ``load_model`` is the one way
``pipelines`` and the dashboard load a model (a folder or a ``models:/`` URI).

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
from pipelines.tracking.locations import default_var_dir, resolve_tracking_uri
from pipelines.tracking.phi_guard import scrub_for_tracking
from pipelines.tracking.release_gate import (
    CHAMPION,
    DEFAULT_MODEL_NAME,
    GateDecision,
    baseline_tag,
    champion_exists,
    promote_if_better,
)
from pipelines.tracking.tracker import MlflowTracker, open_client

if TYPE_CHECKING:
    from medvlm.build import MedVLM

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


def checkpoint_hashes(checkpoint_dir: str | Path) -> dict[str, str]:
    """The folder's fingerprint as version tags (``medvlm.loading.model_fingerprint``, the one identity).

    Returns:
        ``content_hash`` (a medvlm checkpoint's manifest hash, or the hash over every file of a
        Hugging Face folder; also the drafting job's model version), ``weights_hash`` (the
        ``*.safetensors`` files) and ``adapter_hash`` (files under ``adapter/``; ``"none"`` without).
    """
    from medvlm.loading import model_fingerprint

    fp = model_fingerprint(checkpoint_dir)
    return {"content_hash": fp.model_version, "weights_hash": fp.weights_hash, "adapter_hash": fp.adapter_hash or "none"}


def _check_model_dir(folder: Path, *, trust_remote_code: bool = False) -> dict[str, str]:
    """Refuse what must not be registered; returns the folder's kind as version tags.

    A medvlm checkpoint is verified against its manifest (no pickle, every sha256 matches). A
    Hugging Face folder must be of an allowed family, hold no pickle, and run remote code only
    with ``trust_remote_code`` (its ``*.py`` hashes are checked against the folder's lock file and
    recorded as the tag ``remote_code``). Either needs ``*.safetensors`` weights.
    """
    import json

    from medvlm.loading import inspect_folder, is_medvlm_checkpoint

    if is_medvlm_checkpoint(folder):
        from medvlm.checkpoint import verify_checkpoint

        verify_checkpoint(folder)  # no pickles, every file matches its sha256
        kind = {"format": "medvlm"}
    else:
        config, spec, hashes = inspect_folder(folder, trust_remote_code=trust_remote_code)
        kind = {"format": "huggingface", "family": spec.name}
        if config.get("auto_map"):
            kind["remote_code"] = json.dumps(hashes, sort_keys=True)
    if not any(folder.rglob("*.safetensors")):
        raise RegistryError(f"refused to register {folder}: no *.safetensors weights in it")
    return kind


def baseline_tags(baselines: Mapping[str, Mapping[str, Any]] | None) -> dict[str, str]:
    """Each baseline's numeric figures as version tags ``baseline_<name>_<metric>`` (read by the gate)."""
    return {baseline_tag(name, k): _metric_tag(v) for name, summary in (baselines or {}).items()
            for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


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
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
    trust_remote_code: bool = False,
) -> RegisteredVersion:
    """Register a model folder (medvlm checkpoint or Hugging Face folder) as a new version of ``model_name``.

    Args:
        checkpoint_dir: a medvlm checkpoint (config, safetensors weights, processor, manifest) or a
            Hugging Face ``save_pretrained`` folder of an allowed family.
        metrics: its evaluation summary; each number becomes a version tag (the release gate reads
            ``clinical_macro_f1`` from there).
        tracking_uri: store URI; default as ``pipelines.tracking.locations.resolve_tracking_uri``.
        model_name: registered model name.
        run_id: the training run to attach the checkpoint to; when None a short ``register``
            run is created (with git commit and the metrics) and ended.
        experiment: experiment of that new run.
        data_hash: ``data_manifest_hash`` of the training data.
        tags: more version tags (checked for PHI).
        baselines: the baselines' summaries on the same split (``Evaluation.baselines``); the
            release gate refuses a version without them.
        trust_remote_code: allow a Hugging Face folder with its own code (hashes become a tag).

    Returns:
        The new ``RegisteredVersion``.

    Raises:
        medvlm.errors.CheckpointError: no config, a family off the allow-list
            (``UnsupportedFamilyError``), pickle files (``UnsafeCheckpointError``), a file that
            differs from the manifest (``CheckpointIntegrityError``), remote code without the flag
            or changed since it was trusted (``RemoteCodeError``) (all ``ValueError``).
        RegistryError: no safetensors weights.
        PHIInTrackingError: a tag looks like PHI.
    """
    from mlflow.exceptions import MlflowException

    ckpt = Path(checkpoint_dir).resolve()
    kind = _check_model_dir(ckpt, trust_remote_code=trust_remote_code)
    uri = resolve_tracking_uri(tracking_uri)
    numeric = {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    version_tags = {k: _metric_tag(v) for k, v in numeric.items()}
    version_tags.update(baseline_tags(baselines))
    version_tags.update(checkpoint_hashes(ckpt))
    version_tags.update(kind)
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


def load_model(model: str | Path, *, merge: bool = False, tracking_uri: str | None = None,
               trust_remote_code: bool = False, dtype: str | None = None) -> MedVLM:
    """The one way `pipelines` and the dashboard load a model: a folder or an MLflow models URI.

    Args:
        model: a medvlm checkpoint folder, a Hugging Face folder of an allowed family, or
            ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` (either kind, registered).
        merge: fold a LoRA adapter into the base weights (inference only).
        tracking_uri: store URI for a models URI; default as ``resolve_tracking_uri``.
        trust_remote_code: allow a Hugging Face folder's own code (``--trust-remote-code``).
        dtype: "float32" | "bfloat16" weights (None: a medvlm checkpoint's own, float32 otherwise).

    Returns:
        The loaded `MedVLM` in eval mode (``bundle.source["remote_code"]``: the trusted code's hashes).

    Raises:
        RegistryError: see `resolve_model_uri`.
        medvlm.errors.CheckpointError: refused (see `medvlm.loading.load_vlm` and
            `medvlm.checkpoint.load_checkpoint`).
    """
    from medvlm.loading import load_model as load_folder

    folder = resolve_model_uri(model, tracking_uri=tracking_uri)
    return load_folder(folder, trust_remote_code=trust_remote_code, merge=merge, dtype=dtype)


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
    "DEFAULT_MODEL_NAME",
    "GateDecision",
    "RegisteredVersion",
    "RegistryError",
    "baseline_tags",
    "champion_exists",
    "checkpoint_hashes",
    "promote_if_better",
    "register_checkpoint",
    "load_model",
    "resolve_model_uri",
]
