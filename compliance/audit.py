"""Append-only, hash-chained audit log kept in the same database as the state it records.

Every audited state change calls ``append_event(session, ...)`` inside the transaction that makes
the change, so the event and the change commit (or roll back) together.

Chain. Each event carries ``seq`` (1, 2, 3, ... with no gap, assigned under a lock on the head
row), ``prev_hash`` (the previous event's ``entry_hash``; 64 zeros for the first) and
``entry_hash = sha256(canonical JSON of the event's fields, prev_hash included)``. Editing an
event changes its hash; deleting or reordering events breaks the ``prev_hash`` links or the
``seq`` run; ``verify_chain`` names the first event that breaks.

Anchor. The single row of ``audit_head`` holds the event count and the last ``entry_hash``,
updated in the same transaction as each append; cutting events off the tail leaves the chain
itself consistent but no longer matching the head, and ``verify_chain`` reports it. Someone able
to rewrite both the table and the head can forge a consistent log: export ``chain_head`` to a
place outside the database (a signed log line, a ticket) to anchor it beyond that.

Append-only in the database. ``audit_guard_ddl`` returns the triggers that make the database
refuse UPDATE and DELETE on ``audit_events`` (SQLite ``RAISE(ABORT, ...)``; PostgreSQL a trigger
function raising an exception, also refusing TRUNCATE); the store's migration installs them.

PHI. ``object_id`` is pseudonymous: callers pass identifiers of patients' data (study UIDs)
through ``pseudonymize`` (HMAC-SHA256 with a key kept by the caller). ``details`` must hold no
PHI; ``append_event`` refuses strings that look like DICOM UIDs or person names
(``AuditPHIError``, naming the key path, never the value).

This module may use SQLAlchemy but no medvlm package (imports go one way, STYLE rule 1).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from compliance.clock import as_utc
from compliance.phi import has_person_name, is_dicom_uid

GENESIS_HASH = "0" * 64
HEAD_ROW_ID = 1
READ_ACTION = "audit.read"

# The schema is data, not a client: the store copies these tables into its own metadata
# (``Table.to_metadata``) so one Alembic migration and one ``compare_metadata`` cover everything.
AUDIT_METADATA = MetaData()

audit_events = Table(
    "audit_events",
    AUDIT_METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("seq", Integer, nullable=False, unique=True),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("object_type", String(64), nullable=False),
    Column("object_id", String(128), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("details", JSON, nullable=False),
    Column("model_hash", String(128), nullable=True),
    Column("adapter_hash", String(128), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False, unique=True),
)

audit_head = Table(
    "audit_head",
    AUDIT_METADATA,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("event_count", Integer, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("pseudonym_salt", String(64), nullable=False),
)


class AuditError(RuntimeError):
    """The audit log cannot record or read what was asked (missing head row, bad arguments)."""


class AuditPHIError(AuditError):
    """Audit details hold a value that looks like patient data (a DICOM UID or a person name)."""


@dataclass(frozen=True)
class AuditEvent:
    """One event of the audit log as read back.

    Attributes:
        seq: position in the chain, 1-based, no gaps.
        timestamp: when the event was appended (UTC).
        actor: who did it (a user name or a worker id; never a patient).
        action: what was done, dotted (``job.claim``, ``version.sign``, ``audit.read``).
        object_type: the kind of object acted on (``study``, ``job``, ``report_version``).
        object_id: the object's id; pseudonymous for patient data (see ``pseudonymize``).
        outcome: ``ok``, ``refused``, ``failed`` or ``quarantined``.
        details: JSON-able mapping without PHI.
        model_hash: hash of the model weights involved, if any.
        adapter_hash: hash of the LoRA adapter involved, if any.
        prev_hash: ``entry_hash`` of the previous event (64 zeros for the first).
        entry_hash: sha256 over the canonical JSON of the fields above.
    """

    seq: int
    timestamp: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    outcome: str
    details: dict[str, Any]
    model_hash: str | None
    adapter_hash: str | None
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify_chain`` found.

    Attributes:
        ok: True when every event links and hashes correctly and the head matches.
        checked: how many events were read.
        broken_at: ``seq`` of the first event that breaks the chain (for a truncated tail: the
            first missing ``seq``); None when ``ok``.
        reason: a sentence saying what broke; None when ``ok``.
        head_count: the event count recorded in the head row.
        head_hash: the last hash recorded in the head row.
    """

    ok: bool
    checked: int
    broken_at: int | None
    reason: str | None
    head_count: int
    head_hash: str


def pseudonymize(value: str, key: bytes | str) -> str:
    """Return a stable pseudonym for an identifier of patient data.

    Args:
        value: the identifier, e.g. a study UID.
        key: the HMAC key; whoever holds it can re-link pseudonyms, nobody else can.

    Returns:
        ``"h:"`` followed by 32 hex digits of HMAC-SHA256(key, value).
    """
    raw_key = key.encode() if isinstance(key, str) else key
    return "h:" + hmac.new(raw_key, value.encode(), hashlib.sha256).hexdigest()[:32]



def _canonical(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_entry_hash(
    *,
    seq: int,
    timestamp: datetime,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    outcome: str,
    details: Mapping[str, Any],
    model_hash: str | None,
    adapter_hash: str | None,
    prev_hash: str,
) -> str:
    """Return the sha256 hex digest of the canonical JSON of one event's fields plus ``prev_hash``."""
    fields = {
        "seq": seq,
        "timestamp": as_utc(timestamp).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "outcome": outcome,
        "details": details,
        "model_hash": model_hash,
        "adapter_hash": adapter_hash,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(_canonical(fields)).hexdigest()


def _check_no_phi(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise AuditError(f"audit details keys must be strings (at {path})")
            _check_no_phi(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_no_phi(v, f"{path}[{i}]")
    elif isinstance(value, str):
        if is_dicom_uid(value) or has_person_name(value):
            raise AuditPHIError(
                f"audit details at {path} look like a DICOM UID or person name; pass a pseudonym instead"
            )
    elif value is not None and not isinstance(value, bool | int | float):
        raise AuditError(f"audit details at {path} are not JSON-able ({type(value).__name__})")


def _lock_head(session: Session) -> Any:
    stmt = select(audit_head).where(audit_head.c.id == HEAD_ROW_ID)
    if session.get_bind().dialect.name != "sqlite":  # SQLite already holds the write lock (BEGIN IMMEDIATE)
        stmt = stmt.with_for_update()
    row = session.execute(stmt).one_or_none()
    if row is None:
        raise AuditError("audit_head row missing: run the store migrations (upgrade_database)")
    return row


def append_event(
    session: Session,
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    outcome: str = "ok",
    details: Mapping[str, Any] | None = None,
    model_hash: str | None = None,
    adapter_hash: str | None = None,
    now: datetime | None = None,
) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction.

    Call it in the same transaction as the state change it records; the head row is locked
    (PostgreSQL ``FOR UPDATE``) until that transaction ends, so concurrent appends serialize.

    Args:
        session: an open session in a transaction that will be committed by the caller.
        actor: who did it.
        action: what was done (dotted name).
        object_type: kind of object.
        object_id: the object's id, already pseudonymous for patient data.
        outcome: ``ok``, ``refused``, ``failed`` or ``quarantined``.
        details: JSON-able mapping without PHI.
        model_hash: hash of the model weights involved.
        adapter_hash: hash of the adapter involved.
        now: the timestamp to record (UTC); defaults to the current time.

    Returns:
        The event as written.

    Raises:
        AuditPHIError: ``details`` (or ``object_id``) holds a DICOM UID or person name.
        AuditError: the head row is missing or details are not JSON-able.
    """
    details = dict(details or {})
    _check_no_phi(details, "details")
    _check_no_phi(object_id, "object_id")
    head = _lock_head(session)
    seq = head.event_count + 1
    ts = as_utc(now or datetime.now(UTC))
    fields = dict(
        seq=seq,
        timestamp=ts,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        outcome=outcome,
        details=details,
        model_hash=model_hash,
        adapter_hash=adapter_hash,
        prev_hash=head.last_hash,
    )
    entry_hash = compute_entry_hash(**fields)
    session.execute(insert(audit_events).values(**fields, entry_hash=entry_hash))
    session.execute(
        update(audit_head).where(audit_head.c.id == HEAD_ROW_ID).values(event_count=seq, last_hash=entry_hash)
    )
    return AuditEvent(**fields, entry_hash=entry_hash)


def chain_head(session: Session) -> tuple[int, str]:
    """Return ``(event_count, last_hash)`` from the head row: the value to anchor externally."""
    row = session.execute(select(audit_head).where(audit_head.c.id == HEAD_ROW_ID)).one_or_none()
    if row is None:
        raise AuditError("audit_head row missing: run the store migrations (upgrade_database)")
    return int(row.event_count), str(row.last_hash)


def pseudonym_salt(session: Session) -> str:
    """Return the database's random pseudonym key (used when no key is configured outside it)."""
    row = session.execute(
        select(audit_head.c.pseudonym_salt).where(audit_head.c.id == HEAD_ROW_ID)
    ).one_or_none()
    if row is None:
        raise AuditError("audit_head row missing: run the store migrations (upgrade_database)")
    return str(row[0])


def _to_event(row: Any) -> AuditEvent:
    return AuditEvent(
        seq=int(row.seq),
        timestamp=as_utc(row.timestamp),
        actor=row.actor,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        outcome=row.outcome,
        details=dict(row.details or {}),
        model_hash=row.model_hash,
        adapter_hash=row.adapter_hash,
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
    )


def verify_chain(session: Session) -> VerifyResult:
    """Re-hash every event in ``seq`` order and check the links and the head anchor.

    Detects an edited event (its hash no longer matches), a deleted or reordered one (a ``seq``
    gap or a ``prev_hash`` that does not match the event before) and a truncated tail (the head
    records more events, or another last hash, than the table holds).

    Args:
        session: an open session; nothing is written.

    Returns:
        A ``VerifyResult`` naming the first broken event, if any.
    """
    head_count, head_hash = chain_head(session)
    rows = session.execute(select(audit_events).order_by(audit_events.c.id)).all()
    prev_hash = GENESIS_HASH
    checked = 0

    def broken(seq: int, reason: str) -> VerifyResult:
        return VerifyResult(False, checked, seq, reason, head_count, head_hash)

    for expected_seq, row in enumerate(rows, start=1):
        event = _to_event(row)
        if event.seq != expected_seq:
            return broken(expected_seq, f"event seq {expected_seq} expected, found seq {event.seq}")
        if event.prev_hash != prev_hash:
            return broken(event.seq, f"event {event.seq} does not link to the event before it")
        fields = {k: getattr(event, k) for k in AuditEvent.__dataclass_fields__ if k != "entry_hash"}
        if compute_entry_hash(**fields) != event.entry_hash:
            return broken(event.seq, f"event {event.seq} was altered: its content no longer matches its hash")
        prev_hash = event.entry_hash
        checked += 1
    if checked < head_count:
        return broken(checked + 1, f"log truncated: head records {head_count} events, table holds {checked}")
    if checked > head_count or prev_hash != head_hash:
        return broken(checked, "the last event does not match the head anchor")
    return VerifyResult(True, checked, None, None, head_count, head_hash)


def read_events(
    session: Session,
    *,
    actor: str,
    since_seq: int = 0,
    limit: int | None = None,
    object_id: str | None = None,
) -> list[AuditEvent]:
    """Read events in chain order; the read is itself appended as an ``audit.read`` event.

    Args:
        session: an open session in a transaction the caller commits (the read event is written).
        actor: who is reading.
        since_seq: return events with ``seq`` greater than this.
        limit: at most this many events.
        object_id: only events about this (pseudonymous) object.

    Returns:
        The events read, oldest first (the ``audit.read`` event itself is not among them).
    """
    stmt = select(audit_events).where(audit_events.c.seq > since_seq).order_by(audit_events.c.seq)
    if object_id is not None:
        stmt = stmt.where(audit_events.c.object_id == object_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    events = [_to_event(row) for row in session.execute(stmt).all()]
    append_event(
        session,
        actor=actor,
        action=READ_ACTION,
        object_type="audit_log",
        object_id="audit_events",
        details={
            "since_seq": since_seq,
            "limit": limit,
            "filtered": object_id is not None,
            "returned": len(events),
        },
    )
    return events


def find_events(
    session: Session,
    *,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    outcome: str | None = None,
    limit: int | None = None,
) -> list[AuditEvent]:
    """Find events by action / object / outcome for the application's own checks; NOT audited.

    For internal decisions only (e.g. "was this report already exported?"), never to show the log
    to a person: a human read goes through ``read_events``, which records itself. Every filter left
    as None matches anything.

    Args:
        session: an open session; nothing is written.
        action: only events with this action (``export.fhir``, ``job.complete``, ...).
        object_type: only events about this kind of object.
        object_id: only events about this (pseudonymous) object.
        outcome: only events with this outcome (``ok``, ``refused``, ...).
        limit: at most this many events.

    Returns:
        The matching events, oldest first.
    """
    stmt = select(audit_events).order_by(audit_events.c.seq)
    for column, value in (
        (audit_events.c.action, action),
        (audit_events.c.object_type, object_type),
        (audit_events.c.object_id, object_id),
        (audit_events.c.outcome, outcome),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_to_event(row) for row in session.execute(stmt).all()]


def audit_guard_ddl(dialect: str) -> list[str]:
    """Return the DDL statements that make the database refuse UPDATE and DELETE on ``audit_events``.

    Args:
        dialect: SQLAlchemy dialect name, ``sqlite`` or ``postgresql``.

    Returns:
        Statements to execute in order (each one statement).

    Raises:
        AuditError: for another dialect.
    """
    if dialect == "sqlite":
        return [
            "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END",
            "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END",
        ]
    if dialect == "postgresql":
        return [
            "CREATE OR REPLACE FUNCTION audit_events_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP; END $$",
            "CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION audit_events_refuse()",
            "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse()",
        ]
    raise AuditError(f"no append-only guard for dialect {dialect!r}; use sqlite or postgresql")


def drop_audit_guard_ddl(dialect: str) -> list[str]:
    """Return the DDL that removes the guards of ``audit_guard_ddl`` (downgrades and tamper tests)."""
    if dialect == "sqlite":
        return [
            "DROP TRIGGER IF EXISTS audit_events_no_update",
            "DROP TRIGGER IF EXISTS audit_events_no_delete",
        ]
    if dialect == "postgresql":
        return [
            "DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events",
            "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events",
            "DROP FUNCTION IF EXISTS audit_events_refuse()",
        ]
    raise AuditError(f"no append-only guard for dialect {dialect!r}; use sqlite or postgresql")


def head_row_values(salt: str) -> dict[str, Any]:
    """Return the values of the initial head row (inserted by the migration)."""
    return {"id": HEAD_ROW_ID, "event_count": 0, "last_hash": GENESIS_HASH, "pseudonym_salt": salt}


def count_events(session: Session) -> int:
    """Return the number of rows in ``audit_events`` (no read event: a count shows no content)."""
    return int(session.execute(select(func.count()).select_from(audit_events)).scalar_one())
