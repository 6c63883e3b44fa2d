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

Modules: ``schema`` (tables, errors, ``AuditEvent``, append-only DDL), ``chain`` (pseudonyms,
hashing, ``append_event``, the head row), ``verify`` (``verify_chain``, ``read_events``,
``find_events``, ``count_events``). Import from ``compliance.audit``.

This package may use SQLAlchemy but no medvlm package (imports go one way, STYLE rule 1).
"""

from __future__ import annotations

from compliance.audit.chain import (
    append_event,
    chain_head,
    compute_entry_hash,
    pseudonym_salt,
    pseudonymize,
)
from compliance.audit.schema import (
    AUDIT_METADATA,
    GENESIS_HASH,
    HEAD_ROW_ID,
    READ_ACTION,
    AuditError,
    AuditEvent,
    AuditPHIError,
    VerifyResult,
    audit_events,
    audit_guard_ddl,
    audit_head,
    drop_audit_guard_ddl,
    head_row_values,
)
from compliance.audit.verify import count_events, find_events, read_events, verify_chain

__all__ = [
    "AUDIT_METADATA",
    "GENESIS_HASH",
    "HEAD_ROW_ID",
    "READ_ACTION",
    "AuditError",
    "AuditEvent",
    "AuditPHIError",
    "VerifyResult",
    "append_event",
    "audit_events",
    "audit_guard_ddl",
    "audit_head",
    "chain_head",
    "compute_entry_hash",
    "count_events",
    "drop_audit_guard_ddl",
    "find_events",
    "head_row_values",
    "pseudonym_salt",
    "pseudonymize",
    "read_events",
    "verify_chain",
]
