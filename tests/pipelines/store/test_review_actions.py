"""Study-level review actions: each checks its rules and writes in one transaction, or writes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from compliance.audit import read_events, verify_chain
from pipelines.store import reviews
from pipelines.store.jobs import DraftPayload, claim, complete, enqueue

UID = "1.2.826.0.1.3680043.8.498.7"


@pytest.fixture
def opened(store):
    """A store with one drafted study opened for review (version 1 from the draft)."""
    job_id = enqueue(store, UID, "m1", "p")
    claim(store, "w", 30)
    complete(store, job_id, "w", DraftPayload(findings="Heart normal. Lungs clear.", impression="No acute disease."))
    assert reviews.open_study(store, UID, actor="dr_a", role="radiologist")
    return store


def _snapshot(store) -> dict:
    """Every row an action may write, read with plain SQL (``read_events`` would itself append an event)."""
    queries = {
        "versions": "SELECT id, version, status, rejection_reason FROM report_versions ORDER BY id",
        "signoffs": "SELECT id, version_id FROM signoffs ORDER BY id",
        "study": "SELECT status FROM studies",
        "audit": "SELECT count(*) FROM audit_events",
    }
    with store.engine.connect() as conn:
        return {k: [tuple(r) for r in conn.execute(text(q))] for k, q in queries.items()}


def _actions():
    """Each action as ``(name, call(store, expected_version))``; every one would write when allowed."""
    return [
        ("edit", lambda st, ev: reviews.edit_report(st, UID, "Heart enlarged.", "Cardiomegaly.", author="dr_b",
                                                     role="resident", expected_version=ev)),
        ("sign", lambda st, ev: reviews.sign_report(st, UID, signer="dr_a", role="radiologist", expected_version=ev)),
        ("sign_text", lambda st, ev: reviews.sign_report(st, UID, signer="dr_a", role="radiologist",
                                                         expected_version=ev, findings="Heart enlarged.",
                                                         impression="Cardiomegaly.")),
        ("reject", lambda st, ev: reviews.reject_report(st, UID, "wrong side", actor="dr_b", role="resident",
                                                        expected_version=ev)),
    ]


@pytest.mark.parametrize(("name", "action"), _actions(), ids=[n for n, _ in _actions()])
def test_failing_audit_write_leaves_nothing_behind(opened, monkeypatch, name, action):
    """The study-level audit event is each action's last write: when it fails, the new version,
    the sign-off and the status changes written before it in the action are all rolled back."""
    before = _snapshot(opened)

    def broken_append(*_args, **_kwargs):
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(reviews, "append_event", broken_append)
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        action(opened, 1)
    assert _snapshot(opened) == before
    monkeypatch.undo()
    action(opened, 1)  # the same action succeeds once the audit log works
    assert _snapshot(opened) != before
    with opened.transaction() as s:
        assert verify_chain(s).ok


@pytest.mark.parametrize(("name", "action"), _actions(), ids=[n for n, _ in _actions()])
def test_stale_expected_version_is_refused_without_writing(opened, name, action):
    reviews.edit_report(opened, UID, "Small left effusion.", "Effusion.", author="dr_b", role="resident",
                        expected_version=1)
    before = _snapshot(opened)
    with pytest.raises(reviews.StaleVersionError, match="changed while you were reading"):
        action(opened, 1)
    assert _snapshot(opened) == before
    action(opened, 2)  # against the version now on screen it goes through


def test_sign_with_edited_text_saves_and_signs_the_new_version_together(opened):
    signed = reviews.sign_report(opened, UID, signer="dr_a", role="radiologist", expected_version=1,
                                 findings=" Heart enlarged. ", impression="Cardiomegaly.")
    assert (signed.version, signed.status, signed.author) == (2, "signed", "dr_a")
    assert signed.signoff.bound_hash == reviews.content_hash("Heart enlarged.", "Cardiomegaly.")
    assert [(v.version, v.status) for v in reviews.list_versions(opened, UID)] == [(1, "draft"), (2, "signed")]
    with pytest.raises(reviews.VersionLockedError, match="already signed"):
        reviews.sign_report(opened, UID, signer="dr_a", role="radiologist", expected_version=2)
    # Signing the unchanged text of a signed version is refused; an edit reopens the study.
    with pytest.raises(reviews.VersionLockedError):
        reviews.sign_report(opened, UID, signer="dr_a", role="radiologist", findings="Heart enlarged.",
                            impression="Cardiomegaly.")
    reviews.edit_report(opened, UID, "Heart enlarged.", "Cardiomegaly. Addendum.", author="dr_a",
                        role="radiologist")
    assert _snapshot(opened)["study"] == [("drafted",)]


def test_role_refusal_is_audited_and_saves_nothing(opened):
    before = _snapshot(opened)
    with pytest.raises(reviews.SignatureRoleError, match="only radiologists"):
        reviews.sign_report(opened, UID, signer="dr_b", role="resident", findings="Edited.", impression="x")
    after = _snapshot(opened)
    assert after["versions"] == before["versions"] and after["signoffs"] == before["signoffs"]
    assert after["audit"][0][0] == before["audit"][0][0] + 1  # only the refusal
    with opened.transaction() as s:
        refused = [e for e in read_events(s, actor="auditor") if e.outcome == "refused"]
    assert [(e.action, e.actor, e.details["role"]) for e in refused] == [("study.sign", "dr_b", "resident")]
    assert UID not in refused[0].object_id  # the study is named by its pseudonym


def test_refusals_that_write_nothing(opened):
    before = _snapshot(opened)
    with pytest.raises(reviews.ReviewError, match="nothing changed"):
        reviews.edit_report(opened, UID, " Heart normal. Lungs clear.", "No acute disease.", author="dr_b",
                            role="resident")
    with pytest.raises(reviews.ReviewError, match="needs findings or impression"):
        reviews.edit_report(opened, UID, " ", "", author="dr_b", role="resident")
    with pytest.raises(reviews.ReviewError, match="reason"):
        reviews.reject_report(opened, UID, "  ", actor="dr_b", role="resident")
    with pytest.raises(reviews.ReviewError, match="no report version yet"):
        reviews.edit_report(opened, "1.2.3", "a", "b", author="dr_b", role="resident")
    with pytest.raises(reviews.StudyNotFoundError):
        reviews.open_study(opened, "1.2.3", actor="dr_b", role="resident")
    assert _snapshot(opened) == before
    reviews.reject_report(opened, UID, "wrong side", actor="dr_b", role="resident", expected_version=1)
    with pytest.raises(reviews.VersionLockedError, match="cannot be rejected"):
        reviews.reject_report(opened, UID, "again", actor="dr_b", role="resident")


def test_open_study_creates_the_first_version_once_and_audits_each_view(opened):
    assert not reviews.open_study(opened, UID, actor="dr_b", role="resident")
    (v1,) = reviews.list_versions(opened, UID)
    assert (v1.version, v1.author, v1.findings) == (1, "medvlm:m1", "Heart normal. Lungs clear.")
    with opened.transaction() as s:
        opens = [e for e in read_events(s, actor="auditor") if e.action == "study.open"]
    assert [(e.actor, e.details) for e in opens] == [
        ("dr_a", {"role": "radiologist", "first_version_created": True}),
        ("dr_b", {"role": "resident", "first_version_created": False}),
    ]
