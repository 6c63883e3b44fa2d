"""Review operations: report versions from drafts, edits, sign-off, rejection, questions, feedback.

A report version is immutable: an edit creates a child version (``parent_id``) with the next
version number, whether the parent was unsigned, signed or rejected. Only a ``radiologist`` can
sign; the sign-off stores ``bound_hash`` = the version's ``content_hash`` (sha256 of the canonical
JSON of findings and impression), and the database refuses any later change to a signed version
or a sign-off (triggers from the migration). Every operation appends an audit event in the same
transaction; refused operations are audited too (outcome ``refused``) before the error is raised.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from compliance.audit import append_event
from compliance.clock import as_utc
from pipelines.errors import PipelineError
from pipelines.store.db import Store
from pipelines.store.models import (
    DraftRecord,
    Feedback,
    JobRecord,
    Question,
    ReportVersion,
    Signoff,
    StudyRecord,
    utcnow,
)

SIGNER_ROLE = "radiologist"


class ReviewError(PipelineError, RuntimeError):
    """A review operation cannot be done (unknown version or draft, empty text)."""


class SignatureRoleError(ReviewError):
    """Only a radiologist may sign a report version."""


class VersionLockedError(ReviewError):
    """The version is signed or rejected (or a newer version exists): edit to create a new one."""


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


def content_hash(findings: str, impression: str) -> str:
    """Return sha256 hex of the canonical JSON ``{"findings": ..., "impression": ...}``."""
    canonical = json.dumps(
        {"findings": findings, "impression": impression}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()



def _signoff_info(row: Signoff) -> SignoffInfo:
    return SignoffInfo(
        row.id, row.version_id, row.signer, row.role, as_utc(row.signed_at), row.meaning, row.bound_hash
    )


def _info(session: Session, row: ReportVersion) -> VersionInfo:
    return version_info(row, session.scalar(select(Signoff).where(Signoff.version_id == row.id)))


def version_info(row: ReportVersion, signoff: Signoff | None = None) -> VersionInfo:
    """Detach a version row (and its sign-off row, if signed) as a ``VersionInfo``; times in UTC.

    Args:
        row: the ``report_versions`` row.
        signoff: its ``signoffs`` row, or None when it is not signed.

    Returns:
        The detached version.
    """
    return VersionInfo(
        id=row.id,
        study_uid=row.study_uid,
        version=row.version,
        findings=row.findings,
        impression=row.impression,
        author=row.author,
        created_at=as_utc(row.created_at),
        parent_id=row.parent_id,
        content_hash=row.content_hash,
        status=row.status,
        rejection_reason=row.rejection_reason,
        signoff=_signoff_info(signoff) if signoff is not None else None,
    )


def _audit(
    store: Store, session: Session, actor: str, action: str, row_id: int, outcome: str = "ok", **details
):
    append_event(
        session,
        actor=actor,
        action=action,
        object_type="report_version",
        object_id=str(row_id),
        outcome=outcome,
        details=details,
    )


def _latest(session: Session, study_uid: str) -> ReportVersion | None:
    return session.scalar(
        select(ReportVersion)
        .where(ReportVersion.study_uid == study_uid)
        .order_by(ReportVersion.version.desc())
        .limit(1)
    )


def _new_version(
    session: Session,
    study_uid: str,
    findings: str,
    impression: str,
    author: str,
    parent_id: int | None,
    draft_id: int | None,
) -> ReportVersion:
    number = (
        session.scalar(select(func.max(ReportVersion.version)).where(ReportVersion.study_uid == study_uid))
        or 0
    ) + 1
    row = ReportVersion(
        study_uid=study_uid,
        version=number,
        findings=findings,
        impression=impression,
        author=author,
        created_at=utcnow(),
        parent_id=parent_id,
        draft_id=draft_id,
        content_hash=content_hash(findings, impression),
        status="draft",
    )
    session.add(row)
    session.flush()
    return row


def create_version_from_draft(store: Store, job_id: int, *, author: str = "medvlm") -> VersionInfo:
    """Create version 1 of a study's report from a job's draft (idempotent per draft).

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
        existing = session.scalar(select(ReportVersion).where(ReportVersion.draft_id == draft.id))
        if existing is not None:
            return _info(session, existing)
        job = session.get(JobRecord, job_id)
        parent = _latest(session, job.study_uid)
        row = _new_version(
            session,
            job.study_uid,
            draft.findings,
            draft.impression,
            author,
            parent.id if parent else None,
            draft.id,
        )
        _audit(store, session, author, "version.create", row.id, draft_id=draft.id, version=row.version)
        return _info(session, row)


def edit_version(store: Store, parent_id: int, *, findings: str, impression: str, author: str) -> VersionInfo:
    """Create a new unsigned version from an edit of ``parent_id`` (signed parents stay as they are).

    Args:
        store: the open store.
        parent_id: the version being edited.
        findings: the edited findings.
        impression: the edited impression.
        author: who edited.

    Returns:
        The new version.

    Raises:
        ReviewError: unknown parent or both sections empty.
    """
    if not (findings.strip() or impression.strip()):
        raise ReviewError("an edit needs findings or impression text")
    with store.transaction() as session:
        parent = session.get(ReportVersion, parent_id)
        if parent is None:
            raise ReviewError(f"no report version with id {parent_id}")
        row = _new_version(session, parent.study_uid, findings, impression, author, parent.id, None)
        _audit(store, session, author, "version.edit", row.id, parent_id=parent.id, version=row.version)
        return _info(session, row)


def sign_version(
    store: Store, version_id: int, *, signer: str, role: str, meaning: str = "approved"
) -> SignoffInfo:
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
        latest = _latest(session, row.study_uid)
        if role != SIGNER_ROLE:
            refusal = SignatureRoleError(f"role {role!r} cannot sign; only {SIGNER_ROLE!r} can")
        elif row.status != "draft":
            refusal = VersionLockedError(
                f"version {version_id} is {row.status}; edit it to create a new version"
            )
        elif latest is not None and latest.id != row.id:
            refusal = VersionLockedError(
                f"version {version_id} is not the latest (version {latest.version} is)"
            )
        elif content_hash(row.findings, row.impression) != row.content_hash:
            raise ReviewError(f"version {version_id}: content does not match its hash; refusing to sign")
        if refusal is not None:
            _audit(store, session, signer, "version.sign", row.id, "refused", reason=type(refusal).__name__)
        else:
            sig = Signoff(
                version_id=row.id,
                signer=signer,
                role=role,
                signed_at=utcnow(),
                meaning=meaning,
                bound_hash=row.content_hash,
            )
            session.add(sig)
            row.status = "signed"
            session.flush()
            session.execute(
                StudyRecord.__table__.update()
                .where(StudyRecord.study_uid == row.study_uid)
                .values(status="signed")
            )
            _audit(
                store, session, signer, "version.sign", row.id, meaning=meaning, bound_hash=row.content_hash
            )
            return _signoff_info(sig)
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
        if row.status != "draft":
            raise VersionLockedError(f"version {version_id} is {row.status}; it cannot be rejected")
        row.status, row.rejection_reason = "rejected", reason[:1024]
        session.flush()
        _audit(store, session, actor, "version.reject", row.id)
        return _info(session, row)


def list_versions(store: Store, study_uid: str) -> list[VersionInfo]:
    """Return every version of a study's report, oldest first."""
    with store.transaction() as session:
        rows = session.scalars(
            select(ReportVersion).where(ReportVersion.study_uid == study_uid).order_by(ReportVersion.version)
        ).all()
        return [_info(session, r) for r in rows]


def verify_signoff(store: Store, version_id: int) -> bool:
    """True when the version is signed and its content still hashes to the sign-off's bound hash."""
    with store.transaction() as session:
        row = session.get(ReportVersion, version_id)
        sig = session.scalar(select(Signoff).where(Signoff.version_id == version_id))
        if row is None or sig is None:
            return False
        return content_hash(row.findings, row.impression) == sig.bound_hash == row.content_hash


def diff_versions(old: VersionInfo, new: VersionInfo) -> str:
    """Return a unified diff (difflib) of two versions' findings and impression."""

    def lines(v: VersionInfo) -> list[str]:
        return ["FINDINGS:", *v.findings.splitlines(), "IMPRESSION:", *v.impression.splitlines()]

    return "\n".join(
        difflib.unified_diff(
            lines(old), lines(new), f"version {old.version}", f"version {new.version}", lineterm=""
        )
    )


def ask_question(
    store: Store, study_uid: str, *, user: str, question: str, answer: str, model_version: str
) -> int:
    """Store a question about a study and the model's answer; returns the question id."""
    with store.transaction() as session:
        row = Question(
            study_uid=study_uid,
            user=user,
            question=question,
            answer=answer,
            model_version=model_version,
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        append_event(
            session,
            actor=user,
            action="question.ask",
            object_type="study",
            object_id=store.pseudonym(study_uid),
            details={"question_id": row.id, "model_version": model_version},
        )
        return int(row.id)


def add_feedback(store: Store, study_uid: str, *, user: str, kind: str, text: str) -> int:
    """Store a reader's feedback on a study's draft; returns the feedback id."""
    with store.transaction() as session:
        row = Feedback(study_uid=study_uid, user=user, kind=kind, text=text, created_at=utcnow())
        session.add(row)
        session.flush()
        append_event(
            session,
            actor=user,
            action="feedback.add",
            object_type="study",
            object_id=store.pseudonym(study_uid),
            details={"feedback_id": row.id, "kind": kind},
        )
        return int(row.id)


def list_questions(store: Store, study_uid: str) -> list[tuple[str, str, str]]:
    """Return ``(user, question, answer)`` for a study, oldest first."""
    with store.transaction() as session:
        rows = session.scalars(
            select(Question).where(Question.study_uid == study_uid).order_by(Question.id)
        ).all()
        return [(r.user, r.question, r.answer) for r in rows]
