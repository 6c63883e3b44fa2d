"""Review store: migrations match the models, SQLite settings, report versions and sign-off."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from compliance.audit import read_events, verify_chain
from pipelines.store import open_store
from pipelines.store.db import resolve_database_url
from pipelines.store.jobs import DraftPayload, claim, complete, enqueue
from pipelines.store.models import Base
from pipelines.store.questions import add_feedback, ask_question, list_questions
from pipelines.store.reviews import (
    ReviewError,
    SignatureRoleError,
    VersionLockedError,
    content_hash,
    create_version_from_draft,
    diff_versions,
    edit_version,
    list_versions,
    reject_version,
    sign_version,
    verify_signoff,
)

UID = "1.2.826.0.1.3680043.8.498.1"


def _drafted(store) -> int:
    job_id = enqueue(store, UID, "m1", "p")
    claim(store, "w", 30)
    complete(
        store,
        job_id,
        "w",
        DraftPayload(findings="Heart normal.\nLungs clear.", impression="No acute disease."),
    )
    return job_id


def test_migrated_schema_matches_models(store):
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    with store.engine.connect() as conn:
        from alembic.script import ScriptDirectory

        from pipelines.store.db import MIGRATIONS_DIR

        head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head


def test_sqlite_pragmas(tmp_path):
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA recursive_triggers").scalar() == 1  # REPLACE meets DELETE guards


def test_default_url_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDVLM_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert resolve_database_url(None).endswith("env.db")
    assert resolve_database_url("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.delenv("MEDVLM_DATABASE_URL")
    monkeypatch.chdir(tmp_path)
    assert resolve_database_url(None) == "sqlite:///var/medvlm.db"


def test_reopen_is_idempotent(store_url):
    for _ in range(2):
        with open_store(store_url) as s, s.transaction() as session:
            assert verify_chain(session).ok


def test_review_flow_versions_sign_and_diff(store):
    job_id = _drafted(store)
    v1 = create_version_from_draft(store, job_id)
    assert create_version_from_draft(store, job_id).id == v1.id  # idempotent
    assert (v1.version, v1.status, v1.parent_id) == (1, "draft", None)
    assert v1.content_hash == content_hash(v1.findings, v1.impression)
    v2 = edit_version(
        store, v1.id, findings="Heart normal.\nSmall left effusion.", impression="Effusion.", author="dr_a"
    )
    assert (v2.version, v2.parent_id) == (2, v1.id)
    assert "+Small left effusion." in diff_versions(v1, v2) and "-Lungs clear." in diff_versions(v1, v2)
    with pytest.raises(SignatureRoleError):
        sign_version(store, v2.id, signer="tech_b", role="technologist")
    with pytest.raises(VersionLockedError):  # not the latest
        sign_version(store, v1.id, signer="dr_a", role="radiologist")
    sig = sign_version(store, v2.id, signer="dr_a", role="radiologist")
    assert sig.bound_hash == v2.content_hash and verify_signoff(store, v2.id)
    with pytest.raises(VersionLockedError):
        sign_version(store, v2.id, signer="dr_a", role="radiologist")
    v3 = edit_version(store, v2.id, findings="Heart normal.", impression="Addendum.", author="dr_a")
    assert (v3.version, v3.status, v3.parent_id) == (3, "draft", v2.id)
    versions = list_versions(store, UID)
    assert [v.status for v in versions] == ["draft", "signed", "draft"]
    assert versions[1].signoff is not None and versions[1].signoff.signer == "dr_a"
    rejected = reject_version(store, v3.id, actor="dr_a", reason="wrong study")
    assert rejected.status == "rejected" and rejected.rejection_reason == "wrong study"
    with pytest.raises(VersionLockedError):
        reject_version(store, v3.id, actor="dr_a", reason="again")
    with pytest.raises(ReviewError):
        edit_version(store, 9999, findings="x", impression="y", author="dr_a")
    with store.transaction() as s:
        assert verify_chain(s).ok
        actions = [(e.action, e.outcome) for e in read_events(s, actor="auditor")]
    assert ("version.sign", "refused") in actions and ("version.sign", "ok") in actions
    assert ("version.reject", "ok") in actions


def test_database_refuses_changing_a_signed_version(store):
    job_id = _drafted(store)
    v1 = create_version_from_draft(store, job_id)
    sign_version(store, v1.id, signer="dr_a", role="radiologist")
    for stmt in (
        "UPDATE report_versions SET findings = 'forged' WHERE id = :i",
        "UPDATE report_versions SET status = 'draft' WHERE id = :i",
        "DELETE FROM report_versions WHERE id = :i",
        "UPDATE signoffs SET bound_hash = 'x' WHERE version_id = :i",
    ):
        with pytest.raises(DBAPIError), store.transaction() as s:
            s.execute(text(stmt), {"i": v1.id})
    assert verify_signoff(store, v1.id)


def test_unsigned_version_content_is_immutable_too(store):
    v1 = create_version_from_draft(store, _drafted(store))
    with pytest.raises(DBAPIError), store.transaction() as s:
        s.execute(text("UPDATE report_versions SET impression = 'changed' WHERE id = :i"), {"i": v1.id})


def test_questions_and_feedback_are_stored_and_audited(store):
    _drafted(store)
    qid = ask_question(
        store, UID, user="dr_a", question="Is there an effusion?", answer="No.", model_version="m1"
    )
    fid = add_feedback(store, UID, user="dr_a", kind="wrong_laterality", text="left, not right")
    assert qid > 0 and fid > 0
    assert list_questions(store, UID) == [("dr_a", "Is there an effusion?", "No.")]
    with store.transaction() as s:
        events = read_events(s, actor="auditor")
    ask = [e for e in events if e.action == "question.ask"]
    assert len(ask) == 1 and ask[0].object_id == store.pseudonym(UID) and UID not in str(ask[0])
    assert "Is there an effusion" not in str(events)  # question text stays out of the audit log
