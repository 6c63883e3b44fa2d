"""The drafting job queue: idempotent enqueue, leases, completion bound to the lease, retries.

A job is one (study_uid, model_version, prompt_hash); the UNIQUE constraint on that triple makes
``enqueue`` idempotent even under concurrent calls (``INSERT ... ON CONFLICT DO NOTHING``).

Life of a job: ``queued`` → ``claim`` → ``leased`` (owner, expiry, attempts + 1) → the worker runs
inference **outside any transaction** → ``complete`` writes the draft and marks ``done`` in one
transaction, only if the worker still owns the lease. A worker that died leaves a lease that
expires; the next ``claim`` takes the job again. A stale worker's ``complete`` is refused
(``LeaseLostError``) and, with the UNIQUE ``drafts.job_id``, a job never gets a second draft.
``fail`` re-queues until ``max_attempts``, then marks ``failed``; ``quarantine`` sets the job and
its study aside with a reason. Every state change appends an audit event in the same transaction.
The loop that drives a job through these steps is `pipelines.drafting.worker.worker_loop`; studies
themselves are recorded by `pipelines.store.studies`.

Atomic claim: PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite holds the database write
lock from ``BEGIN IMMEDIATE`` (see ``pipelines.store.db``). Every function takes the open ``store``;
``job_id`` is a job's id and ``worker_id`` the worker that claimed it (the lease owner).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from compliance.audit import append_event
from compliance.clock import as_utc
from pipelines.errors import PipelineError
from pipelines.store.db import Store
from pipelines.store.models import DraftRecord, JobRecord, ReportVersion, StudyRecord, utcnow
from pipelines.store.studies import dialect_insert, insert_study, set_study_status

_MAX_MESSAGE = 1000


class JobError(PipelineError, RuntimeError):
    """A job operation cannot be done (unknown job id, bad arguments)."""


class LeaseLostError(JobError):
    """The worker no longer owns the job's lease (it expired and another worker took the job, or
    the job is finished); its result is refused."""


@dataclass(frozen=True)
class Job:
    """A claimed job, detached from the database."""

    id: int
    study_uid: str
    """The study to draft."""
    model_version: str
    """The model version that must draft it."""
    prompt_hash: str
    """Hash of the prompt and decoding settings."""
    attempts: int
    """Claims so far, this one included."""
    max_attempts: int
    """Claims allowed before the job fails."""
    lease_owner: str | None
    """The worker holding the lease."""
    lease_expires_at: datetime | None
    """When the lease runs out (UTC)."""


@dataclass(frozen=True)
class DraftPayload:
    """What a drafter returns for one job.

    Attributes:
        findings: the findings section.
        impression: the impression section.
        sentences: one mapping per sentence, e.g. ``{"text": ..., "confidence": 0.83}``.
        flags: JSON-able flags (low confidence, laterality conflicts, ...).
        model_hash: hash of the model weights that drafted it (recorded in the audit log).
        adapter_hash: hash of the LoRA adapter, if any.
    """

    findings: str
    impression: str
    sentences: list[dict[str, Any]] = field(default_factory=list)
    flags: dict[str, Any] = field(default_factory=dict)
    model_hash: str | None = None
    adapter_hash: str | None = None


def _to_job(rec: JobRecord) -> Job:
    return Job(id=rec.id, study_uid=rec.study_uid, model_version=rec.model_version, prompt_hash=rec.prompt_hash,
               attempts=rec.attempts, max_attempts=rec.max_attempts, lease_owner=rec.lease_owner,
               lease_expires_at=as_utc(rec.lease_expires_at))


def _audit(session: Session, actor: str, action: str, job_id: int, outcome: str = "ok", **kw: Any) -> Any:
    return append_event(session, actor=actor, action=action, object_type="job", object_id=str(job_id),
                        outcome=outcome, **kw)


def _job_filters(model_version: str | None, prompt_hash: str | None) -> list[Any]:
    filters = []
    if model_version is not None:
        filters.append(JobRecord.model_version == model_version)
    if prompt_hash is not None:
        filters.append(JobRecord.prompt_hash == prompt_hash)
    return filters


def _job_id(session: Session, study_uid: str, model_version: str, prompt_hash: str) -> int | None:
    return session.scalar(select(JobRecord.id).where(
        JobRecord.study_uid == study_uid, JobRecord.model_version == model_version,
        JobRecord.prompt_hash == prompt_hash))


def enqueue(store: Store, study_uid: str, model_version: str, prompt_hash: str, *, source: str = "unknown",
            priority: int = 0, max_attempts: int = 3, actor: str = "system") -> int:
    """Queue a drafting job; a second call with the same triple returns the same job id.

    The study row is created if needed. Race-safe: the UNIQUE (study_uid, model_version,
    prompt_hash) constraint with ``ON CONFLICT DO NOTHING`` lets exactly one insert win.

    Args:
        study_uid: the study to draft.
        model_version: the model version that will draft it.
        prompt_hash: hash of the prompt template.
        source: where the study came from (used when the study is new).
        priority: higher is claimed first.
        max_attempts: claims allowed before the job fails.
        actor: who queued it.

    Returns:
        The job id.

    Raises:
        JobError: ``max_attempts`` is below 1.
    """
    if max_attempts < 1:
        raise JobError(f"max_attempts must be >= 1, got {max_attempts}")
    with store.transaction() as session:
        existing = _job_id(session, study_uid, model_version, prompt_hash)
        if existing is not None:
            return int(existing)
        insert_study(store, session, study_uid, source=source, priority=priority, actor=actor)
        now = utcnow()
        stmt = (
            dialect_insert(store, JobRecord.__table__)
            .values(study_uid=study_uid, model_version=model_version, prompt_hash=prompt_hash, state="queued",
                    priority=priority, attempts=0, max_attempts=max_attempts, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=["study_uid", "model_version", "prompt_hash"])
            .returning(JobRecord.id)
        )
        job_id = session.execute(stmt).scalar_one_or_none()
        if job_id is None:  # another transaction inserted it between our SELECT and INSERT
            return int(_job_id(session, study_uid, model_version, prompt_hash))
        session.execute(StudyRecord.__table__.update()
                        .where(StudyRecord.study_uid == study_uid, StudyRecord.status == "received")
                        .values(status="queued"))
        _audit(session, actor, "job.enqueue", job_id, details={
            "model_version": model_version, "prompt_hash": prompt_hash, "study": store.pseudonym(study_uid)})
        return int(job_id)


def claim(store: Store, worker_id: str, lease_seconds: float, *, now: datetime | None = None,
          model_version: str | None = None, prompt_hash: str | None = None) -> Job | None:
    """Atomically lease one queued job, or one whose lease expired, to ``worker_id``.

    A job whose lease expired after its last allowed attempt is marked ``failed``
    (``lease_expired``) instead of being handed out again.

    Args:
        worker_id: a name unique to this worker process or thread.
        lease_seconds: how long the lease lasts; renew with ``renew_lease`` for long work.
        now: the current time (tests pass a later time to simulate expiry).
        model_version: only jobs of this model version (a worker must not draft other models' jobs).
        prompt_hash: only jobs of this prompt hash.

    Returns:
        The leased job, or None when nothing is claimable.

    Raises:
        JobError: ``lease_seconds`` is not positive.
    """
    if lease_seconds <= 0:
        raise JobError(f"lease_seconds must be > 0, got {lease_seconds}")
    now = as_utc(now) or utcnow()
    claimable = or_(JobRecord.state == "queued", and_(JobRecord.state == "leased", JobRecord.lease_expires_at < now))
    stmt = (
        select(JobRecord)
        .where(*_job_filters(model_version, prompt_hash), claimable)
        .order_by(JobRecord.priority.desc(), JobRecord.id)
        .limit(1)
        .with_for_update(skip_locked=True)  # SQLite renders no FOR UPDATE; BEGIN IMMEDIATE locks
    )
    with store.transaction() as session:
        while True:
            rec = session.scalars(stmt).first()
            if rec is None:
                return None
            previous_owner = rec.lease_owner if rec.state == "leased" else None
            if rec.attempts >= rec.max_attempts:
                rec.state, rec.error_code = "failed", "lease_expired"
                rec.error_message = f"lease expired after {rec.attempts} attempts"
                rec.lease_owner, rec.lease_expires_at, rec.updated_at, rec.finished_at = None, None, now, now
                set_study_status(session, rec.study_uid, "failed")
                _audit(session, worker_id, "job.fail", rec.id, "failed", details={"code": "lease_expired"})
                continue
            rec.state = "leased"
            rec.lease_owner = worker_id
            rec.lease_expires_at = now + timedelta(seconds=lease_seconds)
            rec.attempts += 1
            rec.updated_at = now
            session.flush()
            _audit(session, worker_id, "job.claim", rec.id,
                   details={"attempt": rec.attempts, "reclaimed": previous_owner is not None})
            return _to_job(rec)


def lock_job(session: Session, job_id: int, worker_id: str) -> tuple[JobRecord, bool]:
    """Lock a job's row inside an open transaction; also say whether ``worker_id`` holds its lease.

    Raises:
        JobError: no such job.
    """
    rec = session.get(JobRecord, job_id, with_for_update=True)
    if rec is None:
        raise JobError(f"no job with id {job_id}")
    return rec, rec.state == "leased" and rec.lease_owner == worker_id


def _refuse(session: Session, rec: JobRecord, worker_id: str, action: str) -> None:
    _audit(session, worker_id, action, rec.id, "refused", details={"reason": "lease_lost", "state": rec.state})


def complete(store: Store, job_id: int, worker_id: str, draft: DraftPayload) -> int:
    """Write the draft and mark the job done, in one transaction, if ``worker_id`` owns the lease.

    An expired lease that no other worker has taken still counts as owned: the work is done and
    nobody else is doing it.

    Args:
        draft: the drafter's output.

    Returns:
        The new draft's id.

    Raises:
        LeaseLostError: another worker holds the job now, or it is no longer leased; nothing is
            written except an audit event recording the refusal.
        JobError: no such job.
    """
    with store.transaction() as session:
        rec, owned = lock_job(session, job_id, worker_id)
        if owned:
            now = utcnow()
            row = DraftRecord(job_id=rec.id, findings=draft.findings, impression=draft.impression,
                              sentences=list(draft.sentences), flags=dict(draft.flags),
                              model_version=rec.model_version, created_at=now)
            session.add(row)
            rec.state, rec.lease_expires_at, rec.updated_at, rec.finished_at = "done", None, now, now
            rec.error_code = rec.error_message = None
            session.flush()
            set_study_status(session, rec.study_uid, "drafted")
            _audit(session, worker_id, "job.complete", rec.id,
                   details={"draft_id": row.id, "model_version": rec.model_version, "flags": sorted(draft.flags)},
                   model_hash=draft.model_hash, adapter_hash=draft.adapter_hash)
            return int(row.id)
        _refuse(session, rec, worker_id, "job.complete")
    raise LeaseLostError(f"job {job_id}: worker {worker_id} no longer holds the lease; result refused")


def fail(store: Store, job_id: int, worker_id: str, error_code: str, message: str = "", *,
         retry: bool = True) -> str:
    """Record a drafting error: re-queue while attempts remain (and ``retry``), else mark failed.

    Args:
        error_code: short machine-readable code (an exception class name).
        message: a sentence without PHI (truncated to 1000 characters).
        retry: False marks the job failed at once.

    Returns:
        The job's new state, ``queued`` or ``failed``.

    Raises:
        LeaseLostError: the worker no longer owns the lease.
    """
    with store.transaction() as session:
        rec, owned = lock_job(session, job_id, worker_id)
        if owned:
            now = utcnow()
            final = not retry or rec.attempts >= rec.max_attempts
            rec.state = "failed" if final else "queued"
            rec.error_code, rec.error_message = error_code[:64], message[:_MAX_MESSAGE]
            rec.lease_owner, rec.lease_expires_at, rec.updated_at = None, None, now
            if final:
                rec.finished_at = now
                set_study_status(session, rec.study_uid, "failed")
            _audit(session, worker_id, "job.fail", rec.id, "failed",
                   details={"code": error_code[:64], "attempt": rec.attempts, "requeued": not final})
            return rec.state
        _refuse(session, rec, worker_id, "job.fail")
    raise LeaseLostError(f"job {job_id}: worker {worker_id} no longer holds the lease")


def quarantine(store: Store, job_id: int, worker_id: str, reason_code: str, message: str = "") -> None:
    """Set the job and its study aside (bad input); they are not retried.

    Args:
        reason_code: typed reason (``not_chest``, ``unreadable_pixels``, ...).
        message: a sentence without PHI.

    Raises:
        LeaseLostError: the worker no longer owns the lease.
    """
    with store.transaction() as session:
        rec, owned = lock_job(session, job_id, worker_id)
        if owned:
            now = utcnow()
            reason = f"{reason_code}: {message}" if message else reason_code
            rec.state, rec.error_code, rec.error_message = "quarantined", reason_code[:64], message[:_MAX_MESSAGE]
            rec.lease_owner, rec.lease_expires_at, rec.updated_at, rec.finished_at = None, None, now, now
            set_study_status(session, rec.study_uid, "quarantined", reason[:512])
            _audit(session, worker_id, "job.quarantine", rec.id, "quarantined", details={"code": reason_code})
            return
        _refuse(session, rec, worker_id, "job.quarantine")
    raise LeaseLostError(f"job {job_id}: worker {worker_id} no longer holds the lease")


def pending_count(store: Store, *, model_version: str | None = None, prompt_hash: str | None = None) -> int:
    """Return the number of jobs still queued or leased (optionally of one model version / prompt)."""
    with store.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(JobRecord).where(
            *_job_filters(model_version, prompt_hash), JobRecord.state.in_(("queued", "leased")))))


def job_state(store: Store, study_uid: str, model_version: str, prompt_hash: str) -> tuple[int, str] | None:
    """Return ``(job id, state)`` of the job for this (study, model version, prompt), or None."""
    with store.transaction() as session:
        row = session.execute(select(JobRecord.id, JobRecord.state).where(
            JobRecord.study_uid == study_uid, JobRecord.model_version == model_version,
            JobRecord.prompt_hash == prompt_hash)).first()
    return (int(row[0]), str(row[1])) if row else None


def done_jobs_without_version(store: Store, *, model_version: str, prompt_hash: str) -> list[int]:
    """Ids of done jobs (of one model version and prompt) whose draft has no report version yet.

    A worker may die between ``complete`` and creating the draft's review version; these are the
    jobs to finish (`pipelines.store.reviews.create_version_from_draft`).
    """
    with store.transaction() as session:
        return [int(i) for i in session.scalars(
            select(JobRecord.id).join(DraftRecord, DraftRecord.job_id == JobRecord.id)
            .outerjoin(ReportVersion, ReportVersion.draft_id == DraftRecord.id)
            .where(JobRecord.model_version == model_version, JobRecord.prompt_hash == prompt_hash,
                   ReportVersion.id.is_(None))).all()]


def count_by_state(store: Store) -> dict[str, int]:
    """Return ``{state: number of jobs}``."""
    with store.transaction() as session:
        rows = session.execute(select(JobRecord.state, func.count()).group_by(JobRecord.state)).all()
    return {state: int(n) for state, n in rows}
