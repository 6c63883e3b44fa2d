"""Hash-chained audit log: append, verify, and detection of each kind of tampering."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from compliance.audit import (
    READ_ACTION,
    AuditPHIError,
    append_event,
    chain_head,
    drop_audit_guard_ddl,
    find_events,
    pseudonymize,
    read_events,
    verify_chain,
)


def _fill(store, n=5):
    with store.transaction() as s:
        for i in range(n):
            append_event(
                s, actor="w1", action="job.claim", object_type="job", object_id=str(i), details={"attempt": i},
                model_hash="abc", adapter_hash=None,
            )  # fmt: skip


def _tamper(store, *statements):
    with store.transaction() as s:
        for ddl in drop_audit_guard_ddl(store.dialect):
            s.execute(text(ddl))
        for stmt in statements:
            s.execute(text(stmt))


def _verify(store):
    with store.transaction() as s:
        return verify_chain(s)


def test_chain_verifies_and_head_anchors(store):
    _fill(store)
    result = _verify(store)
    assert result.ok and result.checked == 5 and result.broken_at is None
    with store.transaction() as s:
        assert chain_head(s) == (5, result.head_hash)


def test_database_refuses_update_and_delete(store):
    _fill(store, 2)
    for stmt in (
        "UPDATE audit_events SET actor = 'x' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
    ):
        with pytest.raises(DBAPIError), store.transaction() as s:
            s.execute(text(stmt))
    assert _verify(store).ok


def test_edited_event_detected(store):
    _fill(store)
    _tamper(store, "UPDATE audit_events SET actor = 'intruder' WHERE seq = 3")
    result = _verify(store)
    assert not result.ok and result.broken_at == 3 and "altered" in result.reason


def test_edited_outcome_detected(store):
    _fill(store)
    _tamper(store, "UPDATE audit_events SET outcome = 'refused' WHERE seq = 2")
    assert _verify(store).broken_at == 2


def test_deleted_event_detected(store):
    _fill(store)
    _tamper(store, "DELETE FROM audit_events WHERE seq = 2")
    result = _verify(store)
    assert not result.ok and result.broken_at == 2


def test_reordered_events_detected(store):
    _fill(store)
    _tamper(
        store,
        "UPDATE audit_events SET id = 1000 WHERE seq = 2",
        "UPDATE audit_events SET id = 2 WHERE seq = 3",
        "UPDATE audit_events SET id = 3 WHERE seq = 2",
    )
    result = _verify(store)
    assert not result.ok and result.broken_at == 2


def test_truncated_tail_detected(store):
    _fill(store)
    _tamper(store, "DELETE FROM audit_events WHERE seq >= 4")
    result = _verify(store)
    assert not result.ok and result.broken_at == 4 and "truncated" in result.reason


def test_reading_is_audited(store):
    _fill(store, 3)
    with store.transaction() as s:
        events = read_events(s, actor="auditor", since_seq=1)
    assert [e.seq for e in events] == [2, 3]
    with store.transaction() as s:
        again = read_events(s, actor="auditor")
    assert again[-1].action == READ_ACTION and again[-1].actor == "auditor"
    assert _verify(store).ok


def test_find_events_filters_and_is_not_audited(store):
    _fill(store, 3)
    with store.transaction() as s:
        append_event(s, actor="x", action="export.fhir", object_type="report_version", object_id="7",
                     outcome="refused")  # fmt: skip
        append_event(s, actor="x", action="export.fhir", object_type="report_version", object_id="7")
    with store.transaction() as s:
        before = chain_head(s)
        assert [e.object_id for e in find_events(s, action="job.claim")] == ["0", "1", "2"]
        assert [e.seq for e in find_events(s, action="job.claim", limit=2)] == [1, 2]
        assert [e.object_id for e in find_events(s, object_type="job", object_id="1")] == ["1"]
        ok = find_events(s, action="export.fhir", object_id="7", outcome="ok")
        assert len(ok) == 1 and ok[0].seq == 5
        assert find_events(s, action="export.fhir", object_id="8") == []
        assert len(find_events(s)) == 5
    with store.transaction() as s:
        assert chain_head(s) == before  # nothing appended: an internal check, not a human read
        assert not find_events(s, action=READ_ACTION)


def test_phi_refused_in_details(store):
    with pytest.raises(AuditPHIError), store.transaction() as s:
        append_event(
            s, actor="w", action="x", object_type="study", object_id="1", details={"uid": "1.2.840.1.2.3"}
        )
    with pytest.raises(AuditPHIError), store.transaction() as s:
        append_event(
            s, actor="w", action="x", object_type="study", object_id="1", details={"n": ["DOE^JANE"]}
        )
    with pytest.raises(AuditPHIError), store.transaction() as s:
        append_event(s, actor="w", action="x", object_type="study", object_id="1.2.840.1.2.3")
    with store.transaction() as s:
        assert chain_head(s)[0] == 0  # refused appends left nothing


def test_pseudonyms_are_keyed_and_stable():
    a = pseudonymize("1.2.840.1.2.3", b"k1")
    assert a == pseudonymize("1.2.840.1.2.3", "k1") and a != pseudonymize("1.2.840.1.2.3", b"k2")
    assert "1.2.840" not in a and a.startswith("h:")
