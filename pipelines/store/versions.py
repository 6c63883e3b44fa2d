"""Report versions and sign-offs: the detached records, the per-version writes, and reads.

A report version is immutable: an edit creates a child version (``parent_id``) with the next
version number, whether the parent was unsigned, signed or rejected. Only a ``radiologist`` can
sign; the sign-off stores ``bound_hash`` = the version's ``content_hash`` (sha256 of the canonical
JSON of findings and impression) and a keyed ``signature`` (``pipelines.store.signatures``; no
signing without ``$MEDVLM_SIGNING_KEY``), and the database refuses any later change to a signed
version or a sign-off, ``INSERT OR REPLACE`` included (triggers from the migrations). Every write appends an audit event in the same
transaction; refused signatures are audited too (outcome ``refused``) before the error is raised.

The ``*_row`` helpers work inside a caller's session, so ``pipelines.store.reviews`` can check a
reader's action and write it in one transaction with them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from compliance.audit import KEY_INFO, SIGNING_KEY_ENV, append_event
from compliance.clock import as_utc, utcnow
from pipelines.errors import PipelineError
from pipelines.store.db import Store
from pipelines.store.models import DraftRecord, JobRecord, ReportVersion, Signoff, StudyRecord
from pipelines.store.signatures import content_hash, signature_of, signoff_problem

SIGNER_ROLE = "radiologist"


class ReviewError(PipelineError, RuntimeError):
    """A review operation cannot be done (unknown study or version, nothing changed, empty text)."""


class SignatureRoleError(ReviewError):
    """Only a radiologist may sign a report version."""


class VersionLockedError(ReviewError):
    """The version is signed or rejected (or a newer version exists): edit to create a new one."""


class StaleVersionError(ReviewError):
    """The report changed after the reader loaded it (the expected version is no longer the latest)."""


class SigningKeyError(ReviewError):
    """No signing key is configured, so a report can be neither signed nor its signature checked."""

    def __init__(self) -> None:
        super().__init__(f"reports cannot be signed or checked: ${SIGNING_KEY_ENV} is not set on this server; "
                         "ask the administrator to set it (the same secret for every process of this store)")


def _key(session: Session) -> bytes:
    key = session.info.get(KEY_INFO)
    if key is None:
        raise SigningKeyError()
    return key


@dataclass(frozen=True)
class SignoffInfo:
    """A sign-off bound to a version's content.

    Attributes:
        id: sign-off id.
        version_id: the signed version.
        signer: who signed.
        role: the signer's role (always ``radiologist``).
        signed_at: when (UTC).
        meaning: what the signature means (``approved``).
        bound_hash: the ``content_hash`` of the version at signing.
    """

    id: int
    version_id: int
    signer: str
    role: str
    signed_at: datetime
    meaning: str
    bound_hash: str


@dataclass(frozen=True)
class VersionInfo:
    """One report version, detached from the database.

    Attributes:
        id: version row id.
        study_uid: the study.
        version: 1, 2, ... per study.
        findings: findings text.
        impression: impression text.
        author: who wrote this version (the model name for version 1 from a draft).
        created_at: when (UTC).
        parent_id: the version it was edited from; None for the first.
        content_hash: sha256 of the canonical content.
        status: ``draft``, ``signed`` or ``rejected``.
        rejection_reason: why it was rejected, if it was.
        signoff: the sign-off when signed.
    """

    id: int
    study_uid: str
    version: int
    findings: str
    impression: str
    author: str
    created_at: datetime
    parent_id: int | None
    content_hash: str
    status: str
    rejection_reason: str | None
    signoff: SignoffInfo | None = None


def _signoff_info(row: Signoff) -> SignoffInfo:
    return SignoffInfo(row.id, row.version_id, row.signer, row.role, as_utc(row.signed_at), row.meaning,
                       row.bound_hash)


def version_info(row: ReportVersion, signoff: Signoff | None = None) -> VersionInfo:
    """Detach a version row (and its sign-off row, if signed) as a ``VersionInfo``; times in UTC.

    Args:
        row: the ``report_versions`` row.
        signoff: its ``signoffs`` row, or None when it is not signed.

    Returns:
        The detached version.
    """
    return VersionInfo(
        id=row.id, study_uid=row.study_uid, version=row.version, findings=row.findings,
        impression=row.impression, author=row.author, created_at=as_utc(row.created_at),
        parent_id=row.parent_id, content_hash=row.content_hash, status=row.status,
        rejection_reason=row.rejection_reason,
        signoff=_signoff_info(signoff) if signoff is not None else None,
    )


def info_in(session: Session, row: ReportVersion) -> VersionInfo:
    """``version_info`` of a row, looking up its sign-off in ``session``."""
    return version_info(row, session.scalar(select(Signoff).where(Signoff.version_id == row.id)))


def audit_version(session: Session, actor: str, action: str, row_id: int, outcome: str = "ok",
                  **details: object) -> None:
    """Append a ``report_version`` audit event in the caller's transaction."""
    append_event(session, actor=actor, action=action, object_type="report_version", object_id=str(row_id),
                 outcome=outcome, details=details)


def latest_row(session: Session, study_uid: str) -> ReportVersion | None:
    """The study's newest version row, or None before any."""
    return session.scalar(
        select(ReportVersion).where(ReportVersion.study_uid == study_uid)
        .order_by(ReportVersion.version.desc()).limit(1)
    )


def add_version_row(session: Session, study_uid: str, findings: str, impression: str, author: str,
                    parent_id: int | None, draft_id: int | None) -> ReportVersion:
    """Insert the study's next version (unsigned) and flush it so it has an id."""
    number = (session.scalar(select(func.max(ReportVersion.version)).where(ReportVersion.study_uid == study_uid))
              or 0) + 1
    row = ReportVersion(
        study_uid=study_uid, version=number, findings=findings, impression=impression, author=author,
        created_at=utcnow(), parent_id=parent_id, draft_id=draft_id,
        content_hash=content_hash(findings, impression), status="draft",
    )
    session.add(row)
    session.flush()
    return row


def sign_row(session: Session, row: ReportVersion, *, signer: str, role: str, meaning: str) -> Signoff:
    """Write the sign-off of an unsigned version, mark it and its study signed, audit ``version.sign``.

    The caller has checked the role and that ``row`` is the study's latest unsigned version.

    Raises:
        SigningKeyError: no signing key is configured.
        ReviewError: the version's stored content no longer matches its hash.
    """
    key = _key(session)
    if content_hash(row.findings, row.impression) != row.content_hash:
        raise ReviewError(f"version {row.version}: content does not match its hash; refusing to sign")
    sig = Signoff(version_id=row.id, signer=signer, role=role, signed_at=utcnow(), meaning=meaning,
                  bound_hash=row.content_hash)
    sig.signature = signature_of(key, row, sig)
    session.add(sig)
    row.status = "signed"
    session.flush()
    session.execute(StudyRecord.__table__.update().where(StudyRecord.study_uid == row.study_uid)
                    .values(status="signed"))
    audit_version(session, signer, "version.sign", row.id, meaning=meaning, bound_hash=row.content_hash)
    return sig


def reject_row(session: Session, row: ReportVersion, *, actor: str, reason: str) -> None:
    """Mark an unsigned version rejected with its reason (stored, never audited); audit ``version.reject``.

    Raises:
        VersionLockedError: the version is already signed or rejected.
    """
    if row.status != "draft":
        raise VersionLockedError(f"version {row.version} is {row.status}; it cannot be rejected")
    row.status, row.rejection_reason = "rejected", reason[:1024]
    session.flush()
    audit_version(session, actor, "version.reject", row.id)


def create_version_from_draft(store: Store, job_id: int, *, author: str = "medvlm") -> VersionInfo:
    """Create the next version of a study's report from a job's draft (idempotent per draft).

    Args:
        store: the open store.
        job_id: the completed job whose draft to use.
        author: recorded author of the machine draft.

    Returns:
        The version (the existing one when this draft already has a version).

    Raises:
        ReviewError: the job has no draft.
    """
    with store.transaction() as session:
        draft = session.scalar(select(DraftRecord).where(DraftRecord.job_id == job_id))
        if draft is None:
            raise ReviewError(f"job {job_id} has no draft")
        return info_in(session, version_row_from_draft(session, draft, author=author))


def version_row_from_draft(session: Session, draft: DraftRecord, *, author: str) -> ReportVersion:
    """The version row of ``draft``, created (and audited ``version.create``) when it has none yet."""
    existing = session.scalar(select(ReportVersion).where(ReportVersion.draft_id == draft.id))
    if existing is not None:
        return existing
    study_uid = session.scalar(select(JobRecord.study_uid).where(JobRecord.id == draft.job_id))
    parent = latest_row(session, study_uid)
    row = add_version_row(session, study_uid, draft.findings, draft.impression, author,
                          parent.id if parent else None, draft.id)
    audit_version(session, author, "version.create", row.id, draft_id=draft.id, version=row.version)
    return row


def edit_version(store: Store, parent_id: int, *, findings: str, impression: str, author: str) -> VersionInfo:
    """Create a new unsigned version from an edit of ``parent_id`` (signed parents stay as they are).

    Raises:
        ReviewError: unknown parent or both sections empty.
    """
    if not (findings.strip() or impression.strip()):
        raise ReviewError("an edit needs findings or impression text")
    with store.transaction() as session:
        parent = session.get(ReportVersion, parent_id)
        if parent is None:
            raise ReviewError(f"no report version with id {parent_id}")
        row = add_version_row(session, parent.study_uid, findings, impression, author, parent.id, None)
        audit_version(session, author, "version.edit", row.id, parent_id=parent.id, version=row.version)
        return info_in(session, row)


def sign_version(store: Store, version_id: int, *, signer: str, role: str, meaning: str = "approved") -> SignoffInfo:
    """Sign a version: bind a sign-off to its content hash and mark it signed (immutable from then).

    Args:
        store: the open store.
        version_id: the version to sign; it must be the study's latest and unsigned.
        signer: who signs.
        role: the signer's role; only ``radiologist`` may sign.
        meaning: what the signature means.

    Returns:
        The sign-off.

    Raises:
        SignatureRoleError: the role is not radiologist (the refusal is audited).
        VersionLockedError: the version is signed, rejected or not the latest (audited).
        ReviewError: unknown version, or its stored content no longer matches its hash.
    """
    refusal: ReviewError | None = None
    with store.transaction() as session:
        row = session.get(ReportVersion, version_id, with_for_update=True)
        if row is None:
            raise ReviewError(f"no report version with id {version_id}")
        latest = latest_row(session, row.study_uid)
        if role != SIGNER_ROLE:
            refusal = SignatureRoleError(f"only radiologists can sign reports; you are signed in as {role}")
        elif row.status != "draft":
            refusal = VersionLockedError(f"version {row.version} is already {row.status}; "
                                         "edit it to make a new version")
        elif latest is not None and latest.id != row.id:
            refusal = VersionLockedError(f"version {row.version} is not the latest (version {latest.version} is)")
        if refusal is None:
            return _signoff_info(sign_row(session, row, signer=signer, role=role, meaning=meaning))
        # The refusal is committed with this transaction; the error is raised once it has ended.
        audit_version(session, signer, "version.sign", row.id, "refused", reason=type(refusal).__name__)
    raise refusal


def reject_version(store: Store, version_id: int, *, actor: str, reason: str) -> VersionInfo:
    """Reject an unsigned version with a reason (the reason text is stored, not audited).

    Raises:
        VersionLockedError: the version is already signed or rejected.
        ReviewError: unknown version or empty reason.
    """
    if not reason.strip():
        raise ReviewError("a rejection needs a reason")
    with store.transaction() as session:
        row = session.get(ReportVersion, version_id, with_for_update=True)
        if row is None:
            raise ReviewError(f"no report version with id {version_id}")
        reject_row(session, row, actor=actor, reason=reason)
        return info_in(session, row)


def list_versions(store: Store, study_uid: str) -> list[VersionInfo]:
    """Return every version of a study's report, oldest first."""
    with store.transaction() as session:
        rows = session.execute(
            select(ReportVersion, Signoff).outerjoin(Signoff, Signoff.version_id == ReportVersion.id)
            .where(ReportVersion.study_uid == study_uid).order_by(ReportVersion.version)
        ).all()
        return [version_info(v, s) for v, s in rows]


def signoff_failure(store: Store, version_id: int) -> str | None:
    """Why a version's sign-off does not verify (None when it does): text, bound hash and keyed signature.

    Raises:
        SigningKeyError: no signing key is configured.
    """
    with store.transaction() as session:
        key = _key(session)
        row = session.get(ReportVersion, version_id)
        sig = session.scalar(select(Signoff).where(Signoff.version_id == version_id))
        return signoff_problem(key, row, sig, content_hash(row.findings, row.impression) if row else None)


def verify_signoff(store: Store, version_id: int) -> bool:
    """True when the version is signed, its text still hashes to the bound hash and its signature verifies.

    Raises:
        SigningKeyError: no signing key is configured.
    """
    return signoff_failure(store, version_id) is None


def diff_versions(old: VersionInfo, new: VersionInfo) -> str:
    """Return a unified diff (difflib) of two versions' findings and impression."""

    def lines(v: VersionInfo) -> list[str]:
        return ["FINDINGS:", *v.findings.splitlines(), "IMPRESSION:", *v.impression.splitlines()]

    return "\n".join(difflib.unified_diff(lines(old), lines(new), f"version {old.version}",
                                          f"version {new.version}", lineterm=""))
