"""What the exports read from the store: studies with report versions, approved (signed) reports.

Read-only queries for `pipelines.export` (SR/FHIR back to the PACS, de-identified datasets); the
export side never builds a query itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from compliance.clock import as_utc
from pipelines.store.db import Store
from pipelines.store.models import ReportVersion, Signoff, StudyRecord


def studies_with_versions(store: Store, *, signed_only: bool) -> list[str]:
    """Study UIDs (sorted) that have a report version, or with `signed_only` a signed one."""
    stmt = select(ReportVersion.study_uid).distinct()
    if signed_only:
        stmt = stmt.where(ReportVersion.status == "signed")
    with store.transaction() as session:
        return sorted(session.scalars(stmt).all())


@dataclass(frozen=True)
class ApprovedReport:
    """The latest signed version of a study, joined with the study (holds the original UID)."""

    study_uid: str
    source: str
    """Where the study came from (the folder relative image paths are resolved against)."""
    metadata: dict[str, Any]
    """The study's store metadata (accepted files, views)."""
    version: int
    findings: str
    impression: str


def approved_reports(store: Store, since: datetime | None = None) -> list[ApprovedReport]:
    """The latest signed version of each study (signed at/after `since`), in study-UID order.

    Args:
        store: the open store.
        since: only versions signed at or after this time (naive times are UTC); None = all.

    Returns:
        One report per study.
    """
    stmt = (
        select(ReportVersion, Signoff.signed_at, StudyRecord.source, StudyRecord.metadata_json)
        .join(Signoff, Signoff.version_id == ReportVersion.id)
        .join(StudyRecord, StudyRecord.study_uid == ReportVersion.study_uid)
        .where(ReportVersion.status == "signed")
        .order_by(ReportVersion.study_uid, ReportVersion.version)
    )
    latest: dict[str, ApprovedReport] = {}
    with store.transaction() as session:
        for row, signed_at, source, metadata in session.execute(stmt):
            if since is not None and as_utc(signed_at) < as_utc(since):
                continue
            latest[row.study_uid] = ApprovedReport(  # ordered by version: the last one wins
                row.study_uid, source, dict(metadata or {}), row.version, row.findings, row.impression
            )
    return [latest[uid] for uid in sorted(latest)]
