"""One study as a reader sees it (draft, versions, Q&A), and the signed reports of other studies.

Every function opens its own read transaction and returns detached dataclasses, so callers (the
dashboard) never hold a session or a database row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from compliance.clock import as_utc
from pipelines.store.db import Store
from pipelines.store.drafts import DraftFlag, DraftSentence, parse_flags, parse_probabilities, parse_sentences
from pipelines.store.models import DraftRecord, JobRecord, Question, ReportVersion, Signoff, StudyRecord
from pipelines.store.versions import ReviewError, VersionInfo, version_info


class StudyNotFoundError(ReviewError):
    """No study with this UID is in the review store."""


def study_label(study_uid: str, metadata: Mapping[str, Any] | None = None) -> str:
    """A short label for a study: its accession/study id from the metadata, else the UID's tail."""
    meta = metadata or {}
    for key in ("accession", "study_id", "accession_number"):
        if meta.get(key):
            return str(meta[key])
    return "…" + study_uid[-8:]


@dataclass(frozen=True)
class DraftInfo:
    """The model's (latest) draft of a study.

    Attributes:
        id: draft id.
        findings: FINDINGS text.
        impression: IMPRESSION text.
        sentences: the draft's sentences with confidences.
        flags: its consistency flags.
        model_version: the model that drafted it.
        created_at: when (UTC).
        probabilities: the findings head's probability per target (``{}`` without a head).
    """

    id: int
    findings: str
    impression: str
    sentences: list[DraftSentence]
    flags: list[DraftFlag]
    model_version: str
    created_at: datetime
    probabilities: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class QuestionInfo:
    """One stored question and the model's answer."""

    user: str
    question: str
    answer: str
    model_version: str
    created_at: datetime


@dataclass(frozen=True)
class StudyInfo:
    """A study with its latest draft, every report version (oldest first) and its Q&A.

    Attributes:
        study_uid: the study.
        source: where it was read from (a folder, a file, a PACS).
        status: the study's status.
        priority: its worklist priority.
        received_at: when it arrived (UTC).
        metadata: its non-identifying metadata (view files, study id, indication).
        draft: the latest draft, or None.
        versions: report versions, oldest first.
        questions: stored Q&A, oldest first.
    """

    study_uid: str
    source: str
    status: str
    priority: int
    received_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    draft: DraftInfo | None = None
    versions: list[VersionInfo] = field(default_factory=list)
    questions: list[QuestionInfo] = field(default_factory=list)


def load_study(store: Store, study_uid: str) -> StudyInfo:
    """Load one study with its latest draft, every version (oldest first) and its Q&A.

    Args:
        store: the review store.
        study_uid: the study.

    Returns:
        The detached study.

    Raises:
        StudyNotFoundError: no such study.
    """
    with store.transaction() as session:
        study = session.scalar(select(StudyRecord).where(StudyRecord.study_uid == study_uid))
        if study is None:
            raise StudyNotFoundError("study not found in the review store")
        d = session.scalar(
            select(DraftRecord).join(JobRecord, DraftRecord.job_id == JobRecord.id)
            .where(JobRecord.study_uid == study_uid).order_by(DraftRecord.id.desc()).limit(1)
        )
        draft = None
        if d is not None:
            draft = DraftInfo(d.id, d.findings, d.impression, parse_sentences(d.sentences), parse_flags(d.flags),
                              d.model_version, as_utc(d.created_at), parse_probabilities(d.flags))
        rows = session.execute(
            select(ReportVersion, Signoff).outerjoin(Signoff, Signoff.version_id == ReportVersion.id)
            .where(ReportVersion.study_uid == study_uid).order_by(ReportVersion.version)
        ).all()
        qs = session.scalars(select(Question).where(Question.study_uid == study_uid).order_by(Question.id))
        return StudyInfo(
            study_uid=study.study_uid, source=study.source, status=study.status, priority=int(study.priority or 0),
            received_at=as_utc(study.received_at), metadata=dict(study.metadata_json or {}), draft=draft,
            versions=[version_info(v, s) for v, s in rows],
            questions=[QuestionInfo(q.user, q.question, q.answer, q.model_version, as_utc(q.created_at))
                       for q in qs],
        )


@dataclass(frozen=True)
class SignedReport:
    """The newest signed report of a study (a candidate similar prior case).

    Attributes:
        study_uid: the study.
        label: its short label (``study_label``); no patient identity.
        findings: the signed FINDINGS.
        impression: the signed IMPRESSION.
        source: where the study was read from (to find its image files).
        metadata: the study's metadata (its recorded image files).
    """

    study_uid: str
    label: str
    findings: str
    impression: str
    source: str
    metadata: dict[str, Any]


def signed_reports(store: Store, *, exclude: str | None = None, scan: int = 500) -> list[SignedReport]:
    """Each study's newest signed report among the ``scan`` most recent signed versions.

    Args:
        store: the review store.
        exclude: a study to leave out (the one being read), or None.
        scan: how many recent signed versions to consider (bounds the work of the callers).

    Returns:
        One report per study, most recently signed first.
    """
    stmt = (
        select(ReportVersion.study_uid, ReportVersion.findings, ReportVersion.impression, StudyRecord.source,
               StudyRecord.metadata_json)
        .join(StudyRecord, StudyRecord.study_uid == ReportVersion.study_uid)
        .where(ReportVersion.status == "signed")
        .order_by(ReportVersion.id.desc()).limit(scan)
    )
    if exclude is not None:
        stmt = stmt.where(ReportVersion.study_uid != exclude)
    with store.transaction() as session:
        rows = session.execute(stmt).all()
    seen: set[str] = set()
    out: list[SignedReport] = []
    for r in rows:
        if r.study_uid in seen:
            continue
        seen.add(r.study_uid)
        meta = dict(r.metadata_json or {})
        out.append(SignedReport(r.study_uid, study_label(r.study_uid, meta), r.findings or "", r.impression or "",
                                r.source, meta))
    return out
