"""The audit log's schema: its two tables, its errors, the event as read back, the append-only DDL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table

from compliance.clock import as_utc

GENESIS_HASH = "0" * 64
HEAD_ROW_ID = 1
READ_ACTION = "audit.read"
ALARM_ACTION = "audit.alarm"  # appended when the head was out of step with the table (see chain)

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
    Column("entry_mac", String(64), nullable=True),  # NULL: written without a key (verify reports it)
)

audit_head = Table(
    "audit_head",
    AUDIT_METADATA,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("event_count", Integer, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("pseudonym_salt", String(64), nullable=False),
    Column("head_mac", String(64), nullable=True),
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
        entry_mac: HMAC-SHA256 of ``entry_hash`` under the server's signing key (None when the
            event was written without a key).
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
    entry_mac: str | None = None


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


def row_to_event(row: Any) -> AuditEvent:
    """Turn one ``audit_events`` row into an ``AuditEvent`` (timestamp as aware UTC)."""
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
        entry_mac=getattr(row, "entry_mac", None),
    )


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


_HEAD_OFF_TAIL = (
    "NEW.event_count IS DISTINCT FROM (SELECT max(seq) FROM audit_events) "
    "OR NEW.last_hash IS DISTINCT FROM (SELECT entry_hash FROM audit_events WHERE seq = NEW.event_count) "
    "OR NEW.id IS DISTINCT FROM OLD.id OR NEW.pseudonym_salt IS DISTINCT FROM OLD.pseudonym_salt"
)


def audit_head_guard_ddl(dialect: str) -> list[str]:
    """Return the DDL (migration 0002) that pins the head to the table and refuses conflict clauses.

    The head row can only be moved to the last event actually in ``audit_events`` (its ``seq`` and
    ``entry_hash``); it cannot be deleted, a second one cannot be inserted, and its pseudonym salt
    never changes. On SQLite an ``INSERT OR REPLACE`` (which deletes the conflicting row without
    firing DELETE triggers unless ``recursive_triggers`` is on) is refused by BEFORE INSERT triggers
    that abort when the primary or a unique key already exists.

    Raises:
        AuditError: for another dialect.
    """
    if dialect == "sqlite":
        off_tail = _HEAD_OFF_TAIL.replace("IS DISTINCT FROM", "IS NOT")
        return [
            "CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events WHEN EXISTS (SELECT 1 FROM "
            "audit_events WHERE id = NEW.id OR seq = NEW.seq OR entry_hash = NEW.entry_hash) "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: a conflicting insert is refused'); END",
            "CREATE TRIGGER audit_head_no_insert BEFORE INSERT ON audit_head WHEN EXISTS (SELECT 1 FROM audit_head) "
            "BEGIN SELECT RAISE(ABORT, 'audit_head has one row: insert refused'); END",
            "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
            "BEGIN SELECT RAISE(ABORT, 'audit_head has one row: delete refused'); END",
            f"CREATE TRIGGER audit_head_follows_tail BEFORE UPDATE ON audit_head WHEN {off_tail} "
            "BEGIN SELECT RAISE(ABORT, 'audit_head can only point at the last audit event'); END",
        ]
    if dialect == "postgresql":
        return [
            "CREATE OR REPLACE FUNCTION audit_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF TG_OP IN ('DELETE', 'TRUNCATE') THEN RAISE EXCEPTION 'audit_head has one row: % refused', TG_OP; "
            "END IF; "
            "IF TG_OP = 'INSERT' THEN IF EXISTS (SELECT 1 FROM audit_head) THEN "
            "RAISE EXCEPTION 'audit_head has one row: insert refused'; END IF; RETURN NEW; END IF; "
            f"IF {_HEAD_OFF_TAIL} THEN RAISE EXCEPTION 'audit_head can only point at the last audit event'; "
            "END IF; RETURN NEW; END $$",
            "CREATE TRIGGER audit_head_guard BEFORE INSERT OR UPDATE OR DELETE ON audit_head "
            "FOR EACH ROW EXECUTE FUNCTION audit_head_guard()",
            "CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_head_guard()",
        ]
    raise AuditError(f"no append-only guard for dialect {dialect!r}; use sqlite or postgresql")


def drop_audit_head_guard_ddl(dialect: str) -> list[str]:
    """Return the DDL that removes the guards of ``audit_head_guard_ddl``."""
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {name}" for name in (
            "audit_events_no_replace", "audit_head_no_insert", "audit_head_no_delete", "audit_head_follows_tail")]
    if dialect == "postgresql":
        return [
            "DROP TRIGGER IF EXISTS audit_head_guard ON audit_head",
            "DROP TRIGGER IF EXISTS audit_head_no_truncate ON audit_head",
            "DROP FUNCTION IF EXISTS audit_head_guard()",
        ]
    raise AuditError(f"no append-only guard for dialect {dialect!r}; use sqlite or postgresql")


def drop_audit_guard_ddl(dialect: str) -> list[str]:
    """Return the DDL that removes every audit guard (downgrades, and tests that play a file holder)."""
    if dialect == "sqlite":
        return [
            "DROP TRIGGER IF EXISTS audit_events_no_update",
            "DROP TRIGGER IF EXISTS audit_events_no_delete",
            *drop_audit_head_guard_ddl(dialect),
        ]
    if dialect == "postgresql":
        return [
            "DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events",
            "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events",
            "DROP FUNCTION IF EXISTS audit_events_refuse()",
            *drop_audit_head_guard_ddl(dialect),
        ]
    raise AuditError(f"no append-only guard for dialect {dialect!r}; use sqlite or postgresql")


def head_row_values(salt: str) -> dict[str, Any]:
    """Return the values of the initial head row (inserted by the migration)."""
    return {"id": HEAD_ROW_ID, "event_count": 0, "last_hash": GENESIS_HASH, "pseudonym_salt": salt}
