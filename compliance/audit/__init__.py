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
itself consistent but no longer matching the head, and ``verify_chain`` reports it. The database
only lets the head point at the table's last event (triggers, ``audit_head_guard_ddl``).

Keyed MACs. A sha256 chain alone can be recomputed by anyone holding the database file, so each
event also carries ``entry_mac`` and the head ``head_mac``: HMAC-SHA256 under the server's signing
key (``$MEDVLM_SIGNING_KEY``, never stored in the database; ``keys``). Inserting, editing,
reordering or deleting events, or rewriting the head, without the key is detected by
``verify_chain``. Putting back a whole earlier copy of the database is not: export ``chain_head``
to a place outside the database (a signed log line, a ticket) to anchor it beyond that.

A broken chain never stops clinical work: ``append_event`` continues from the table's last event
and, when the head is out of step, first appends an ``audit.alarm`` event (and logs it);
``verify_chain`` reports the break (from then on, at the alarm). Event time is the store's clock.

Append-only in the database. ``audit_guard_ddl`` returns the triggers that make the database
refuse UPDATE and DELETE on ``audit_events`` (SQLite ``RAISE(ABORT, ...)``; PostgreSQL a trigger
function raising an exception, also refusing TRUNCATE); the store's migration installs them.

PHI. ``object_id`` is pseudonymous: callers pass identifiers of patients' data (study UIDs)
through ``pseudonymize`` (HMAC-SHA256 with a key kept by the caller). ``details`` must hold no
PHI; ``append_event`` refuses strings that look like DICOM UIDs or person names
(``AuditPHIError``, naming the key path, never the value).

Modules: ``schema`` (tables, errors, ``AuditEvent``, append-only DDL), ``keys`` (the signing key,
MACs), ``chain`` (pseudonyms, hashing, ``append_event``, the head row), ``verify``
(``verify_chain``, ``read_events``, ``find_events``, ``count_events``). Import from ``compliance.audit``.

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
from compliance.audit.keys import (
    KEY_INFO,
    SIGNING_KEY_ENV,
    SigningKeyMissingError,
    check_key,
    keyed_mac,
    load_signing_key,
    macs_equal,
    require_key,
)
from compliance.audit.schema import (
    ALARM_ACTION,
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
    audit_head_guard_ddl,
    drop_audit_guard_ddl,
    drop_audit_head_guard_ddl,
    head_row_values,
)
from compliance.audit.verify import count_events, find_events, read_events, verify_chain

__all__ = [
    "ALARM_ACTION",
    "AUDIT_METADATA",
    "KEY_INFO",
    "SIGNING_KEY_ENV",
    "SigningKeyMissingError",
    "audit_head_guard_ddl",
    "check_key",
    "drop_audit_head_guard_ddl",
    "keyed_mac",
    "load_signing_key",
    "macs_equal",
    "require_key",
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
