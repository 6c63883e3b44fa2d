"""The reading worklist: studies per status, and one filtered, sorted page of studies.

One row per study with its latest report version's state, its latest draft's model, number of
consistency flags and lowest sentence confidence. Decoding the drafts' JSON dominates the cost, so
it is done in a second phase and, unless a filter or the sort needs it for every study, only for
the rows shown (``benchmarks/bench_worklist.py`` measures 10,000 drafts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from compliance.clock import as_utc
from pipelines.errors import PipelineError
from pipelines.store.db import Store
from pipelines.store.drafts import min_confidence, parse_flags
from pipelines.store.models import STUDY_STATUSES, DraftRecord, JobRecord, ReportVersion, StudyRecord
from pipelines.store.study_detail import study_label

WORKLIST_LIMIT = 500
"""Rows a page holds at most (the total always counts every matching study)."""
SORT_COLUMNS = ("priority", "received_at", "flags", "min_confidence", "status")
REVIEW_STATES = ("unreviewed", "draft", "signed", "rejected")
"""A study's review state: its latest report version's status, ``unreviewed`` before any version."""
FLAGGED_CHOICES = ("any", "flagged", "clean")
_CHUNK = 5000  # ids per IN (...) query; well under SQLite's bound-parameter limit

__all__ = ["FLAGGED_CHOICES", "REVIEW_STATES", "SORT_COLUMNS", "STUDY_STATUSES", "WORKLIST_LIMIT",
           "WorklistError", "WorklistFilters", "WorklistPage", "WorklistRow", "load_worklist", "worklist_counts"]


class WorklistError(PipelineError, ValueError):
    """A worklist filter has a value the query does not know."""


@dataclass(frozen=True)
class WorklistFilters:
    """The worklist's filter and sort settings.

    Attributes:
        statuses: study statuses to show (``STUDY_STATUSES``); empty = all.
        review: latest review state to show (``REVIEW_STATES``); empty = all.
        date_from: first received date (inclusive, UTC), or None.
        date_to: last received date (inclusive, UTC), or None.
        min_priority: show studies with at least this priority.
        flagged: ``any``, ``flagged`` (at least one consistency flag) or ``clean``.
        sort_by: one of ``SORT_COLUMNS``.
        descending: sort order.
        limit: most rows returned.
    """

    statuses: tuple[str, ...] = ()
    review: tuple[str, ...] = ()
    date_from: date | None = None
    date_to: date | None = None
    min_priority: int = 0
    flagged: str = "any"
    sort_by: str = "priority"
    descending: bool = True
    limit: int = WORKLIST_LIMIT

    def __post_init__(self) -> None:
        if self.sort_by not in SORT_COLUMNS:
            raise WorklistError(f"sort_by must be one of {', '.join(SORT_COLUMNS)}; got {self.sort_by!r}")
        if self.flagged not in FLAGGED_CHOICES:
            raise WorklistError(f"flagged must be any, flagged or clean; got {self.flagged!r}")


@dataclass(frozen=True)
class WorklistRow:
    """One study on the worklist.

    Attributes:
        study_uid: the study.
        study: its short label (``study_label``).
        status: the study's status.
        review: its latest version's status, or ``unreviewed``.
        priority: its priority.
        received_at: when it arrived (UTC).
        flags: consistency flags in its latest draft (0 without a draft).
        min_confidence: lowest sentence confidence of that draft, or None.
        model_version: the model that drafted it ("" without a draft).
    """

    study_uid: str
    study: str
    status: str
    review: str
    priority: int
    received_at: datetime
    flags: int
    min_confidence: float | None
    model_version: str


@dataclass(frozen=True)
class WorklistPage:
    """A page of the worklist: at most ``limit`` rows in order, and how many studies matched."""

    rows: list[WorklistRow]
    total: int


def worklist_counts(store: Store) -> dict[str, int]:
    """Studies per status (every study in the store, whatever the filters)."""
    with store.transaction() as session:
        rows = session.execute(select(StudyRecord.status, func.count()).group_by(StudyRecord.status)).all()
    return {str(s): int(n) for s, n in rows}


def _latest_version_subquery():  # noqa: ANN202 - a SQLAlchemy subquery
    latest = (select(ReportVersion.study_uid, func.max(ReportVersion.version).label("v"))
              .group_by(ReportVersion.study_uid).subquery())
    return (
        select(ReportVersion.study_uid, ReportVersion.status.label("review"), ReportVersion.version)
        .join(latest, (latest.c.study_uid == ReportVersion.study_uid) & (latest.c.v == ReportVersion.version))
        .subquery()
    )


def _latest_draft_subquery():  # noqa: ANN202 - a SQLAlchemy subquery
    latest = (
        select(JobRecord.study_uid, func.max(DraftRecord.id).label("draft_id"))
        .join(DraftRecord, DraftRecord.job_id == JobRecord.id)
        .group_by(JobRecord.study_uid).subquery()
    )
    return (select(latest.c.study_uid, latest.c.draft_id, DraftRecord.model_version)
            .join(DraftRecord, DraftRecord.id == latest.c.draft_id).subquery())


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def _matching(conn: Connection, filters: WorklistFilters) -> list[tuple[WorklistRow, int | None]]:
    """Phase 1: every matching study with its latest draft id, without any JSON column."""
    ver, dr = _latest_version_subquery(), _latest_draft_subquery()
    stmt = (
        select(StudyRecord.study_uid, StudyRecord.status, StudyRecord.priority, StudyRecord.received_at,
               ver.c.review, dr.c.draft_id, dr.c.model_version)
        .outerjoin(ver, ver.c.study_uid == StudyRecord.study_uid)
        .outerjoin(dr, dr.c.study_uid == StudyRecord.study_uid)
    )
    if filters.statuses:
        stmt = stmt.where(StudyRecord.status.in_(filters.statuses))
    if filters.review:
        cond = ver.c.review.in_([r for r in filters.review if r != "unreviewed"])
        if "unreviewed" in filters.review:
            cond = cond | ver.c.review.is_(None)
        stmt = stmt.where(cond)
    if filters.date_from is not None:
        stmt = stmt.where(StudyRecord.received_at >= _day_start(filters.date_from))
    if filters.date_to is not None:
        stmt = stmt.where(StudyRecord.received_at < _day_start(filters.date_to) + timedelta(days=1))
    if filters.min_priority:
        stmt = stmt.where(StudyRecord.priority >= filters.min_priority)
    return [
        (WorklistRow(r.study_uid, "", r.status, r.review or "unreviewed", int(r.priority or 0),
                     as_utc(r.received_at), 0, None, r.model_version or ""),
         None if r.draft_id is None else int(r.draft_id))
        for r in conn.execute(stmt)
    ]


def _summarise(conn: Connection, items: list[tuple[WorklistRow, int | None]]) -> list[tuple[WorklistRow, int | None]]:
    """Phase 2: each row's flag count and lowest confidence, decoding only these rows' drafts."""
    ids = [d for _, d in items if d is not None]
    summary: dict[int, tuple[int, float | None]] = {}
    for start in range(0, len(ids), _CHUNK):
        stmt = (select(DraftRecord.id, DraftRecord.flags, DraftRecord.sentences)
                .where(DraftRecord.id.in_(ids[start : start + _CHUNK])))
        for did, flags, sentences in conn.execute(stmt):
            summary[int(did)] = (len(parse_flags(flags)), min_confidence(sentences))
    out = []
    for row, did in items:
        n, low = summary.get(did, (0, None)) if did is not None else (0, None)
        out.append((replace(row, flags=n, min_confidence=low), did))
    return out


def _ordered(items: list[tuple[WorklistRow, int | None]], sort_by: str,
             descending: bool) -> list[tuple[WorklistRow, int | None]]:
    """Sorted by ``sort_by`` (missing values last); ties oldest first (first come, first read)."""
    by_time = sorted(items, key=lambda item: item[0].received_at)
    present = [item for item in by_time if getattr(item[0], sort_by) is not None]
    missing = [item for item in by_time if getattr(item[0], sort_by) is None]
    # sorted() is stable, with reverse=True too: equal keys keep the oldest-first order.
    return sorted(present, key=lambda item: getattr(item[0], sort_by), reverse=descending) + missing


def _labels(conn: Connection, uids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for start in range(0, len(uids), _CHUNK):
        stmt = (select(StudyRecord.study_uid, StudyRecord.metadata_json)
                .where(StudyRecord.study_uid.in_(list(uids[start : start + _CHUNK]))))
        for uid, meta in conn.execute(stmt):
            out[uid] = study_label(uid, meta)
    return out


def load_worklist(store: Store, filters: WorklistFilters) -> WorklistPage:
    """One page of the worklist: each matching study with its review state, flags and lowest confidence.

    Args:
        store: the review store (read in one transaction).
        filters: what to show and in which order.

    Returns:
        At most ``filters.limit`` rows in order, and the number of studies matching the filters.
    """
    with store.transaction() as session:
        conn = session.connection()  # core rows: no ORM objects for thousands of studies
        items = _matching(conn, filters)
        if filters.flagged != "any" or filters.sort_by in ("flags", "min_confidence"):
            items = _summarise(conn, items)
            if filters.flagged != "any":
                items = [item for item in items if (item[0].flags > 0) == (filters.flagged == "flagged")]
            total = len(items)
            items = _ordered(items, filters.sort_by, filters.descending)[: filters.limit]
        else:
            total = len(items)
            items = _summarise(conn, _ordered(items, filters.sort_by, filters.descending)[: filters.limit])
        labels = _labels(conn, [row.study_uid for row, _ in items])
    rows = [replace(row, study=labels.get(row.study_uid, study_label(row.study_uid))) for row, _ in items]
    return WorklistPage(rows, total)
