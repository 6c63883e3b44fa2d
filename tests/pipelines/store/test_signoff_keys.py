"""Keyed sign-offs (issue 14): INSERT OR REPLACE is refused; forced by someone with the file but not
the key, the forgery fails ``verify_signoff``, ``audit verify`` and ``export``; no key, no signing;
a broken audit head never stops log-in, draft, edit or sign."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from compliance.audit import SIGNING_KEY_ENV, drop_audit_guard_ddl, find_events
from pipelines.cli import app
from pipelines.export.reports import Sink, export_reports
from pipelines.store import open_store
from pipelines.store.integrity import audit_alarm, check_integrity
from pipelines.store.jobs import DraftPayload, claim, complete, enqueue
from pipelines.store.logins import record_login
from pipelines.store.reviews import (
    SigningKeyError,
    content_hash,
    create_version_from_draft,
    edit_report,
    list_versions,
    open_study,
    sign_report,
    sign_version,
    signoff_failure,
    verify_signoff,
)

UID = "1.2.826.0.1.3680043.8.498.77"
FORGED = ("Heart normal.", "No pneumothorax.")  # the signed text said otherwise


def _draft(store, uid=UID) -> int:
    job_id = enqueue(store, uid, "m1", "p")
    claim(store, "w", 30)
    complete(store, job_id, "w", DraftPayload(findings="Small left pneumothorax.", impression="Pneumothorax."))
    return job_id


def _signed(store) -> int:
    version = create_version_from_draft(store, _draft(store))
    sign_version(store, version.id, signer="dr.a", role="radiologist")
    return version.id


def _sqlite_file(store) -> str:
    if store.dialect != "sqlite":
        pytest.skip(reason="INSERT OR REPLACE is SQLite's")
    return make_url(store.url).database


def _replace_statements(version_id: int) -> list[str]:
    findings, impression = FORGED
    h = content_hash(findings, impression)
    return [
        f"INSERT OR REPLACE INTO report_versions (id, study_uid, version, findings, impression, author, created_at, "
        f"parent_id, draft_id, content_hash, status) SELECT id, study_uid, version, '{findings}', '{impression}', "
        f"author, created_at, parent_id, draft_id, '{h}', status FROM report_versions WHERE id = {version_id}",
        f"INSERT OR REPLACE INTO signoffs (id, version_id, signer, role, signed_at, meaning, bound_hash, signature) "
        f"SELECT id, version_id, 'dr.b', role, signed_at, meaning, '{h}', signature FROM signoffs "
        f"WHERE version_id = {version_id}",
    ]


def test_insert_or_replace_is_refused_on_versions_and_signoffs(store):
    version_id = _signed(store)
    draft = edit_report(store, UID, *FORGED, author="dr.b", role="resident")  # an unsigned version 2
    conn = sqlite3.connect(_sqlite_file(store))  # a plain connection, as a person with the file has
    try:
        for stmt in _replace_statements(version_id) + [  # REPLACE would delete the signed row it collides with
            f"UPDATE OR REPLACE report_versions SET id = {version_id} WHERE id = {draft.id}",
        ]:
            with pytest.raises(sqlite3.DatabaseError, match="replaced|keeps its id"):
                conn.execute(stmt)
    finally:
        conn.close()
    with pytest.raises(DBAPIError), store.transaction() as s:  # the store's own connections too
        s.execute(text(_replace_statements(version_id)[1]))
    assert verify_signoff(store, version_id)
    assert list_versions(store, UID)[0].findings == "Small left pneumothorax."


def test_on_conflict_update_is_refused_on_postgres(store):
    if store.dialect != "postgresql":
        pytest.skip(reason="ON CONFLICT DO UPDATE is PostgreSQL's form of a conflict clause")
    version_id = _signed(store)
    for stmt in (
        f"INSERT INTO signoffs (version_id, signer, role, signed_at, meaning, bound_hash) SELECT version_id, 'dr.b', "
        f"role, signed_at, meaning, bound_hash FROM signoffs WHERE version_id = {version_id} "
        "ON CONFLICT (version_id) DO UPDATE SET signer = EXCLUDED.signer",
        f"INSERT INTO report_versions (id, study_uid, version, findings, impression, author, created_at, "
        f"content_hash, status) SELECT id, study_uid, version, 'x', 'y', author, created_at, content_hash, status "
        f"FROM report_versions WHERE id = {version_id} ON CONFLICT (id) DO UPDATE SET findings = EXCLUDED.findings",
    ):
        with pytest.raises(DBAPIError, match="immutable"), store.transaction() as s:
            s.execute(text(stmt))
    assert verify_signoff(store, version_id)


def test_forced_replace_without_the_key_is_detected_and_never_exported(store, tmp_path):
    version_id = _signed(store)
    conn = sqlite3.connect(_sqlite_file(store))
    try:  # drop every trigger, then REPLACE: the text and its hashes are consistent, the signature is old
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        for stmt in _replace_statements(version_id):
            conn.execute(stmt)
        conn.commit()
    finally:
        conn.close()
    assert list_versions(store, UID)[0].findings == FORGED[0]
    assert not verify_signoff(store, version_id)  # old code: True (only the recomputable hash was checked)
    assert "signature does not verify" in signoff_failure(store, version_id)
    report = check_integrity(store)
    assert not report.ok and report.broken == f"sign-off of report version {version_id}"

    summary = export_reports(store, sink=Sink("none"), fhir_out=tmp_path / "fhir")
    assert (summary.exported, summary.failed, summary.fhir_files) == (0, {"signature_invalid": 1}, [])
    assert not summary.ok
    with store.transaction() as s:
        refused = find_events(s, action="report.export", outcome="refused")
    assert [e.details["code"] for e in refused] == ["signature_invalid"]

    out = CliRunner().invoke(app, ["audit", "verify", "--db", f"sqlite:///{_sqlite_file(store)}"])
    assert out.exit_code == 1 and "BROKEN" in out.output and f"report version {version_id}" in out.output


def test_signing_without_a_key_is_refused_with_the_variable_named(store_url, monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV)
    with open_store(store_url) as store:
        version = create_version_from_draft(store, _draft(store))
        with pytest.raises(SigningKeyError, match=SIGNING_KEY_ENV):
            sign_version(store, version.id, signer="dr.a", role="radiologist")
        with pytest.raises(SigningKeyError, match=SIGNING_KEY_ENV):
            verify_signoff(store, version.id)
        assert list_versions(store, UID)[0].status == "draft"  # nothing was signed


def test_broken_head_never_stops_clinical_work(store_url):
    with open_store(store_url) as store:
        _draft(store)
        with store.transaction() as s:  # someone with the file knocks the head out of step
            for ddl in drop_audit_guard_ddl(store.dialect):
                s.execute(text(ddl))
            s.execute(text("UPDATE audit_head SET event_count = 2"))
    runner = CliRunner()
    out = runner.invoke(app, ["audit", "verify", "--db", store_url])
    # old code: IntegrityError traceback from the append after the check
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit), out.output
    assert "BROKEN" in out.output and "audit event 3" in out.output and "Traceback" not in out.output
    with open_store(store_url) as store:  # old code: every audited action failed from here on
        record_login(store, "dr.a", "radiologist")
        _draft(store, UID + "1")
        open_study(store, UID, actor="dr.a", role="radiologist")
        edit_report(store, UID, "Edited.", "Edited impression.", author="dr.a", role="radiologist")
        signed = sign_report(store, UID, signer="dr.a", role="radiologist")
        assert signed.status == "signed" and verify_signoff(store, signed.id)
        assert "alarm(s) recorded" in audit_alarm(store)
        from dashboard.logic.model import audit_alarm_for  # the Model page shows it to admins only

        assert audit_alarm_for(store, "admin") == audit_alarm(store) and audit_alarm_for(store, "radiologist") is None
    again = runner.invoke(app, ["audit", "verify", "--db", store_url])
    assert again.exit_code == 1 and "alarm" in again.output
