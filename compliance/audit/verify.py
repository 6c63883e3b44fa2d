"""Reading the log back: verify the chain, read (audited) or find (internal) events, count them."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from compliance.audit.chain import append_event, chain_head, compute_entry_hash
from compliance.audit.schema import (
    GENESIS_HASH,
    READ_ACTION,
    AuditEvent,
    VerifyResult,
    audit_events,
    row_to_event,
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
        event = row_to_event(row)
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
    events = [row_to_event(row) for row in session.execute(stmt).all()]
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
    return [row_to_event(row) for row in session.execute(stmt).all()]


def count_events(session: Session) -> int:
    """Return the number of rows in ``audit_events`` (no read event: a count shows no content)."""
    return int(session.execute(select(func.count()).select_from(audit_events)).scalar_one())
