"""Reading the log back: verify the chain, read (audited) or find (internal) events, count them."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from compliance.audit.chain import append_event, compute_entry_hash, head_problem
from compliance.audit.keys import entry_mac, macs_equal, require_key, session_key
from compliance.audit.schema import (
    ALARM_ACTION,
    GENESIS_HASH,
    HEAD_ROW_ID,
    READ_ACTION,
    AuditError,
    AuditEvent,
    VerifyResult,
    audit_events,
    audit_head,
    row_to_event,
)

_HASHED = tuple(k for k in AuditEvent.__dataclass_fields__ if k not in ("entry_hash", "entry_mac"))


def _event_problem(event: AuditEvent, expected_seq: int, prev: AuditEvent | None, key: bytes) -> str | None:
    if event.seq != expected_seq:
        return f"event seq {expected_seq} expected, found seq {event.seq}"
    if event.prev_hash != (prev.entry_hash if prev else GENESIS_HASH):
        return f"event {event.seq} does not link to the event before it"
    if compute_entry_hash(**{k: getattr(event, k) for k in _HASHED}) != event.entry_hash:
        return f"event {event.seq} was altered: its content no longer matches its hash"
    if event.entry_mac is None:
        return f"event {event.seq} carries no MAC (written without the signing key, or inserted by hand)"
    if not macs_equal(entry_mac(key, event.entry_hash), event.entry_mac):
        return f"event {event.seq} was forged or rewritten: its MAC does not verify under the signing key"
    if prev is not None and event.timestamp < prev.timestamp:
        return f"event {event.seq} is dated before the event before it"
    if event.action == ALARM_ACTION:
        return f"event {event.seq} is an alarm: {event.details.get('problem', 'the head was out of step')}"
    return None


def verify_chain(session: Session, key: bytes | None = None) -> VerifyResult:
    """Re-hash every event, check each MAC and link, and check that the head anchors the last event.

    Detects an edited event (hash or MAC mismatch), an inserted or forged one (no valid MAC without
    the key), a deleted or reordered one (a ``seq`` gap or a ``prev_hash`` that does not match the
    event before), a truncated or extended tail and a rewritten head (count, hash or MAC), a
    backdated event, and an ``audit.alarm`` left by an append that found the head out of step.
    Never raises on a broken chain: it says where it breaks. Limit: a whole earlier copy of the
    database put back (rows and head together) verifies; anchor ``chain_head`` outside to catch it.

    Args:
        session: an open session; nothing is written.
        key: the signing key; default the session's (``Session.info``) or ``$MEDVLM_SIGNING_KEY``.

    Returns:
        A ``VerifyResult`` naming the first broken event, if any.

    Raises:
        SigningKeyMissingError: no signing key is configured (nothing could be verified).
        AuditError: the head row is missing.
    """
    key = require_key(key if key is not None else session_key(session.info))
    head = session.execute(select(audit_head).where(audit_head.c.id == HEAD_ROW_ID)).one_or_none()
    if head is None:
        raise AuditError("audit_head row missing: run the store migrations (upgrade_database)")
    head_count, head_hash = int(head.event_count), str(head.last_hash)
    prev: AuditEvent | None = None
    checked = 0
    for expected_seq, row in enumerate(session.execute(select(audit_events).order_by(audit_events.c.id)), 1):
        event = row_to_event(row)
        problem = _event_problem(event, expected_seq, prev, key)
        if problem is not None:
            return VerifyResult(False, checked, expected_seq, problem, head_count, head_hash)
        prev, checked = event, checked + 1
    tail_hash = prev.entry_hash if prev else GENESIS_HASH
    problem = head_problem(head, checked, tail_hash, key)
    if problem is None:
        return VerifyResult(True, checked, None, None, head_count, head_hash)
    if checked < head_count:
        problem = f"log truncated: {problem}"
    broken_at = checked + 1 if checked < head_count else max(min(checked, head_count + 1), 1)
    return VerifyResult(False, checked, broken_at, problem, head_count, head_hash)


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
