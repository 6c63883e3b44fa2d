"""The model: what the Model page says about the model that drafted a study (MLflow registry), the
model the Ask page uses (``$MEDVLM_MODEL``), and its answers streamed piece by piece.

Heavy libraries (torch, transformers, mlflow) are imported inside the functions that use them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dashboard.logic.study import QAView, StudyDetail
    from medvlm.build import MedVLM
    from pipelines.store import Store


@dataclass(frozen=True)
class ModelInfo:
    """What the Model page says about the model that drafted a study.

    Attributes:
        model_version: the version string stored with the draft.
        available: True when MLflow had a record of it.
        message: a plain sentence when not available (why).
        metrics: evaluation figures (name → value).
        tags: registry tags.
        model_card: the model card markdown, if logged.
    """

    model_version: str
    available: bool
    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    model_card: str | None = None


def audit_alarm_for(store: Store, role: str) -> str | None:
    """The audit-log alarm sentence for an admin (``pipelines.store.integrity.audit_alarm``); None for others."""
    from pipelines.store.integrity import audit_alarm

    return audit_alarm(store) if role == "admin" else None


_CONTENT_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


def short_model_version(model_version: str | None) -> str:
    """A checkpoint content hash shortened for tables (12 hex digits); other version strings unchanged."""
    value = model_version or ""
    return value[:12] if _CONTENT_HASH_RE.match(value) else value


_VERSION_RE = re.compile(r"^(?:models:/)?(?P<name>[^/@]+)(?:/|@|:v?)(?P<ref>[^/]+)$")


def model_info(model_version: str, *, tracking_uri: str | None = None) -> ModelInfo:
    """Look up a model version in the MLflow registry.

    Never creates a tracking database: when the default SQLite file is absent the answer says so.

    Args:
        model_version: e.g. ``medvlm/3``, ``models:/medvlm@champion`` or a checkpoint path.
        tracking_uri: MLflow URI; default as ``pipelines.tracking.tracker.resolve_tracking_uri``.

    Returns:
        The information found, or ``available=False`` with the reason.
    """
    from pipelines.tracking.tracker import resolve_tracking_uri, sqlite_path

    if not model_version:
        return ModelInfo("", False, "This study has no draft, so no model is recorded for it.")
    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return ModelInfo(model_version, False, "No MLflow tracking store is configured here "
                         "(set MLFLOW_TRACKING_URI); evaluation figures and the model card are unavailable.")
    m = _VERSION_RE.match(model_version)
    by_hash = _CONTENT_HASH_RE.match(model_version) is not None
    if m is None and not by_hash:
        return ModelInfo(model_version, False, "This model version is not a registered MLflow model "
                         "(for example a local checkpoint folder); no evaluation figures are recorded.")
    try:
        from pipelines.tracking.tracker import open_client

        client = open_client(uri)
        if by_hash:
            # the batch job records the checkpoint's content hash; registration tags each version with it
            found = client.search_model_versions(f"tags.content_hash = '{model_version}'")
            if not found:
                return ModelInfo(model_version, False, "No registered model version has this checkpoint's content "
                                 "hash (a checkpoint drafted outside the registry).")
            mv = found[0]
        else:
            ref = m["ref"]
            mv = (client.get_model_version(m["name"], ref) if ref.isdigit()
                  else client.get_model_version_by_alias(m["name"], ref))
        metrics: dict[str, float] = {}
        card = None
        if mv.run_id:
            run = client.get_run(mv.run_id)
            metrics = {k: float(v) for k, v in run.data.metrics.items()}
            try:
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    local = client.download_artifacts(mv.run_id, "model_card.md", tmp)
                    card = Path(local).read_text(encoding="utf-8")
            except Exception:  # noqa: BLE001 - the card is optional
                card = None
        return ModelInfo(model_version, True, "", metrics, dict(mv.tags or {}), card)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; say plainly it is unavailable
        return ModelInfo(model_version, False, f"MLflow has no record of this model version ({type(exc).__name__}).")


MODEL_ENV = "MEDVLM_MODEL"
"""Environment variable naming the model the Ask page uses: a checkpoint folder or ``models:/...``."""


def configured_model(env: Mapping[str, str] | None = None) -> str | None:
    """The model the dashboard may use for questions (``$MEDVLM_MODEL``), or None."""
    import os

    value = (os.environ if env is None else env).get(MODEL_ENV, "").strip()
    return value or None


def trust_remote_code(env: Mapping[str, str] | None = None) -> bool:
    """Whether the model folder's own code may run (``medvlm dashboard --trust-remote-code``)."""
    import os

    from pipelines.launch.dashboard import TRUST_REMOTE_CODE_ENV

    return (os.environ if env is None else env).get(TRUST_REMOTE_CODE_ENV, "").strip() == "1"


def load_model(model: str, store: Store | None = None, *, env: Mapping[str, str] | None = None) -> MedVLM:
    """Load a model bundle: medvlm checkpoint, Hugging Face folder of a supported family, or ``models:/`` URI.

    Remote code runs only with ``$MEDVLM_TRUST_REMOTE_CODE=1``; each such load is recorded in
    the audit log of `store` (file hashes, family, model version).

    Raises:
        pipelines.tracking.registry.RegistryError: the URI or folder does not resolve.
        medvlm.errors.CheckpointError: the folder is refused (family, weights, pickle, remote code).
    """
    from medvlm.loading import model_fingerprint
    from pipelines.store.model_loads import record_remote_code_load
    from pipelines.tracking.registry import load_model as load_registered

    bundle = load_registered(model, trust_remote_code=trust_remote_code(env))
    remote_code = bundle.source.get("remote_code")
    if remote_code and store is not None:
        version = model_fingerprint(bundle.source["path"]).model_version
        record_remote_code_load(store, "dashboard", model_version=version, family=bundle.family.name,
                                remote_code=remote_code)
    return bundle


def model_images(detail: StudyDetail, size: int | None = None) -> list[Any]:
    """The study's views as model input: float32 [0, 1] (H, W) arrays, frontal first."""
    from dicom_io.reader import load_image

    return [load_image(path, size=size)[0] for _view, path in detail.images]


@dataclass
class StreamedAnswer:
    """What ``stream_model_answer`` leaves behind once the page has shown the stream.

    Attributes:
        pieces: the answer's text pieces as streamed (raw model text, not escaped).
        confidence: exp(mean token log-probability) of the same generation, set after the last
            piece; None while streaming or when the stream stopped early.
    """

    pieces: list[str] = field(default_factory=list)
    confidence: float | None = None

    @property
    def text(self) -> str:
        """The whole answer: the streamed pieces joined (what is stored with the study)."""
        return "".join(self.pieces)


def stream_model_answer(bundle: MedVLM, images: Sequence[Any], question: str, history: Sequence[QAView],
                        result: StreamedAnswer) -> Iterator[str]:
    """Stream the model's answer to a question about the open study (for ``st.write_stream``).

    Decoding is greedy (``medvlm.generate.stream_answer``); earlier Q&A of the study is the history,
    and a study with more views than the model reads gives it its first ``max_views`` (frontal first).

    Args:
        bundle: the model (``load_model``).
        images: the study's views (``model_images``), frontal first.
        question: the user's question.
        history: the study's stored Q&A, oldest first.
        result: filled as the stream is consumed: each piece, then the confidence.

    Yields:
        Raw text pieces (escape them before showing them as markdown).
    """
    from medvlm.generate import stream_answer

    def _done(answer: Any) -> None:
        result.confidence = float(answer.confidence)

    views = list(images)[: bundle.config.max_views]
    for piece in stream_answer(bundle, views, question, [(q.question, q.answer) for q in history],
                               on_answer=_done):
        result.pieces.append(piece)
        yield piece
