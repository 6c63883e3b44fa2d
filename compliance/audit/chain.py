"""Appending to the chain: pseudonyms, the entry hash, the PHI check on details, the head row."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from compliance.audit.keys import entry_mac, head_mac, macs_equal, session_key
from compliance.audit.schema import (
    ALARM_ACTION,
    GENESIS_HASH,
    HEAD_ROW_ID,
    AuditError,
    AuditEvent,
    AuditPHIError,
    audit_events,
    audit_head,
)
from compliance.clock import as_utc, utcnow
from compliance.phi import find_phi

log = logging.getLogger(__name__)


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
    _check_json_shape(value, path)
    problems = find_phi(value, path, uids=True)
    if problems:
        raise AuditPHIError(f"audit details at {', '.join(problems)} look like PHI; pass a pseudonym instead")


def _check_json_shape(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise AuditError(f"audit details keys must be strings (at {path})")
            _check_json_shape(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_json_shape(v, f"{path}[{i}]")
    elif value is not None and not isinstance(value, str | bool | int | float):
        raise AuditError(f"audit details at {path} are not JSON-able ({type(value).__name__})")


def _lock_head(session: Session) -> Any:
    stmt = select(audit_head).where(audit_head.c.id == HEAD_ROW_ID)
    if session.get_bind().dialect.name != "sqlite":  # SQLite already holds the write lock (BEGIN IMMEDIATE)
        stmt = stmt.with_for_update()
    row = session.execute(stmt).one_or_none()
    if row is None:
        raise AuditError("audit_head row missing: run the store migrations (upgrade_database)")
    return row


def _tail(session: Session) -> tuple[int, str, datetime | None]:
    """(seq, entry_hash, timestamp) of the last event in the table; (0, genesis, None) when empty."""
    row = session.execute(
        select(audit_events.c.seq, audit_events.c.entry_hash, audit_events.c.timestamp)
        .order_by(audit_events.c.seq.desc()).limit(1)
    ).one_or_none()
    return (0, GENESIS_HASH, None) if row is None else (int(row.seq), str(row.entry_hash), as_utc(row.timestamp))


def head_problem(head: Any, tail_seq: int, tail_hash: str, key: bytes | None) -> str | None:
    """Why the head row does not anchor the table's last event (None when it does).

    A head at the genesis value (no events) needs no MAC; any other head needs a valid one when a
    key is configured.
    """
    if int(head.event_count) != tail_seq or head.last_hash != tail_hash:
        return f"head records {int(head.event_count)} events, the table ends at event {tail_seq}"
    if key is not None and tail_seq > 0 and not macs_equal(head_mac(key, tail_seq, tail_hash), head.head_mac):
        return "the head's MAC does not verify (it was rewritten without the signing key)"
    return None


def _insert(session: Session, key: bytes | None, fields: dict[str, Any]) -> AuditEvent:
    entry_hash = compute_entry_hash(**fields)
    mac = entry_mac(key, entry_hash) if key is not None else None
    session.execute(insert(audit_events).values(**fields, entry_hash=entry_hash, entry_mac=mac))
    return AuditEvent(**fields, entry_hash=entry_hash, entry_mac=mac)


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
) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction.

    Call it in the same transaction as the state change it records; the head row is locked
    (PostgreSQL ``FOR UPDATE``) until that transaction ends, so concurrent appends serialize.
    The time is the store's (never the caller's), and never earlier than the previous event's.

    The event continues the table's last event. When the head row does not anchor that event (a
    rewrite by someone without the key, or an interrupted repair), the append does NOT fail: an
    ``audit.alarm`` event recording the mismatch is appended first and logged, so clinical work goes
    on and ``verify_chain`` reports the break at that alarm from then on.

    With a signing key (``Session.info[KEY_INFO]`` or ``$MEDVLM_SIGNING_KEY``) each event carries
    ``entry_mac`` and the head ``head_mac``; without one they are left empty (and verify says so).

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

    Returns:
        The event as written.

    Raises:
        AuditPHIError: ``details`` (or ``object_id``) holds a DICOM UID or person name.
        AuditError: the head row is missing or details are not JSON-able.
    """
    details = dict(details or {})
    _check_no_phi(details, "details")
    _check_no_phi(object_id, "object_id")
    key = session_key(session.info)
    head = _lock_head(session)
    seq, prev_hash, last_time = _tail(session)
    ts = utcnow() if last_time is None else max(utcnow(), last_time)  # a clock step back never reorders
    problem = head_problem(head, seq, prev_hash, key)
    if problem is not None:
        log.error("audit chain alarm: %s; appending an %s event and carrying on", problem, ALARM_ACTION)
        alarm = _insert(session, key, dict(
            seq=seq + 1, timestamp=ts, actor="medvlm-audit", action=ALARM_ACTION, object_type="audit_log",
            object_id="audit_head", outcome="alarm", model_hash=None, adapter_hash=None, prev_hash=prev_hash,
            details={"problem": problem, "head_count": int(head.event_count), "table_count": seq}))
        seq, prev_hash = alarm.seq, alarm.entry_hash
    event = _insert(session, key, dict(
        seq=seq + 1, timestamp=ts, actor=actor, action=action, object_type=object_type, object_id=str(object_id),
        outcome=outcome, details=details, model_hash=model_hash, adapter_hash=adapter_hash, prev_hash=prev_hash))
    session.execute(
        update(audit_head).where(audit_head.c.id == HEAD_ROW_ID).values(
            event_count=event.seq, last_hash=event.entry_hash,
            head_mac=head_mac(key, event.seq, event.entry_hash) if key is not None else None)
    )
    return event


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
