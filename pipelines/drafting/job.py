"""`medvlm draft`: the batch drafting job (source → gate → queue → workers → drafts for review).

Stages:

1. **Identity.** The model is a checkpoint folder (or an MLflow URI resolved to one); its model
   version is the manifest's content hash, the prompt hash is the sha256 of the prompt and decoding
   settings. A job is keyed on (study UID, model version, prompt hash), so re-running the job skips
   studies already drafted ("skipped") and resumes those left queued or leased by a crash.
2. **Intake** (this process). Each study from the source is read, gated (chest CR/DX) and
   normalised file by file (`pipelines.intake.ingest.ingest_file`); bad files are set aside with their
   typed reason code, and a study left without a frontal (PA/AP) image is quarantined in the store
   with a reason. Good studies are recorded (`add_study`, with the accepted files' paths in the
   study metadata: the export re-reads their headers) and queued (`enqueue`, idempotent).
3. **Drafting** (worker processes, or Ray actors, see `pipelines.drafting.ray_engine`). A worker claims up
   to ``batch_size`` jobs of this model version with a lease, loads their images, generates the
   drafts in one batched call **outside any transaction** while a thread renews the leases, then
   completes each job (draft + consistency flags + per-sentence confidences) and creates version 1
   of the report for review. A crash leaves leases that expire; another worker (or the next run)
   takes the jobs again, and ``complete`` refuses a stale worker, so a study is drafted once.

No patient data is printed: studies are shown by their audit pseudonym.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue as queue_mod
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.store import Store, open_store
from pipelines.store.jobs import (
    DraftPayload,
    Job,
    LeaseKeeper,
    LeaseLostError,
    QuarantineError,
    add_study,
    claim,
    complete,
    enqueue,
    fail,
    get_study_metadata,
    job_state,
    pending_count,
    quarantine,
    quarantine_study,
    set_study_metadata,
)

DEFAULT_WORK_DIR = Path("var") / "incoming"
FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEW = "LATERAL"
NO_FRONTAL = "no_frontal_view"
NO_IMAGES = "no_images"


# ---- configuration and identity ---------------------------------------------------------------


@dataclass(frozen=True)
class DraftOptions:
    """Settings of one drafting run."""

    lease_seconds: float = 300.0
    """Lease per claimed job; renewed every third of it while drafting, so a live worker keeps
    its jobs and a dead one loses them after at most this long."""
    batch_size: int = 4
    """Jobs claimed together and drafted in one `generate` call. Small enough that two workers
    share the tail of a batch job evenly; large enough to amortise the prompt pass."""
    max_attempts: int = 3
    """Claims allowed per job before it is marked failed."""
    poll_seconds: float = 0.2
    """Wait between claims when nothing is claimable but jobs are still pending."""
    max_new_tokens: int | None = None
    """Override of the checkpoint's `generation.max_new_tokens` (part of the prompt hash)."""
    low_confidence: float = 0.5
    """Sentences with a confidence below this are flagged ``low_confidence``."""
    window: str = "auto"
    """Intensity rule used when images are normalised (see `dicom_io.normalise`)."""
    throttle_s: float = 0.0
    """Sleep this long after claiming each batch, before drafting (tests: reproducible crash points)."""
    threads_per_worker: int | None = None
    """Torch intra-op threads per worker process; None: 1 with several workers, torch's default with one."""

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0:
            raise ValueError(f"--lease-seconds must be > 0, got {self.lease_seconds}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class ModelIdentity:
    """Which model drafts, and with which prompt.

    Attributes:
        checkpoint: local checkpoint folder.
        model_version: the checkpoint manifest's content hash (sha256 hex).
        prompt_hash: sha256 hex of the prompt wording and decoding settings.
        adapter_hash: hash over the LoRA adapter files, or None without an adapter.
        image_size: the model's input edge (images are resized to it when loaded).
        max_views: most views the model takes per study (frontal first, then lateral).
    """

    checkpoint: str
    model_version: str
    prompt_hash: str
    adapter_hash: str | None
    image_size: int
    max_views: int = 2


def _canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def generation_settings(cfg: Any, options: DraftOptions) -> Any:
    """The checkpoint's decoding settings with this run's overrides (max tokens, batch size)."""
    gen = cfg.generation
    changes: dict[str, Any] = {"batch_size": options.batch_size}
    if options.max_new_tokens is not None:
        changes["max_new_tokens"] = options.max_new_tokens
    return dataclasses.replace(gen, **changes)


def model_identity(checkpoint: str | Path, options: DraftOptions | None = None) -> ModelIdentity:
    """Read a checkpoint's identity from its manifest and config, without loading the weights.

    Args:
        checkpoint: a folder written by `medvlm.checkpoint.save_checkpoint`.
        options: run options (a `max_new_tokens` override changes the prompt hash).

    Returns:
        The identity.

    Raises:
        medvlm.errors.CheckpointError: not a checkpoint folder (manifest or config missing).
    """
    from medvlm.checkpoint import CONFIG_FILE, MANIFEST_FILE, fingerprint
    from medvlm.config import ModelConfig
    from medvlm.errors import CheckpointError

    options = options or DraftOptions()
    folder = Path(checkpoint)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        stored = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: not a medvlm checkpoint ({type(exc).__name__})") from exc
    cfg = ModelConfig.from_dict(stored["model"])
    gen = generation_settings(cfg, options)
    prompt = {
        "prompt": dataclasses.asdict(cfg.prompt),
        # batch size changes padding only, not what a study's prompt asks for
        "generation": {k: v for k, v in dataclasses.asdict(gen).items() if k != "batch_size"},
        "max_views": cfg.max_views,
    }
    fp = fingerprint(folder, manifest)
    return ModelIdentity(
        checkpoint=str(folder.resolve()),
        model_version=fp.model_version,
        prompt_hash=_canonical_hash(prompt),
        adapter_hash=fp.adapter_hash,
        image_size=int(cfg.image_size),
        max_views=int(cfg.max_views),
    )


# ---- intake: read, gate, normalise, queue ------------------------------------------------------


@dataclass(frozen=True)
class PreparedStudy:
    """What intake learnt about one study.

    Attributes:
        study_uid: the study key (Study Instance UID, or ``file-...`` for files without one).
        metadata: JSON for the store (accepted file paths, views, the chosen model inputs,
            rejected files by name and reason); no header values.
        quarantine_code: set when the study cannot be drafted.
        quarantine_message: a PHI-free sentence saying why.
        rejected: reason code of each rejected file.
    """

    study_uid: str
    metadata: dict[str, Any]
    quarantine_code: str | None = None
    quarantine_message: str = ""
    rejected: tuple[str, ...] = ()


def prepare_study(study_key: str, files: Iterable[Path], *, window: str = "auto") -> PreparedStudy:
    """Read, gate and normalise each file of a study, then choose the model's views.

    Args:
        study_key: the source's key of the study.
        files: its local files.
        window: intensity rule for normalisation.

    Returns:
        The prepared study; ``quarantine_code`` is set when no frontal image was accepted.
    """
    from dicom_io.errors import DicomIOError
    from pipelines.intake.ingest import ingest_file

    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = []
    seen_sops: set[str] = set()
    for path in sorted(Path(p) for p in files):
        try:
            _, meta = ingest_file(path, window=window)
            if meta.sop_uid in seen_sops:
                raise QuarantineError("duplicate", "same SOP Instance UID as another file of the study")
            seen_sops.add(meta.sop_uid)
        except DicomIOError as exc:
            rejected.append({"file": path.name, "code": exc.code})
            continue
        except QuarantineError as exc:
            rejected.append({"file": path.name, "code": exc.code})
            continue
        except Exception as exc:  # noqa: BLE001 - untrusted input: any failure sets the file aside
            rejected.append({"file": path.name, "code": "internal_error", "error": type(exc).__name__})
            continue
        accepted.append({"path": str(path.resolve()), "view": meta.view, "series_number": meta.series_number,
                         "instance_number": meta.instance_number})
    frontal = _pick(accepted, FRONTAL_VIEWS)
    lateral = _pick(accepted, (LATERAL_VIEW,))
    metadata: dict[str, Any] = {
        "files": [a["path"] for a in accepted],
        "views": [a["view"] for a in accepted],
        "inputs": [p for p in (frontal, lateral) if p],
        "rejected": rejected,
    }
    codes = tuple(r["code"] for r in rejected)
    if frontal is None:
        if not accepted:
            code = Counter(codes).most_common(1)[0][0] if codes else NO_IMAGES
            msg = f"none of the {len(rejected)} file(s) is a usable chest radiograph"
        else:
            code, msg = NO_FRONTAL, f"no PA/AP image among {len(accepted)} accepted image(s)"
        return PreparedStudy(study_key, metadata, code, msg, codes)
    return PreparedStudy(study_key, metadata, None, "", codes)


def _pick(accepted: list[dict[str, Any]], views: tuple[str, ...]) -> str | None:
    """The path of the first accepted image with one of `views`, in the order the views are listed."""
    for view in views:
        for a in accepted:
            if a["view"] == view:
                return a["path"]
    return None


def claim_matching(store: Store, worker_id: str, lease_seconds: float, ident: ModelIdentity) -> Job | None:
    """`jobs.claim` restricted to this model version and prompt (a worker must not draft other jobs)."""
    return claim(store, worker_id, lease_seconds, model_version=ident.model_version, prompt_hash=ident.prompt_hash)


def pending_for(store: Store, ident: ModelIdentity) -> int:
    """Jobs of this model version and prompt still queued or leased."""
    return pending_count(store, model_version=ident.model_version, prompt_hash=ident.prompt_hash)


def ensure_versions(store: Store, ident: ModelIdentity) -> int:
    """Create the review version of every done job of this model that has none (a worker may have
    died between ``complete`` and ``create_version_from_draft``). Idempotent; returns how many."""
    from sqlalchemy import select

    from pipelines.store.models import DraftRecord, JobRecord, ReportVersion
    from pipelines.store.reviews import create_version_from_draft

    with store.transaction() as session:
        missing = session.scalars(
            select(JobRecord.id).join(DraftRecord, DraftRecord.job_id == JobRecord.id)
            .outerjoin(ReportVersion, ReportVersion.draft_id == DraftRecord.id)
            .where(JobRecord.model_version == ident.model_version, JobRecord.prompt_hash == ident.prompt_hash,
                   ReportVersion.id.is_(None))).all()
    for job_id in missing:
        create_version_from_draft(store, int(job_id), author=_author(ident))
    return len(missing)


def _author(ident: ModelIdentity) -> str:
    return f"medvlm@{ident.model_version[:12]}"


@dataclass
class IntakeStats:
    """What intake did with the studies of the source."""

    seen: int = 0
    """Studies taken from the source."""
    queued: int = 0
    """Newly queued for drafting."""
    resumed: int = 0
    """Already queued or leased by an earlier (interrupted) run: drafted by this run."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Not queued again, by the existing job's state (``done`` = already drafted)."""
    quarantined: dict[str, int] = field(default_factory=dict)
    """Quarantined at intake, by reason code."""
    files_rejected: dict[str, int] = field(default_factory=dict)
    """Files set aside inside otherwise usable studies, by reason code."""
    study_uids: list[str] = field(default_factory=list)
    """Studies this run queued or resumed."""


def intake_study(store: Store, study_key: str, files: Iterable[Path], ident: ModelIdentity, options: DraftOptions,
                 *, source: str, stats: IntakeStats, actor: str = "medvlm-draft") -> str:
    """Gate one study and queue it (idempotently). Returns ``queued``, ``resumed``, ``skipped:STATE``
    or ``quarantined:CODE``."""
    existing = job_state(store, study_key, ident.model_version, ident.prompt_hash)
    if existing is not None and existing[1] not in ("queued", "leased"):
        stats.skipped[existing[1]] = stats.skipped.get(existing[1], 0) + 1
        return f"skipped:{existing[1]}"
    prepared = prepare_study(study_key, files, window=options.window)
    if prepared.quarantine_code is not None:
        if existing is not None:  # queued earlier, bad now (files changed): leave it to the worker
            stats.resumed += 1
            stats.study_uids.append(study_key)
            return "resumed"
        quarantine_study(store, study_key, prepared.quarantine_code, prepared.quarantine_message,
                         source=source, metadata=prepared.metadata, actor=actor)
        stats.quarantined[prepared.quarantine_code] = stats.quarantined.get(prepared.quarantine_code, 0) + 1
        return f"quarantined:{prepared.quarantine_code}"
    for code in prepared.rejected:
        stats.files_rejected[code] = stats.files_rejected.get(code, 0) + 1
    created = add_study(store, study_key, source=source, metadata=prepared.metadata, actor=actor)
    if not created:  # known study (other model, earlier quarantine): refresh what we know of it
        set_study_metadata(store, study_key, prepared.metadata, reset_status=existing is None)
    enqueue(store, study_key, ident.model_version, ident.prompt_hash, source=source,
            max_attempts=options.max_attempts, actor=actor)
    stats.study_uids.append(study_key)
    if existing is not None:
        stats.resumed += 1
        return "resumed"
    stats.queued += 1
    return "queued"


# ---- drafting ----------------------------------------------------------------------------------


def load_study_input(metadata: dict[str, Any], image_size: int, *, window: str = "auto",
                     max_views: int | None = None) -> Any:
    """Load a queued study's model inputs (frontal first, then lateral) at the model's image size.

    A model trained on fewer views than the study has (e.g. frontal only) gets the first `max_views`.

    Raises:
        QuarantineError: no input recorded, or the frontal image no longer loads (code of the error).
    """
    from dicom_io.errors import DicomIOError
    from dicom_io.reader import load_image
    from medvlm.generate import StudyInput

    paths = list(metadata.get("inputs") or [])[:max_views]
    if not paths:
        raise QuarantineError(NO_FRONTAL, "no frontal image recorded for the study")
    images = []
    for i, path in enumerate(paths):
        try:
            pixels, _ = load_image(path, window=window, size=image_size)
        except DicomIOError as exc:
            if i == 0:  # the frontal view is required; a lost lateral only narrows the input
                raise QuarantineError(exc.code, "the frontal image can no longer be read") from None
            continue
        images.append(pixels)
    return StudyInput(images=images)


def draft_payload(draft: Any, ident: ModelIdentity, *, low_confidence: float, has_prior: bool = False) -> DraftPayload:
    """Turn a `medvlm.generate.Draft` into the store's payload with confidences and flags."""
    from medvlm.consistency import check_consistency

    sentences = [{"text": s.text, "section": s.section, "confidence": round(float(s.confidence), 4),
                  "min_prob": round(float(s.min_prob), 4), "n_tokens": int(s.n_tokens)} for s in draft.sentences]
    flags: dict[str, Any] = {}
    consistency = check_consistency(draft.findings, draft.impression, has_prior=has_prior)
    if consistency:
        flags["consistency"] = [{"code": f.code, "message": f.message, "sentence_indices": list(f.sentence_indices),
                                 "observation": f.observation} for f in consistency]
    low = [i for i, s in enumerate(sentences) if s["confidence"] < low_confidence]
    if low:
        flags["low_confidence"] = low
    if not (draft.findings.strip() or draft.impression.strip()):
        flags["empty_report"] = True
    return DraftPayload(findings=draft.findings, impression=draft.impression, sentences=sentences, flags=flags,
                        model_hash=ident.model_version, adapter_hash=ident.adapter_hash)


ProgressFn = Callable[[str, str, str], None]
"""Called with (study pseudonym, outcome, detail) after each job of a worker."""


def draft_jobs(store: Store, bundle: Any, ident: ModelIdentity, jobs: list[Job], worker_id: str,
               options: DraftOptions, settings: Any, on_job: ProgressFn | None = None) -> list[str]:
    """Draft a batch of claimed jobs and record each outcome (``done``, ``quarantined``,
    ``failed``, ``lost``). Inference runs outside any transaction; leases are renewed meanwhile."""
    from medvlm.generate import generate_drafts
    from pipelines.store.reviews import create_version_from_draft

    outcomes: dict[int, str] = {}
    ready: list[tuple[Job, Any]] = []

    def record(job: Job, outcome: str, detail: str = "") -> None:
        outcomes[job.id] = outcome
        if on_job is not None:
            on_job(store.pseudonym(job.study_uid)[:12], outcome, detail)

    for job in jobs:
        try:
            ready.append((job, load_study_input(get_study_metadata(store, job.study_uid), ident.image_size,
                                                window=options.window, max_views=ident.max_views)))
        except QuarantineError as exc:
            try:
                quarantine(store, job.id, worker_id, exc.code, exc.message)
                record(job, "quarantined", exc.code)
            except LeaseLostError:
                record(job, "lost")
        except Exception as exc:  # noqa: BLE001 - the batch goes on
            _fail(store, job, worker_id, exc, record)
    if ready:
        try:
            with LeaseKeeper(store, [j.id for j, _ in ready], worker_id, options.lease_seconds):
                if options.throttle_s > 0:
                    time.sleep(options.throttle_s)
                drafts = generate_drafts(bundle, [inp for _, inp in ready], settings)
        except Exception as exc:  # noqa: BLE001 - record the error on every job of the batch
            for job, _ in ready:
                _fail(store, job, worker_id, exc, record)
            return [outcomes[j.id] for j in jobs]
        for (job, _), draft in zip(ready, drafts, strict=True):
            payload = draft_payload(draft, ident, low_confidence=options.low_confidence)
            try:
                complete(store, job.id, worker_id, payload)
            except LeaseLostError:
                record(job, "lost")
                continue
            create_version_from_draft(store, job.id, author=_author(ident))
            record(job, "done", f"{draft.n_tokens} tokens" + (f", flags {sorted(payload.flags)}" if payload.flags
                                                               else ""))
    return [outcomes[j.id] for j in jobs]


def _fail(store: Store, job: Job, worker_id: str, exc: BaseException, record: Callable[..., None]) -> None:
    # the message may quote header values (PHI): store only the error type
    try:
        state = fail(store, job.id, worker_id, type(exc).__name__, f"drafting error ({type(exc).__name__})")
        record(job, "failed" if state == "failed" else "requeued", type(exc).__name__)
    except LeaseLostError:
        record(job, "lost")


def load_bundle(ident: ModelIdentity, threads: int | None = None) -> Any:
    """Load the checkpoint for inference (LoRA merged); `threads` caps torch's intra-op threads."""
    import torch

    from medvlm.checkpoint import load_checkpoint

    if threads:
        torch.set_num_threads(int(threads))
    return load_checkpoint(ident.checkpoint, merge=True)


def worker_loop(store: Store, bundle: Any, ident: ModelIdentity, worker_id: str, options: DraftOptions, *,
                intake_done: Any = None, on_job: ProgressFn | None = None, max_batches: int | None = None) -> Counter:
    """Claim and draft batches until no job of this model is pending and intake is done.

    Args:
        store: the open store.
        bundle: the loaded model.
        ident: model identity (only its jobs are claimed).
        worker_id: unique worker name (lease owner).
        options: run options.
        intake_done: an event (threading or multiprocessing) set when intake has queued everything;
            None = already done.
        on_job: progress callback.
        max_batches: stop after this many batches.

    Returns:
        Outcome counts.
    """
    settings = generation_settings(bundle.config, options)
    counts: Counter = Counter()
    batches = 0
    while max_batches is None or batches < max_batches:
        jobs: list[Job] = []
        for _ in range(options.batch_size):
            job = claim_matching(store, worker_id, options.lease_seconds, ident)
            if job is None:
                break
            jobs.append(job)
        if not jobs:
            if (intake_done is None or intake_done.is_set()) and pending_for(store, ident) == 0:
                break
            time.sleep(options.poll_seconds)
            continue
        batches += 1
        counts.update(draft_jobs(store, bundle, ident, jobs, worker_id, options, settings, on_job))
    ensure_versions(store, ident)
    return counts


def _worker_main(url: str, audit_key: bytes | None, ident: ModelIdentity, options: DraftOptions, worker_id: str,
                 threads: int | None, intake_done: Any, events: Any) -> None:
    """Entry point of a spawned worker process: load the model once, then `worker_loop`."""
    bundle = load_bundle(ident, threads)

    def on_job(pseudo: str, outcome: str, detail: str) -> None:
        events.put((worker_id, pseudo, outcome, detail))

    with open_store(url, migrate=False, audit_key=audit_key) as store:
        worker_loop(store, bundle, ident, worker_id, options, intake_done=intake_done, on_job=on_job)


# ---- the whole job -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DraftSummary:
    """The outcome of one `medvlm draft` run."""

    model_version: str
    """Content hash of the checkpoint."""
    prompt_hash: str
    """Hash of the prompt and decoding settings."""
    engine: str
    """``local`` or ``ray``."""
    workers: int
    """Worker processes (or Ray actors); 0 = drafted in the calling process."""
    studies_seen: int
    """Studies taken from the source."""
    drafted: int
    """Studies of this run that now have a draft."""
    skipped: int
    """Studies already drafted (or finished) by an earlier run: not queued again."""
    skipped_by_state: dict[str, int]
    """Skipped studies by their job's state (``done``, ``quarantined``, ``failed``)."""
    quarantined: dict[str, int]
    """Quarantined studies by reason code (at intake and by workers)."""
    failed: dict[str, int]
    """Studies whose job failed for good, by error code."""
    pending: int
    """Jobs of this run still queued or leased (workers died); the next run resumes them."""
    files_rejected: dict[str, int]
    """Files set aside inside drafted studies, by reason code."""
    seconds: float
    """Wall time of the run."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        out = dataclasses.asdict(self)
        out["studies_per_min"] = round(60.0 * self.drafted / self.seconds, 2) if self.seconds > 0 else None
        return out


def _outcome_counts(store: Store, ident: ModelIdentity, study_uids: list[str]) -> tuple[int, Counter, Counter, int]:
    from sqlalchemy import select

    from pipelines.store.models import JobRecord

    done, quarantined, failed, pending = 0, Counter(), Counter(), 0
    wanted = set(study_uids)
    with store.transaction() as session:
        rows = session.execute(select(JobRecord.study_uid, JobRecord.state, JobRecord.error_code).where(
            JobRecord.model_version == ident.model_version, JobRecord.prompt_hash == ident.prompt_hash)).all()
    for uid, state, code in rows:
        if uid not in wanted:
            continue
        if state == "done":
            done += 1
        elif state == "quarantined":
            quarantined[code or "unknown"] += 1
        elif state == "failed":
            failed[code or "unknown"] += 1
        else:
            pending += 1
    return done, quarantined, failed, pending


def run_draft_job(model: str | Path, source: Any, *, db: str | None = None, workers: int = 1,
                  engine: str = "local", options: DraftOptions | None = None, limit: int | None = None,
                  progress: bool = True, audit_key: bytes | None = None, ray_address: str | None = None,
                  source_label: str | None = None) -> DraftSummary:
    """Run the whole drafting job (stages in the module docstring).

    Args:
        model: checkpoint folder or ``models:/NAME@ALIAS``.
        source: a ``dicom_io`` source (anything with ``studies()``) or a `ParsedSource`.
        db: store URL (default ``$MEDVLM_DATABASE_URL`` or the SQLite file ``var/medvlm.db``). An
            in-memory SQLite URL works only with ``workers=0``.
        workers: local engine: worker processes (``spawn``; 0 = draft in this process after intake);
            Ray engine: actors.
        engine: ``local`` or ``ray``.
        options: run options.
        limit: take at most this many studies from the source.
        progress: Rich progress bar and one status line per study on stderr.
        audit_key: pseudonym key (default: the store's).
        ray_address: Ray cluster address (None = a local 2-CPU cluster).
        source_label: recorded as the studies' source (default: the parsed source's label).

    Returns:
        The run summary.

    Raises:
        ValueError: bad engine, workers or options.
        pipelines.tracking.registry.RegistryError, medvlm.errors.CheckpointError: bad model.
        dicom_io.sources.PacsError: the PACS could not be queried.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipelines.tracking.registry import resolve_model_uri

    if engine not in ("local", "ray"):
        raise ValueError(f"--engine must be local or ray, got {engine!r}")
    if workers < 0 or (engine == "ray" and workers < 1):
        raise ValueError(f"--workers must be >= 0 (>= 1 with --engine ray), got {workers}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    options = options or DraftOptions()
    started = time.perf_counter()
    ident = model_identity(resolve_model_uri(model), options)
    label = source_label or getattr(source, "label", None) or type(source).__name__
    studies_source = getattr(source, "source", source)
    store = open_store(db, audit_key=audit_key)
    url = store.engine.url.render_as_string(hide_password=False)
    if workers > 0 and engine == "local" and store.dialect == "sqlite" and store.engine.url.database in (None, "",
                                                                                                     ":memory:"):
        store.close()
        raise ValueError("an in-memory SQLite store cannot be shared with worker processes: use a file or --workers 0")
    console = Console(stderr=True)
    stats = IntakeStats()
    procs: list[Any] = []
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    intake_done = ctx.Event()
    events = ctx.Queue()
    try:
        if engine == "local" and workers > 0:
            threads = options.threads_per_worker or (1 if workers > 1 else None)
            for i in range(workers):
                wid = f"draft-{os.getpid()}-{i}"
                p = ctx.Process(target=_worker_main, name=wid, daemon=True,
                                args=(url, store.audit_key, ident, options, wid, threads, intake_done, events))
                p.start()
                procs.append(p)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            task = bar.add_task("draft", total=None)

            def line(pseudo: str, outcome: str, detail: str = "") -> None:
                if progress:
                    bar.console.print(f"study {pseudo}: {outcome}" + (f" ({detail})" if detail else ""),
                                      highlight=False, markup=False)

            def on_job(pseudo: str, outcome: str, detail: str) -> None:
                if outcome in ("done", "quarantined", "failed"):
                    bar.advance(task)
                line(pseudo, outcome, detail)

            files_by_key: dict[str, set[Path]] = {}
            for fetched in studies_source.studies():
                key = fetched.study_key
                repeat = key in files_by_key  # a watched folder yields a study again with its later files
                if not repeat:
                    if limit is not None and stats.seen >= limit:
                        break
                    stats.seen += 1
                files_by_key.setdefault(key, set()).update(Path(f) for f in fetched.files)
                outcome = intake_study(store, key, sorted(files_by_key[key]), ident, options, source=label,
                                       stats=IntakeStats() if repeat else stats)
                pseudo = store.pseudonym(fetched.study_key)[:12]
                line(pseudo, outcome.replace(":", " ", 1))
                bar.update(task, total=stats.queued + stats.resumed)
                _drain(events, on_job)
            intake_done.set()
            if engine == "local" and workers == 0 and pending_for(store, ident) > 0:
                bundle = load_bundle(ident)
                worker_loop(store, bundle, ident, f"draft-{os.getpid()}", options, on_job=on_job)
            elif engine == "ray" and pending_for(store, ident) > 0:
                from pipelines.drafting.ray_engine import run_ray_workers

                run_ray_workers(url, store.audit_key, ident, options, workers, address=ray_address, on_job=on_job)
            while any(p.is_alive() for p in procs):
                _drain(events, on_job, timeout=0.2)
            _drain(events, on_job)
        for p in procs:
            if p.exitcode:
                console.print(f"worker {p.name} exited with code {p.exitcode}; its leased jobs are taken over "
                              "when their leases expire (run the job again to finish them)", markup=False)
        ensure_versions(store, ident)
        done, quarantined, failed, pending = _outcome_counts(store, ident, stats.study_uids)
        quarantined.update(stats.quarantined)
        return DraftSummary(
            model_version=ident.model_version, prompt_hash=ident.prompt_hash, engine=engine, workers=workers,
            studies_seen=stats.seen, drafted=done, skipped=stats.skipped.get("done", 0),
            skipped_by_state=dict(stats.skipped), quarantined=dict(quarantined), failed=dict(failed),
            pending=pending, files_rejected=dict(stats.files_rejected),
            seconds=round(time.perf_counter() - started, 3))
    finally:
        intake_done.set()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        store.close()


def _drain(events: Any, on_job: ProgressFn, timeout: float | None = None) -> None:
    """Forward worker events to the progress display; waits up to `timeout` for the first one."""
    block = timeout is not None
    while True:
        try:
            _, pseudo, outcome, detail = events.get(block, timeout) if block else events.get_nowait()
        except queue_mod.Empty:
            return
        except (EOFError, OSError):
            return
        on_job(pseudo, outcome, detail)
        block = False


def draft_command(
    model: str,
    source: str,
    db: str | None = None,
    workers: int = 1,
    engine: str = "local",
    lease_seconds: float = 300.0,
    limit: int | None = None,
    progress: bool = True,
    *,
    batch_size: int = 4,
    max_new_tokens: int | None = None,
    work_dir: str | Path = DEFAULT_WORK_DIR,
    calling_aet: str = "MEDVLM",
    our_port: int = 0,
    watch: bool = False,
    ray_address: str | None = None,
) -> Any:
    """`medvlm draft --model M --source SRC [--db URL] [--workers N] [--engine local|ray]`.

    Args:
        model: checkpoint folder or ``models:/medvlm@champion``.
        source: a folder, ``dicomweb:URL`` or ``dimse://CALLED_AET@HOST:PORT`` (see
            `pipelines.intake.sources`).
        db: store URL; default ``$MEDVLM_DATABASE_URL`` or ``sqlite:///var/medvlm.db``.
        workers: local engine: worker processes (0 = in this process); ray: actors.
        engine: ``local`` or ``ray``.
        lease_seconds: job lease (renewed while drafting).
        limit: take at most this many studies from the source.
        progress: progress bar and per-study lines on stderr.
        batch_size: jobs drafted per `generate` call.
        max_new_tokens: override of the checkpoint's token budget.
        work_dir: where PACS sources store retrieved files (keep it: the export reads headers there).
        calling_aet: our AE title (DIMSE).
        our_port: our C-STORE SCP port for C-MOVE.
        watch: poll a folder source for new files.
        ray_address: Ray cluster address (engine ray); None = a local cluster.

    Returns:
        `pipelines.drafting.job.DraftSummary` (``as_dict()`` for printing).
    """
    from pipelines.drafting.job import DraftOptions, run_draft_job
    from pipelines.intake.sources import parse_source

    options = DraftOptions(lease_seconds=lease_seconds, batch_size=batch_size, max_new_tokens=max_new_tokens)
    parsed = parse_source(source, work_dir=work_dir, calling_aet=calling_aet, our_port=our_port, watch=watch)
    return run_draft_job(model, parsed, db=db, workers=workers, engine=engine, options=options, limit=limit,
                         progress=progress, ray_address=ray_address)
