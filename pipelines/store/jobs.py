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

Atomic claim: PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite holds the database write
lock from ``BEGIN IMMEDIATE`` (see ``pipelines.store.db``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from compliance.audit import append_event
from compliance.clock import as_utc
from pipelines.errors import PipelineError
from pipelines.store.db import Store
from pipelines.store.models import DraftRecord, JobRecord, StudyRecord, utcnow

_MAX_MESSAGE = 1000


class JobError(PipelineError, RuntimeError):
    """A job operation cannot be done (unknown job id, bad arguments)."""


class LeaseLostError(JobError):
    """The worker no longer owns the job's lease (it expired and another worker took the job, or
    the job is finished); its result is refused."""


class QuarantineError(PipelineError):
    """Raised by a drafter for bad input: the study goes to quarantine instead of being retried.

    Args:
        code: a short machine-readable reason (``not_chest``, ``unreadable_pixels``, ...).
        message: a sentence without PHI.
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Job:
    """A claimed job, detached from the database.

    Attributes:
        id: job id.
        study_uid: the study to draft.
        model_version: model version that must draft it.
        prompt_hash: hash of the prompt template.
        attempts: claims so far, this one included.
        max_attempts: claims allowed before the job fails.
        lease_owner: the worker holding the lease.
        lease_expires_at: when the lease runs out (UTC).
    """

    id: int
    study_uid: str
    model_version: str
    prompt_hash: str
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None


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


@dataclass
class WorkerStats:
    """Counts kept by ``run_worker``.

    Attributes:
        claimed: jobs claimed.
        done: jobs completed with a draft.
        failed: drafter errors (re-queued or failed for good).
        quarantined: jobs quarantined.
        lost: results refused because the lease was lost.
    """

    claimed: int = 0
    done: int = 0
    failed: int = 0
    quarantined: int = 0
    lost: int = 0



def _to_job(rec: JobRecord) -> Job:
    return Job(
        id=rec.id,
        study_uid=rec.study_uid,
        model_version=rec.model_version,
        prompt_hash=rec.prompt_hash,
        attempts=rec.attempts,
        max_attempts=rec.max_attempts,
        lease_owner=rec.lease_owner,
        lease_expires_at=as_utc(rec.lease_expires_at),
    )


def _insert(store: Store, table: Any) -> Any:
    return (postgresql.insert if store.dialect == "postgresql" else sqlite.insert)(table)


def _audit(
    store: Store, session: Session, actor: str, action: str, job_id: int, outcome: str = "ok", **kw: Any
):
    return append_event(
        session, actor=actor, action=action, object_type="job", object_id=str(job_id), outcome=outcome, **kw
    )


def add_study(
    store: Store,
    study_uid: str,
    *,
    source: str,
    priority: int = 0,
    metadata: dict[str, Any] | None = None,
    actor: str = "system",
) -> bool:
    """Record a study (idempotent: an existing study is left as it is).

    Args:
        store: the open store.
        study_uid: the study's UID.
        source: where it came from (a folder path or a PACS name).
        priority: higher is drafted first.
        metadata: non-identifying facts (view, modality); never PHI.
        actor: who registers it.

    Returns:
        True when the study was new.
    """
    with store.transaction() as session:
        return _add_study(store, session, study_uid, source, priority, metadata, actor)


def _add_study(store, session, study_uid, source, priority, metadata, actor) -> bool:  # noqa: ANN001
    stmt = (
        _insert(store, StudyRecord.__table__)
        .values(
            study_uid=study_uid,
            source=source,
            status="received",
            priority=priority,
            received_at=utcnow(),
            metadata=metadata or {},
        )
        .on_conflict_do_nothing(index_elements=["study_uid"])
        .returning(StudyRecord.id)
    )
    created = session.execute(stmt).scalar_one_or_none() is not None
    if created:
        append_event(
            session,
            actor=actor,
            action="study.add",
            object_type="study",
            object_id=store.pseudonym(study_uid),
            details={"priority": priority},
        )
    return created


def enqueue(
    store: Store,
    study_uid: str,
    model_version: str,
    prompt_hash: str,
    *,
    source: str = "unknown",
    priority: int = 0,
    max_attempts: int = 3,
    actor: str = "system",
) -> int:
    """Queue a drafting job; a second call with the same triple returns the same job id.

    The study row is created if needed. Race-safe: the UNIQUE (study_uid, model_version,
    prompt_hash) constraint with ``ON CONFLICT DO NOTHING`` lets exactly one insert win.

    Args:
        store: the open store.
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
        existing = session.scalar(
            select(JobRecord.id).where(
                JobRecord.study_uid == study_uid,
                JobRecord.model_version == model_version,
                JobRecord.prompt_hash == prompt_hash,
            )
        )
        if existing is not None:
            return int(existing)
        _add_study(store, session, study_uid, source, priority, None, actor)
        now = utcnow()
        stmt = (
            _insert(store, JobRecord.__table__)
            .values(
                study_uid=study_uid,
                model_version=model_version,
                prompt_hash=prompt_hash,
                state="queued",
                priority=priority,
                attempts=0,
                max_attempts=max_attempts,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["study_uid", "model_version", "prompt_hash"])
            .returning(JobRecord.id)
        )
        job_id = session.execute(stmt).scalar_one_or_none()
        if job_id is None:  # another transaction inserted it between our SELECT and INSERT
            return int(
                session.scalar(
                    select(JobRecord.id).where(
                        JobRecord.study_uid == study_uid,
                        JobRecord.model_version == model_version,
                        JobRecord.prompt_hash == prompt_hash,
                    )
                )
            )
        session.execute(
            StudyRecord.__table__.update()
            .where(StudyRecord.study_uid == study_uid, StudyRecord.status == "received")
            .values(status="queued")
        )
        _audit(
            store,
            session,
            actor,
            "job.enqueue",
            job_id,
            details={
                "model_version": model_version,
                "prompt_hash": prompt_hash,
                "study": store.pseudonym(study_uid),
            },
        )
        return int(job_id)


def claim(
    store: Store,
    worker_id: str,
    lease_seconds: float,
    *,
    now: datetime | None = None,
    model_version: str | None = None,
    prompt_hash: str | None = None,
) -> Job | None:
    """Atomically lease one queued job, or one whose lease expired, to ``worker_id``.

    A job whose lease expired after its last allowed attempt is marked ``failed``
    (``lease_expired``) instead of being handed out again.

    Args:
        store: the open store.
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
    filters = _job_filters(model_version, prompt_hash)
    with store.transaction() as session:
        while True:
            stmt = (
                select(JobRecord)
                .where(
                    *filters,
                    or_(
                        JobRecord.state == "queued",
                        and_(JobRecord.state == "leased", JobRecord.lease_expires_at < now),
                    ),
                )
                .order_by(JobRecord.priority.desc(), JobRecord.id)
                .limit(1)
                .with_for_update(skip_locked=True)  # SQLite renders no FOR UPDATE; BEGIN IMMEDIATE locks
            )
            rec = session.scalars(stmt).first()
            if rec is None:
                return None
            previous_owner = rec.lease_owner if rec.state == "leased" else None
            if rec.attempts >= rec.max_attempts:
                rec.state, rec.error_code = "failed", "lease_expired"
                rec.error_message = f"lease expired after {rec.attempts} attempts"
                rec.lease_owner, rec.lease_expires_at, rec.updated_at, rec.finished_at = None, None, now, now
                _set_study_status(session, rec.study_uid, "failed")
                _audit(
                    store, session, worker_id, "job.fail", rec.id, "failed", details={"code": "lease_expired"}
                )
                continue
            rec.state = "leased"
            rec.lease_owner = worker_id
            rec.lease_expires_at = now + timedelta(seconds=lease_seconds)
            rec.attempts += 1
            rec.updated_at = now
            session.flush()
            _audit(
                store,
                session,
                worker_id,
                "job.claim",
                rec.id,
                details={"attempt": rec.attempts, "reclaimed": previous_owner is not None},
            )
            return _to_job(rec)


def _job_filters(model_version: str | None, prompt_hash: str | None) -> list[Any]:
    filters = []
    if model_version is not None:
        filters.append(JobRecord.model_version == model_version)
    if prompt_hash is not None:
        filters.append(JobRecord.prompt_hash == prompt_hash)
    return filters


def _set_study_status(session: Session, study_uid: str, status: str, reason: str | None = None) -> None:
    values: dict[str, Any] = {"status": status}
    if reason is not None:
        values["quarantine_reason"] = reason
    session.execute(StudyRecord.__table__.update().where(StudyRecord.study_uid == study_uid).values(**values))


def _owned(session: Session, job_id: int, worker_id: str) -> tuple[JobRecord, bool]:
    rec = session.get(JobRecord, job_id, with_for_update=True)
    if rec is None:
        raise JobError(f"no job with id {job_id}")
    return rec, rec.state == "leased" and rec.lease_owner == worker_id


def _refuse(store: Store, session: Session, rec: JobRecord, worker_id: str, action: str) -> None:
    _audit(
        store,
        session,
        worker_id,
        action,
        rec.id,
        "refused",
        details={"reason": "lease_lost", "state": rec.state},
    )


def complete(store: Store, job_id: int, worker_id: str, draft: DraftPayload) -> int:
    """Write the draft and mark the job done, in one transaction, if ``worker_id`` owns the lease.

    An expired lease that no other worker has taken still counts as owned: the work is done and
    nobody else is doing it.

    Args:
        store: the open store.
        job_id: the job.
        worker_id: the worker that claimed it.
        draft: the drafter's output.

    Returns:
        The new draft's id.

    Raises:
        LeaseLostError: another worker holds the job now, or it is no longer leased; nothing is
            written except an audit event recording the refusal.
        JobError: no such job.
    """
    with store.transaction() as session:
        rec, owned = _owned(session, job_id, worker_id)
        if owned:
            now = utcnow()
            row = DraftRecord(
                job_id=rec.id,
                findings=draft.findings,
                impression=draft.impression,
                sentences=list(draft.sentences),
                flags=dict(draft.flags),
                model_version=rec.model_version,
                created_at=now,
            )
            session.add(row)
            rec.state, rec.lease_expires_at, rec.updated_at, rec.finished_at = "done", None, now, now
            rec.error_code = rec.error_message = None
            session.flush()
            _set_study_status(session, rec.study_uid, "drafted")
            _audit(
                store,
                session,
                worker_id,
                "job.complete",
                rec.id,
                details={
                    "draft_id": row.id,
                    "model_version": rec.model_version,
                    "flags": sorted(draft.flags),
                },
                model_hash=draft.model_hash,
                adapter_hash=draft.adapter_hash,
            )
            return int(row.id)
        _refuse(store, session, rec, worker_id, "job.complete")
    raise LeaseLostError(f"job {job_id}: worker {worker_id} no longer holds the lease; result refused")


def fail(
    store: Store, job_id: int, worker_id: str, error_code: str, message: str = "", *, retry: bool = True
) -> str:
    """Record a drafting error: re-queue while attempts remain (and ``retry``), else mark failed.

    Args:
        store: the open store.
        job_id: the job.
        worker_id: the worker that claimed it.
        error_code: short machine-readable code (an exception class name).
        message: a sentence without PHI (truncated to 1000 characters).
        retry: False marks the job failed at once.

    Returns:
        The job's new state, ``queued`` or ``failed``.

    Raises:
        LeaseLostError: the worker no longer owns the lease.
    """
    with store.transaction() as session:
        rec, owned = _owned(session, job_id, worker_id)
        if owned:
            now = utcnow()
            final = not retry or rec.attempts >= rec.max_attempts
            rec.state = "failed" if final else "queued"
            rec.error_code, rec.error_message = error_code[:64], message[:_MAX_MESSAGE]
            rec.lease_owner, rec.lease_expires_at, rec.updated_at = None, None, now
            if final:
                rec.finished_at = now
                _set_study_status(session, rec.study_uid, "failed")
            _audit(
                store,
                session,
                worker_id,
                "job.fail",
                rec.id,
                "failed",
                details={"code": error_code[:64], "attempt": rec.attempts, "requeued": not final},
            )
            return rec.state
        _refuse(store, session, rec, worker_id, "job.fail")
    raise LeaseLostError(f"job {job_id}: worker {worker_id} no longer holds the lease")


def quarantine(store: Store, job_id: int, worker_id: str, reason_code: str, message: str = "") -> None:
    """Set the job and its study aside (bad input); they are not retried.

    Args:
        store: the open store.
        job_id: the job.
        worker_id: the worker that claimed it.
        reason_code: typed reason (``not_chest``, ``unreadable_pixels``, ...).
        message: a sentence without PHI.

    Raises:
        LeaseLostError: the worker no longer owns the lease.
    """
    with store.transaction() as session:
        rec, owned = _owned(session, job_id, worker_id)
        if owned:
            now = utcnow()
            reason = f"{reason_code}: {message}" if message else reason_code
            rec.state, rec.error_code, rec.error_message = (
                "quarantined",
                reason_code[:64],
                message[:_MAX_MESSAGE],
            )
            rec.lease_owner, rec.lease_expires_at, rec.updated_at, rec.finished_at = None, None, now, now
            _set_study_status(session, rec.study_uid, "quarantined", reason[:512])
            _audit(
                store,
                session,
                worker_id,
                "job.quarantine",
                rec.id,
                "quarantined",
                details={"code": reason_code},
            )
            return
        _refuse(store, session, rec, worker_id, "job.quarantine")
    raise LeaseLostError(f"job {job_id}: worker {worker_id} no longer holds the lease")


def renew_lease(store: Store, job_id: int, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease by ``lease_seconds`` from now if ``worker_id`` still owns it.

    Returns:
        True when renewed, False when the lease was lost.
    """
    with store.transaction() as session:
        rec, owned = _owned(session, job_id, worker_id)
        if not owned:
            return False
        now = utcnow()
        rec.lease_expires_at, rec.updated_at = now + timedelta(seconds=lease_seconds), now
        _audit(store, session, worker_id, "job.renew", rec.id, details={"lease_seconds": lease_seconds})
        return True


def get_job(store: Store, job_id: int) -> JobRecord | None:
    """Return the job row (detached; read-only use)."""
    with store.transaction() as session:
        return session.get(JobRecord, job_id)


def pending_count(store: Store, *, model_version: str | None = None, prompt_hash: str | None = None) -> int:
    """Return the number of jobs still queued or leased (optionally of one model version / prompt)."""
    filters = _job_filters(model_version, prompt_hash)
    with store.transaction() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(JobRecord)
                .where(*filters, JobRecord.state.in_(("queued", "leased")))
            )
        )


def job_state(store: Store, study_uid: str, model_version: str, prompt_hash: str) -> tuple[int, str] | None:
    """Return ``(job id, state)`` of the job for this (study, model version, prompt), or None."""
    with store.transaction() as session:
        row = session.execute(
            select(JobRecord.id, JobRecord.state).where(
                JobRecord.study_uid == study_uid,
                JobRecord.model_version == model_version,
                JobRecord.prompt_hash == prompt_hash,
            )
        ).first()
    return (int(row[0]), str(row[1])) if row else None


def quarantine_study(
    store: Store,
    study_uid: str,
    code: str,
    message: str = "",
    *,
    source: str,
    metadata: dict[str, Any] | None = None,
    actor: str = "system",
) -> None:
    """Record a study as quarantined before any job exists (bad input found at intake).

    The study row is created if needed (``add_study``); its status becomes ``quarantined`` with the
    reason, and its metadata is replaced by ``metadata`` when given. One ``study.quarantine`` audit
    event is written in the same transaction.

    Args:
        store: the open store.
        study_uid: the study's UID.
        code: short machine-readable reason (``no_frontal_view``, ``not_chest``, ...).
        message: a sentence without PHI.
        source: where it came from (used when the study is new).
        metadata: non-identifying facts to record (None keeps what is stored).
        actor: who quarantines it.
    """
    reason = f"{code}: {message}" if message else code
    values: dict[str, Any] = {"status": "quarantined", "quarantine_reason": reason[:512]}
    if metadata is not None:
        values["metadata"] = metadata
    with store.transaction() as session:
        _add_study(store, session, study_uid, source, 0, metadata, actor)
        session.execute(StudyRecord.__table__.update().where(StudyRecord.study_uid == study_uid).values(**values))
        append_event(
            session,
            actor=actor,
            action="study.quarantine",
            object_type="study",
            object_id=store.pseudonym(study_uid),
            outcome="quarantined",
            details={"code": code[:64]},
        )


def set_study_metadata(
    store: Store, study_uid: str, metadata: dict[str, Any], *, reset_status: bool = False
) -> None:
    """Replace a study's metadata (non-identifying facts; never PHI).

    Args:
        store: the open store.
        study_uid: the study's UID (an unknown study is left unknown).
        metadata: the new metadata.
        reset_status: also mark the study ``received`` and clear its quarantine reason (a study
            re-checked and found usable).
    """
    values: dict[str, Any] = {"metadata": metadata}
    if reset_status:
        values.update(status="received", quarantine_reason=None)
    with store.transaction() as session:
        session.execute(StudyRecord.__table__.update().where(StudyRecord.study_uid == study_uid).values(**values))


def get_study_metadata(store: Store, study_uid: str) -> dict[str, Any]:
    """Return the metadata recorded for a study (``{}`` when the study is unknown)."""
    with store.transaction() as session:
        meta = session.scalar(select(StudyRecord.metadata_json).where(StudyRecord.study_uid == study_uid))
    return dict(meta or {})


def count_by_state(store: Store) -> dict[str, int]:
    """Return ``{state: number of jobs}``."""
    with store.transaction() as session:
        rows = session.execute(select(JobRecord.state, func.count()).group_by(JobRecord.state)).all()
    return {state: int(n) for state, n in rows}


class LeaseKeeper:
    """Renews the leases of claimed jobs in a background thread while they are worked on outside
    any transaction (a context manager).

    Every ``lease_seconds / 3`` each lease still held is renewed with ``renew_lease``; a job whose
    lease was lost is dropped (its result will be refused by ``complete``), and the thread ends once
    none is left. A renewal that raises (a database hiccup) is tried again at the next tick: a
    missed renewal only risks a second draft, which ``complete`` refuses.

    Args:
        store: the open store.
        job_ids: the jobs whose leases ``worker_id`` holds.
        worker_id: the lease owner.
        lease_seconds: lease length given at each renewal.
    """

    def __init__(self, store: Store, job_ids: list[int], worker_id: str, lease_seconds: float) -> None:
        if lease_seconds <= 0:
            raise JobError(f"lease_seconds must be > 0, got {lease_seconds}")
        self._store, self._worker_id, self._lease_seconds = store, worker_id, lease_seconds
        self._job_ids = list(job_ids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-keeper-{worker_id}", daemon=True)

    def _run(self) -> None:
        held = list(self._job_ids)
        while held and not self._stop.wait(self._lease_seconds / 3):
            for job_id in list(held):
                try:
                    if not renew_lease(self._store, job_id, self._worker_id, self._lease_seconds):
                        held.remove(job_id)
                except Exception:  # noqa: BLE001, S112 - retried at the next tick
                    continue

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_worker(
    store: Store,
    drafter: Callable[[Job], DraftPayload],
    worker_id: str,
    *,
    lease_seconds: float,
    stop_when_empty: bool = True,
    on_progress: Callable[[Job, str], None] | None = None,
    poll_seconds: float = 0.5,
    heartbeat: bool = True,
    max_jobs: int | None = None,
    stop: threading.Event | None = None,
) -> WorkerStats:
    """Claim jobs and draft them until the queue is empty (or ``stop`` is set).

    Each job: ``claim`` (a short transaction) → ``drafter(job)`` outside any transaction, the lease
    renewed in the background when ``heartbeat`` → ``complete`` (or ``quarantine`` on
    ``QuarantineError``, ``fail`` on any other exception). Bad input never stops the loop.

    Args:
        store: the open store.
        drafter: turns a job into a ``DraftPayload``; raises ``QuarantineError`` for bad input.
        worker_id: unique name of this worker.
        lease_seconds: lease length per claim.
        stop_when_empty: return once no job is queued or leased; otherwise poll forever.
        on_progress: called with (job, outcome) after each job; outcome is ``done``,
            ``failed``, ``quarantined`` or ``lost``.
        poll_seconds: wait between claims when nothing is claimable but work is pending.
        heartbeat: renew the lease every ``lease_seconds / 3`` while drafting.
        max_jobs: stop after this many claims.
        stop: set it from another thread to stop after the current job.

    Returns:
        Counts of what happened.
    """
    stats = WorkerStats()
    while not (stop is not None and stop.is_set()):
        if max_jobs is not None and stats.claimed >= max_jobs:
            break
        job = claim(store, worker_id, lease_seconds)
        if job is None:
            if stop_when_empty and pending_count(store) == 0:
                break
            time.sleep(poll_seconds)
            continue
        stats.claimed += 1
        outcome = _run_one(store, drafter, job, worker_id, lease_seconds, heartbeat)
        setattr(stats, outcome, getattr(stats, outcome) + 1)
        if on_progress is not None:
            on_progress(job, outcome)
    return stats


def _run_one(
    store: Store,
    drafter: Callable[[Job], DraftPayload],
    job: Job,
    worker_id: str,
    lease_seconds: float,
    heartbeat: bool,
) -> str:
    try:
        if heartbeat:
            with LeaseKeeper(store, [job.id], worker_id, lease_seconds):
                payload = drafter(job)
        else:
            payload = drafter(job)
    except QuarantineError as exc:
        try:
            quarantine(store, job.id, worker_id, exc.code, exc.message)
        except LeaseLostError:
            return "lost"
        return "quarantined"
    except Exception as exc:  # noqa: BLE001 - any drafter error is recorded, the batch goes on
        try:
            fail(store, job.id, worker_id, type(exc).__name__, str(exc))
        except LeaseLostError:
            return "lost"
        return "failed"
    try:
        complete(store, job.id, worker_id, payload)
    except LeaseLostError:
        return "lost"
    return "done"
