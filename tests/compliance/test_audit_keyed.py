"""Keyed audit chain (issue 14): rewrites by someone holding only the database file are detected,
the head can only follow the table, a head out of step alarms but never stops appends, and the
store, not the caller, dates events."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError

from compliance.audit import (
    ALARM_ACTION,
    SIGNING_KEY_ENV,
    SigningKeyMissingError,
    append_event,
    compute_entry_hash,
    drop_audit_guard_ddl,
    find_events,
    verify_chain,
)
from compliance.audit.schema import AuditEvent

_HASHED = [k for k in AuditEvent.__dataclass_fields__ if k not in ("entry_hash", "entry_mac")]


def _fill(store, n=5):
    with store.transaction() as s:
        for i in range(n):
            append_event(s, actor="w1", action="job.claim", object_type="job", object_id=str(i))


def _events(store) -> list[AuditEvent]:
    with store.transaction() as s:
        return find_events(s)


def _verify(store):
    with store.transaction() as s:
        return verify_chain(s)


def _as_file_holder(store, *statements):
    """Drop every guard and run SQL: what someone with the database file (and no key) can do."""
    with store.transaction() as s:
        for ddl in drop_audit_guard_ddl(store.dialect):
            s.execute(text(ddl))
        for stmt, params in statements:
            s.execute(text(stmt), params)


def _rehash_from(events: list[AuditEvent], start: int, change) -> list[tuple[str, dict]]:
    """Statements that rewrite events from index ``start`` on with ``change`` and recompute every
    sha256 link and the head: a consistent hash chain, as the old (unkeyed) verify accepted."""
    out, prev = [], events[start - 1].entry_hash if start else "0" * 64
    for i, event in enumerate(events[start:], start):
        fields = {k: getattr(event, k) for k in _HASHED} | change(i, event) | {"prev_hash": prev}
        new_hash = compute_entry_hash(**fields)
        out.append(("UPDATE audit_events SET actor = :actor, action = :action, timestamp = :ts, prev_hash = :p, "
                    "entry_hash = :h WHERE seq = :seq",
                    {"actor": fields["actor"], "action": fields["action"], "ts": fields["timestamp"],
                     "p": prev, "h": new_hash, "seq": event.seq}))
        prev = new_hash
    out.append(("UPDATE audit_head SET event_count = :n, last_hash = :h", {"n": len(events), "h": prev}))
    return out


@pytest.mark.parametrize("forgery", ["edit", "reorder", "backdate"])
def test_rehashed_rewrite_without_the_key_is_detected(store, forgery):
    _fill(store)
    events = _events(store)
    if forgery == "edit":
        change = lambda i, e: {"actor": "intruder"} if i == 2 else {}  # noqa: E731
    elif forgery == "reorder":  # events 2 and 3 swap places (content and times)
        change = lambda i, e: ({k: getattr(events[5 - i], k) for k in ("actor", "action", "timestamp")}  # noqa: E731
                               if i in (2, 3) else {})
    else:
        change = lambda i, e: {"timestamp": datetime(2001, 1, 1, tzinfo=UTC)} if i == 2 else {}  # noqa: E731
    _as_file_holder(store, *_rehash_from(events, 2, change))
    result = _verify(store)
    assert not result.ok and result.broken_at == 3 and "MAC" in result.reason


def test_tail_insert_with_head_update_is_detected(store):
    _fill(store)
    last = _events(store)[-1]
    fields = {k: getattr(last, k) for k in _HASHED} | {"seq": 6, "prev_hash": last.entry_hash, "actor": "mallory"}
    forged = compute_entry_hash(**fields)
    # no guard needs dropping: an append at the tail and the head moved onto it are what the database allows
    with store.transaction() as s:
        s.execute(text("INSERT INTO audit_events (seq, timestamp, actor, action, object_type, object_id, outcome, "
                       "details, prev_hash, entry_hash, entry_mac) VALUES (6, :ts, 'mallory', :a, :ot, :oi, 'ok', "
                       "'{}', :p, :h, :m)"),
                  {"ts": last.timestamp, "a": last.action, "ot": last.object_type, "oi": last.object_id,
                   "p": last.entry_hash, "h": forged, "m": last.entry_mac})
        s.execute(text("UPDATE audit_head SET event_count = 6, last_hash = :h"), {"h": forged})
    result = _verify(store)
    assert not result.ok and result.broken_at == 6 and "MAC" in result.reason


def test_tail_delete_with_head_update_is_detected(store):
    _fill(store)
    third = _events(store)[2]
    _as_file_holder(store, ("DELETE FROM audit_events WHERE seq >= 4", {}),
                    ("UPDATE audit_head SET event_count = 3, last_hash = :h", {"h": third.entry_hash}))
    result = _verify(store)
    assert not result.ok and result.broken_at == 3 and "head's MAC" in result.reason


def test_backdated_timestamp_is_not_accepted_and_time_never_runs_back(store):
    before = datetime.now(UTC)
    with pytest.raises(TypeError), store.transaction() as s:
        append_event(s, actor="w", action="x", object_type="job", object_id="1",  # type: ignore[call-arg]
                     now=datetime(2001, 1, 1, tzinfo=UTC))
    _fill(store, 3)
    stamps = [e.timestamp for e in _events(store)]
    assert len(stamps) == 3 and stamps == sorted(stamps) and stamps[0] >= before
    assert _verify(store).ok


def test_head_can_only_point_at_the_last_event(store):
    _fill(store, 3)
    first = _events(store)[0]
    for stmt, params in (
        ("UPDATE audit_head SET event_count = 1, last_hash = :h", {"h": first.entry_hash}),
        ("UPDATE audit_head SET event_count = 9", {}),
        ("DELETE FROM audit_head", {}),
        ("INSERT INTO audit_head (id, event_count, last_hash, pseudonym_salt) VALUES (2, 0, 'x', 'y')", {}),
    ):
        with pytest.raises(DBAPIError), store.transaction() as s:
            s.execute(text(stmt), params)
    assert _verify(store).ok


def test_head_out_of_step_alarms_but_appends_continue(store, caplog):
    from pipelines.store.integrity import audit_alarm

    _fill(store)
    third = _events(store)[2]
    _as_file_holder(store, ("UPDATE audit_head SET event_count = 3, last_hash = :h", {"h": third.entry_hash}))
    result = _verify(store)
    assert not result.ok and result.broken_at == 4 and "head records 3 events" in result.reason
    assert "out of step now" in audit_alarm(store)
    with store.transaction() as s:  # old code: IntegrityError (seq 4 taken) on every append from here on
        event = append_event(s, actor="dr.a", action="study.open", object_type="study", object_id="h:1")
    assert event.seq == 7
    assert "audit chain alarm" in caplog.text  # logged for operators
    alarm = _events(store)[5]
    assert alarm.action == ALARM_ACTION and alarm.details["head_count"] == 3 and alarm.details["table_count"] == 5
    result = _verify(store)  # the head is back in step, the alarm keeps the break on record
    assert not result.ok and result.broken_at == 6 and "alarm" in result.reason
    assert "1 alarm(s) recorded" in audit_alarm(store)


def test_insert_or_replace_refused_on_audit_tables_without_recursive_triggers(store):
    if store.dialect != "sqlite":
        pytest.skip(reason="REPLACE conflict resolution is SQLite's")
    _fill(store, 2)
    conn = sqlite3.connect(make_url(store.url).database)  # a plain connection: recursive_triggers off
    try:
        for stmt in (
            "INSERT OR REPLACE INTO audit_events (id, seq, timestamp, actor, action, object_type, object_id, "
            "outcome, details, prev_hash, entry_hash) SELECT id, seq, timestamp, 'mallory', action, object_type, "
            "object_id, outcome, details, prev_hash, entry_hash FROM audit_events WHERE seq = 2",
            "INSERT OR REPLACE INTO audit_head (id, event_count, last_hash, pseudonym_salt) VALUES (1, 0, 'x', 'y')",
        ):
            with pytest.raises(sqlite3.DatabaseError, match="refused"):
                conn.execute(stmt)
    finally:
        conn.close()
    assert _verify(store).ok and _events(store)[1].actor == "w1"


def test_events_written_without_a_key_do_not_verify(store_url, monkeypatch):
    from pipelines.store import open_store

    monkeypatch.delenv(SIGNING_KEY_ENV)
    with open_store(store_url) as keyless:
        _fill(keyless, 2)  # clinical work goes on without a key ...
        with pytest.raises(SigningKeyMissingError, match=SIGNING_KEY_ENV), keyless.transaction() as s:
            verify_chain(s)  # ... but nothing can be verified
    with open_store(store_url, signing_key="k" * 40) as keyed:
        result = _verify(keyed)
    assert not result.ok and result.broken_at == 1 and "no MAC" in result.reason
    with pytest.raises(SigningKeyMissingError, match="too short"):
        open_store(store_url, signing_key="short")


@pytest.mark.integration
def test_postgres_application_role_cannot_change_the_head(pg_cluster):
    from pipelines.store import open_store

    url = pg_cluster.create_database()
    role = "app_" + uuid.uuid4().hex[:8]
    with open_store(url) as owner:  # migrated by the owner, as a deployment does
        _fill(owner, 3)
        with owner.engine.begin() as conn:
            conn.execute(text(f"CREATE ROLE {role} LOGIN"))
            conn.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))  # even with every grant
            conn.execute(text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    app_url = make_url(url).set(username=role).render_as_string(hide_password=False)
    with open_store(app_url, migrate=False) as app:
        _fill(app, 1)  # the application appends as usual
        first = _events(app)[0]
        for stmt in (
            f"UPDATE audit_head SET event_count = 1, last_hash = '{first.entry_hash}'",
            "DELETE FROM audit_head",
            "TRUNCATE audit_head",
            "ALTER TABLE audit_head DISABLE TRIGGER ALL",
            "INSERT INTO audit_head (id, event_count, last_hash, pseudonym_salt) VALUES (1, 0, 'x', 'y') "
            "ON CONFLICT (id) DO UPDATE SET event_count = 0",
        ):
            with pytest.raises(DBAPIError), app.transaction() as s:
                s.execute(text(stmt))
        result = _verify(app)
        assert result.ok and result.checked == 4
