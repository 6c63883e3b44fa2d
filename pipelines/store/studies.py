"""Studies in the review store: recording them, quarantining them, their metadata, their outcomes.

A study row is keyed on its Study Instance UID and carries only non-identifying facts (accepted file
paths, views, the model inputs, rejected files by reason); it is created idempotently
(``INSERT ... ON CONFLICT DO NOTHING``) by intake (``add_study``, ``quarantine_study``) or by
``pipelines.store.jobs.enqueue``. Its status follows its jobs (``received`` → ``queued`` →
``drafted`` / ``quarantined`` / ``failed``). Every change that matters appends an audit event in
the same transaction, under the study's pseudonym.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from compliance.audit import append_event
from pipelines.store.db import Store
from pipelines.store.models import JobRecord, StudyRecord, utcnow


def dialect_insert(store: Store, table: Any) -> Any:
    """An ``INSERT`` of the store's dialect (both have ``on_conflict_do_nothing``)."""
    return (postgresql.insert if store.dialect == "postgresql" else sqlite.insert)(table)


def insert_study(
    store: Store, session: Session, study_uid: str, *, source: str, priority: int = 0,
    metadata: dict[str, Any] | None = None, actor: str = "system",
) -> bool:
    """`add_study` inside an open transaction (``enqueue`` records the study with its job).

    Returns:
        True when the study was new.
    """
    stmt = (
        dialect_insert(store, StudyRecord.__table__)
        .values(study_uid=study_uid, source=source, status="received", priority=priority,
                received_at=utcnow(), metadata=metadata or {})
        .on_conflict_do_nothing(index_elements=["study_uid"])
        .returning(StudyRecord.id)
    )
    created = session.execute(stmt).scalar_one_or_none() is not None
    if created:
        append_event(session, actor=actor, action="study.add", object_type="study",
                     object_id=store.pseudonym(study_uid), details={"priority": priority})
    return created


def set_study_status(session: Session, study_uid: str, status: str, reason: str | None = None) -> None:
    """Set a study's status (and quarantine reason) inside an open transaction (job state changes)."""
    values: dict[str, Any] = {"status": status}
    if reason is not None:
        values["quarantine_reason"] = reason
    session.execute(StudyRecord.__table__.update().where(StudyRecord.study_uid == study_uid).values(**values))


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
        return insert_study(store, session, study_uid, source=source, priority=priority, metadata=metadata,
                            actor=actor)


def has_study(store: Store, study_uid: str) -> bool:
    """Return whether the store knows the study."""
    with store.transaction() as session:
        return session.scalar(select(StudyRecord.id).where(StudyRecord.study_uid == study_uid)) is not None


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
        insert_study(store, session, study_uid, source=source, metadata=metadata, actor=actor)
        session.execute(StudyRecord.__table__.update().where(StudyRecord.study_uid == study_uid).values(**values))
        append_event(session, actor=actor, action="study.quarantine", object_type="study",
                     object_id=store.pseudonym(study_uid), outcome="quarantined", details={"code": code[:64]})


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


@dataclass
class StudyOutcomes:
    """Where the jobs of some studies (one model version and prompt) stand."""

    done: int = 0
    """Studies with a draft."""
    quarantined: Counter = field(default_factory=Counter)
    """Studies set aside by a worker, by reason code."""
    failed: Counter = field(default_factory=Counter)
    """Studies whose job failed for good, by error code."""
    pending: int = 0
    """Studies whose job is still queued or leased."""


def outcome_counts(store: Store, study_uids: Iterable[str], *, model_version: str,
                   prompt_hash: str) -> StudyOutcomes:
    """Count the job outcomes of `study_uids` for one model version and prompt.

    Args:
        store: the open store.
        study_uids: the studies of interest (others are ignored; a study without a job counts nowhere).
        model_version: the model version of the jobs.
        prompt_hash: the prompt hash of the jobs.

    Returns:
        The counts.
    """
    wanted = set(study_uids)
    with store.transaction() as session:
        rows = session.execute(select(JobRecord.study_uid, JobRecord.state, JobRecord.error_code).where(
            JobRecord.model_version == model_version, JobRecord.prompt_hash == prompt_hash)).all()
    out = StudyOutcomes()
    for uid, state, code in rows:
        if uid not in wanted:
            continue
        if state == "done":
            out.done += 1
        elif state == "quarantined":
            out.quarantined[code or "unknown"] += 1
        elif state == "failed":
            out.failed[code or "unknown"] += 1
        else:
            out.pending += 1
    return out
