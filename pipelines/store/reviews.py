"""Review actions on a study as a reader does them: open, edit, sign, reject.

Each action checks its rules (the role may sign, the version the reader saw is still the latest,
the version is not locked, the text changed, a reason is given) and writes everything it changes
(new version, sign-off, statuses, audit events) in ONE transaction: a refused or failed action
leaves nothing behind, except that a refused signature is itself audited (outcome ``refused``).
The study row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
already serialises writers), so two readers acting on one study at once are ordered, and the later
one sees the earlier one's version and is refused as stale.

Every action writes two audit events: the version-level one (``version.edit``, ``version.sign``,
...) from ``pipelines.store.versions``, and a study-level one (``study.edit``, ``study.sign``, ...)
with the reader's role, naming the study by its pseudonym.

The version-level API (``edit_version``, ``sign_version``, ``list_versions``, ...) lives in
``pipelines.store.versions`` and is re-exported here for its callers (drafting job, exports).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from compliance.audit import append_event
from pipelines.store.db import Store
from pipelines.store.models import DraftRecord, JobRecord, ReportVersion, StudyRecord
from pipelines.store.study_detail import StudyNotFoundError
from pipelines.store.versions import (
    SIGNER_ROLE,
    ReviewError,
    SignatureRoleError,
    SigningKeyError,
    SignoffInfo,
    StaleVersionError,
    VersionInfo,
    VersionLockedError,
    add_version_row,
    audit_version,
    content_hash,
    create_version_from_draft,
    diff_versions,
    edit_version,
    info_in,
    latest_row,
    list_versions,
    reject_row,
    reject_version,
    sign_row,
    sign_version,
    signoff_failure,
    verify_signoff,
    version_info,
    version_row_from_draft,
)

__all__ = [
    "SIGNER_ROLE", "ReviewError", "SignatureRoleError", "SigningKeyError", "SignoffInfo", "StaleVersionError", "StudyNotFoundError",
    "VersionInfo", "VersionLockedError", "content_hash", "create_version_from_draft", "diff_versions",
    "edit_report", "edit_version", "list_versions", "open_study", "reject_report", "reject_version",
    "sign_report", "sign_version", "signoff_failure", "verify_signoff", "version_info",
]


def _study_event(store: Store, session: Session, actor: str, role: str, action: str, study_uid: str, *,
                 outcome: str = "ok", **details: object) -> None:
    append_event(session, actor=actor, action=action, object_type="study", object_id=store.pseudonym(study_uid),
                 outcome=outcome, details={"role": role, **details})


def _lock_study(session: Session, study_uid: str) -> StudyRecord | None:
    return session.scalar(select(StudyRecord).where(StudyRecord.study_uid == study_uid).with_for_update())


def _current(session: Session, study_uid: str, expected_version: int | None) -> ReportVersion:
    """The study's latest version, which must be the one the reader saw (``expected_version``)."""
    latest = latest_row(session, study_uid)
    if latest is None:
        raise ReviewError("this study has no report version yet; open it first")
    if expected_version is not None and latest.version != expected_version:
        raise StaleVersionError(f"the report changed while you were reading it (now version {latest.version}); "
                                "reload the study")
    return latest


def _edit_row(store: Store, session: Session, parent: ReportVersion, findings: str, impression: str, *,
              author: str, role: str) -> ReportVersion:
    """Add the edited text as a new unsigned child of ``parent``; an edit of a signed report reopens the study."""
    if not (findings or impression):
        raise ReviewError("an edit needs findings or impression text")
    row = add_version_row(session, parent.study_uid, findings, impression, author, parent.id, None)
    audit_version(session, author, "version.edit", row.id, parent_id=parent.id, version=row.version)
    if parent.status == "signed":  # an addendum-like edit reopens the study for sign-off
        session.execute(StudyRecord.__table__.update().where(StudyRecord.study_uid == parent.study_uid)
                        .values(status="drafted"))
    _study_event(store, session, author, role, "study.edit", parent.study_uid, version=row.version,
                 parent_version=parent.version)
    return row


def open_study(store: Store, study_uid: str, *, actor: str, role: str) -> bool:
    """Open a study for review: create version 1 from its latest draft if it has no version; audit the view.

    Args:
        store: the review store.
        study_uid: the study.
        actor: who opens it.
        role: their role (kept in the audit event).

    Returns:
        True when this call created the first version.

    Raises:
        StudyNotFoundError: no such study.
    """
    with store.transaction() as session:
        if _lock_study(session, study_uid) is None:
            raise StudyNotFoundError("study not found in the review store")
        created = False
        if latest_row(session, study_uid) is None:
            draft = session.scalar(
                select(DraftRecord).join(JobRecord, DraftRecord.job_id == JobRecord.id)
                .where(JobRecord.study_uid == study_uid).order_by(DraftRecord.id.desc()).limit(1)
            )
            if draft is not None:
                version_row_from_draft(session, draft, author=f"medvlm:{draft.model_version}")
                created = True
        _study_event(store, session, actor, role, "study.open", study_uid, first_version_created=created)
        return created


def edit_report(store: Store, study_uid: str, findings: str, impression: str, *, author: str, role: str,
                expected_version: int | None = None) -> VersionInfo:
    """Save an edit of the study's latest version as a new unsigned version (any role may edit).

    Args:
        store: the review store.
        study_uid: the study.
        findings: new FINDINGS text (surrounding blanks dropped).
        impression: new IMPRESSION text (surrounding blanks dropped).
        author: the editor.
        role: the editor's role (kept in the audit event).
        expected_version: the version the editor started from; None skips the check.

    Returns:
        The new version.

    Raises:
        StaleVersionError: the latest version is no longer ``expected_version``.
        ReviewError: no version yet, the text is unchanged, or both sections are empty.
    """
    findings, impression = findings.strip(), impression.strip()
    with store.transaction() as session:
        _lock_study(session, study_uid)
        latest = _current(session, study_uid, expected_version)
        if content_hash(findings, impression) == latest.content_hash:
            raise ReviewError(f"nothing changed: the text is the same as version {latest.version}")
        return info_in(session, _edit_row(store, session, latest, findings, impression, author=author, role=role))


def sign_report(store: Store, study_uid: str, *, signer: str, role: str, meaning: str = "approved",
                expected_version: int | None = None, findings: str | None = None,
                impression: str | None = None) -> VersionInfo:
    """Sign the study's latest version; with ``findings``/``impression``, sign exactly that text.

    When text is given and differs from the latest version, it is saved as a new version first and
    that version is signed, in the same transaction (what the signer saw is what is signed).

    Args:
        store: the review store.
        study_uid: the study.
        signer: who signs.
        role: the signer's role; only ``radiologist`` may sign (checked before anything else).
        meaning: what the signature means.
        expected_version: the version the signer read; None skips the check.
        findings: the FINDINGS text on screen, or None to sign the latest version as stored.
        impression: the IMPRESSION text on screen (given together with ``findings``).

    Returns:
        The signed version with its sign-off.

    Raises:
        SignatureRoleError: the role may not sign (audited as refused; nothing else is written).
        StaleVersionError: the latest version is no longer ``expected_version``.
        VersionLockedError: the version to sign is already signed or rejected.
        ReviewError: no version yet, or the stored content no longer matches its hash.
    """
    with store.transaction() as session:
        if role != SIGNER_ROLE:
            _study_event(store, session, signer, role, "study.sign", study_uid, outcome="refused",
                         reason="role may not sign")
            refusal = SignatureRoleError(f"only radiologists can sign reports; you are signed in as {role}")
        else:
            _lock_study(session, study_uid)
            row = _current(session, study_uid, expected_version)
            if findings is not None and impression is not None:
                text = (findings.strip(), impression.strip())
                if content_hash(*text) != row.content_hash:
                    row = _edit_row(store, session, row, *text, author=signer, role=role)
            if row.status != "draft":
                raise VersionLockedError(f"version {row.version} is already {row.status}; "
                                         "edit it to make a new version")
            sig = sign_row(session, row, signer=signer, role=role, meaning=meaning)
            _study_event(store, session, signer, role, "study.sign", study_uid, version=row.version)
            return version_info(row, sig)
    raise refusal  # after the transaction: the refusal's audit event is committed


def reject_report(store: Store, study_uid: str, reason: str, *, actor: str, role: str,
                  expected_version: int | None = None) -> VersionInfo:
    """Reject the study's latest version with a reason (kept with the version, never in the audit log).

    Args:
        store: the review store.
        study_uid: the study.
        reason: why (required).
        actor: who rejects (any role).
        role: their role (kept in the audit event).
        expected_version: the version the reader saw; None skips the check.

    Returns:
        The rejected version.

    Raises:
        StaleVersionError: the latest version is no longer ``expected_version``.
        VersionLockedError: it is already signed or rejected.
        ReviewError: empty reason, or no version yet.
    """
    reason = reason.strip()
    if not reason:
        raise ReviewError("give a reason for the rejection")
    with store.transaction() as session:
        _lock_study(session, study_uid)
        row = _current(session, study_uid, expected_version)
        reject_row(session, row, actor=actor, reason=reason)
        _study_event(store, session, actor, role, "study.reject", study_uid, version=row.version,
                     reason_chars=len(reason))
        return info_in(session, row)
