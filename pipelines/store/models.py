"""Typed SQLAlchemy 2 models of the review store.

Tables: ``studies``, ``jobs``, ``drafts``, ``report_versions``, ``signoffs``, ``questions``,
``feedback``, plus ``audit_events`` and ``audit_head`` copied from ``compliance.audit`` so that one
metadata (and one Alembic migration) describes the whole database.

No column holds PHI beyond what a report store must hold (the study UID and report text);
``studies.metadata_json`` is for non-identifying facts (view, modality, sizes) only, and
``studies.patient_key`` is a keyed pseudonym of the patient (never the Patient ID itself).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from compliance.audit import AUDIT_METADATA
from compliance.clock import utcnow  # noqa: F401  (re-exported: column defaults and callers)

JOB_STATES = ("queued", "leased", "done", "failed", "quarantined")
VERSION_STATUSES = ("draft", "signed", "rejected")
STUDY_STATUSES = ("received", "queued", "drafted", "signed", "quarantined", "failed")

# Stable constraint names so migrations and comparisons agree across SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}



class Base(DeclarativeBase):
    """Declarative base holding the store's metadata."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


for _table in AUDIT_METADATA.sorted_tables:
    _table.to_metadata(Base.metadata)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class StudyRecord(Base):
    """A study known to the store: where it came from, where it stands, why it was quarantined."""

    __tablename__ = "studies"
    __table_args__ = (CheckConstraint(_in("status", STUDY_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(128), unique=True)
    source: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default="received")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    quarantine_reason: Mapped[str | None] = mapped_column(String(512))
    # Links a study to the same patient's earlier studies (`pipelines.store.priors`, migration 0004):
    # HMAC of the DICOM Patient ID under the audit key, and StudyDate + StudyTime as "YYYYMMDDHHMMSS"
    # (fixed width, so string order is time order). NULL when unknown: such a study has no prior.
    patient_key: Mapped[str | None] = mapped_column(String(64), index=True)
    study_datetime: Mapped[str | None] = mapped_column(String(14))


class JobRecord(Base):
    """One drafting job: a study, a model version and a prompt; leased to one worker at a time."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("study_uid", "model_version", "prompt_hash"),
        CheckConstraint(_in("state", JOB_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid"), index=True)
    model_version: Mapped[str] = mapped_column(String(128))
    prompt_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class DraftRecord(Base):
    """The model's draft for a job; at most one per job (UNIQUE ``job_id``)."""

    __tablename__ = "drafts"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)
    findings: Mapped[str] = mapped_column(Text)
    impression: Mapped[str] = mapped_column(Text)
    sentences: Mapped[list[Any]] = mapped_column(default=list)
    flags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_version: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReportVersion(Base):
    """An immutable version of a study's report; edits create a child version."""

    __tablename__ = "report_versions"
    __table_args__ = (
        UniqueConstraint("study_uid", "version"),
        CheckConstraint(_in("status", VERSION_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    findings: Mapped[str] = mapped_column(Text)
    impression: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("report_versions.id"))
    draft_id: Mapped[int | None] = mapped_column(ForeignKey("drafts.id"))
    content_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    rejection_reason: Mapped[str | None] = mapped_column(String(1024))


class Signoff(Base):
    """A radiologist's signature bound to the exact content of one version (see ``store.signatures``)."""

    __tablename__ = "signoffs"

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("report_versions.id"), unique=True)
    signer: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    meaning: Mapped[str] = mapped_column(String(64))
    bound_hash: Mapped[str] = mapped_column(String(64))
    # HMAC-SHA256 under $MEDVLM_SIGNING_KEY over study, version, text, signer and time (migration 0002);
    # NULL only for sign-offs made before it, which therefore never verify.
    signature: Mapped[str | None] = mapped_column(String(64))


class Question(Base):
    """A question asked about a study and the model's answer."""

    __tablename__ = "questions"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid"), index=True)
    user: Mapped[str] = mapped_column(String(128))
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    """Free-text or categorical feedback from a reader about a study's draft."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid"), index=True)
    user: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginGuard(Base):
    """Failed dashboard log-ins per user name or per client, both pseudonymised (never the typed name
    or an address); drives throttling and temporary lockout (`pipelines.store.login_guard`)."""

    __tablename__ = "login_guard"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
