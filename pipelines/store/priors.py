"""A study's prior: the same patient's latest earlier study in the review store.

Intake reads the frontal file's Patient ID (with its issuer), StudyDate and StudyTime (`PatientHeader`)
and records two columns on the study (migration 0004, `link_study`): ``patient_key``, the store's
keyed pseudonym of the Patient ID (HMAC-SHA256 under the audit key, as audit events pseudonymise
study UIDs; the ID itself is never stored), and ``study_datetime`` (``YYYYMMDDHHMMSS``, fixed
width so string order is time order). A blank Patient ID or an unreadable StudyDate leaves them
NULL: studies are never linked on an empty or unknown value.

`find_prior` then picks, among the other studies with the same key and a strictly earlier date
and time, the latest one (equal times are not priors; quarantined studies are not shown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from pipelines.store.db import Store
from pipelines.store.models import StudyRecord

_KEY_DOMAIN = "patient:"
"""Prefix of the HMAC input: a patient key never equals a study UID's pseudonym in the audit log."""


@dataclass(frozen=True)
class PatientHeader:
    """The header values that link a study to the same patient's other studies.

    PHI: held in memory while a study is taken in, never stored or logged (hidden from ``repr``).

    Attributes:
        patient_id: PatientID (0010,0020), as in the file.
        issuer: IssuerOfPatientID (0010,0021): the same ID from two issuers is two patients.
        study_date: StudyDate (0008,0020), ``YYYYMMDD``.
        study_time: StudyTime (0008,0030), ``HHMMSS.FFFFFF`` or a shorter form.
    """

    patient_id: str = field(default="", repr=False)
    issuer: str = field(default="", repr=False)
    study_date: str = field(default="", repr=False)
    study_time: str = field(default="", repr=False)


@dataclass(frozen=True)
class StudyLink:
    """What the store records of a study to find its prior (both None: the study has none).

    Attributes:
        patient_key: ``h:`` + 32 hex digits, the keyed pseudonym of the patient; None for a blank ID.
        study_datetime: ``YYYYMMDDHHMMSS``; None when the StudyDate is missing or not a date.
    """

    patient_key: str | None = None
    study_datetime: str | None = None

    def values(self) -> dict[str, Any]:
        """The two column values, for an INSERT or UPDATE of ``studies``."""
        return {"patient_key": self.patient_key, "study_datetime": self.study_datetime}


def study_datetime(study_date: str, study_time: str = "") -> str | None:
    """StudyDate and StudyTime as ``YYYYMMDDHHMMSS``; None when the date is missing or invalid.

    A missing or unreadable time counts as midnight (the date still orders studies of other days);
    fractions of a second are dropped; the old ``YYYY.MM.DD`` and ``HH:MM:SS`` forms are accepted.
    """
    date = str(study_date or "").strip().replace(".", "")
    try:
        datetime.strptime(date, "%Y%m%d")
    except ValueError:
        return None
    if len(date) != 8:  # strptime accepts "2024011" as 2024-01-01
        return None
    time = str(study_time or "").strip().split(".")[0].replace(":", "")
    if len(time) in (2, 4):
        time = time.ljust(6, "0")
    try:
        datetime.strptime(time, "%H%M%S")
    except ValueError:
        time = "000000"
    if len(time) != 6:
        time = "000000"
    return date + time


def patient_key(store: Store, patient_id: str, issuer: str = "") -> str | None:
    """The store's pseudonym of a patient, or None for a blank Patient ID (never linked).

    Args:
        store: the store (its audit key is the HMAC key).
        patient_id: the DICOM Patient ID; surrounding spaces (DICOM padding) are ignored.
        issuer: its Issuer of Patient ID, "" when absent.
    """
    pid = str(patient_id or "").strip()
    if not pid:
        return None
    return store.pseudonym(f"{_KEY_DOMAIN}{str(issuer or '').strip()}\x00{pid}")


def study_link(store: Store, header: PatientHeader | None) -> StudyLink:
    """The columns to record for a study whose frontal header is `header` (None: unread, no link)."""
    if header is None:
        return StudyLink()
    key = patient_key(store, header.patient_id, header.issuer)
    return StudyLink(key, study_datetime(header.study_date, header.study_time) if key else None)


def link_study(store: Store, study_uid: str, header: PatientHeader | None) -> StudyLink:
    """Record (or refresh) a study's patient key and date from its frontal header.

    Args:
        store: the review store.
        study_uid: the study (an unknown study is left unknown).
        header: the header values; None or a blank Patient ID clears the link.

    Returns:
        What was recorded.
    """
    link = study_link(store, header)
    with store.transaction() as session:
        session.execute(StudyRecord.__table__.update().where(StudyRecord.study_uid == study_uid)
                        .values(**link.values()))
    return link


@dataclass(frozen=True)
class PriorStudy:
    """A study's prior.

    Attributes:
        study_uid: the prior study.
        study_datetime: its ``YYYYMMDDHHMMSS``, None when unknown (a prior named in the metadata).
    """

    study_uid: str
    study_datetime: str | None = None

    @property
    def date(self) -> str | None:
        """The prior's date as ``YYYY-MM-DD`` (no time, no patient), None when unknown."""
        d = self.study_datetime
        return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if d and len(d) >= 8 else None


def find_prior(store: Store, study_uid: str, *, recorded: str | None = None) -> PriorStudy | None:
    """The same patient's latest study before this one, else the prior named by `recorded`.

    Args:
        store: the review store.
        study_uid: the study being read.
        recorded: a prior study UID named elsewhere (the study metadata's ``prior_study_uid``), used
            only when the store links no prior; it need not be in the store (the caller says so).

    Returns:
        The prior, or None (no patient key or date, no earlier study of the patient).
    """
    with store.transaction() as session:
        me = session.execute(select(StudyRecord.patient_key, StudyRecord.study_datetime)
                             .where(StudyRecord.study_uid == study_uid)).one_or_none()
        row = None
        if me is not None and me.patient_key and me.study_datetime:
            row = session.execute(
                select(StudyRecord.study_uid, StudyRecord.study_datetime)
                .where(StudyRecord.patient_key == me.patient_key, StudyRecord.study_datetime < me.study_datetime,
                       StudyRecord.study_uid != study_uid, StudyRecord.status != "quarantined")
                .order_by(StudyRecord.study_datetime.desc(), StudyRecord.id.desc()).limit(1)
            ).one_or_none()
        if row is not None:
            return PriorStudy(row.study_uid, row.study_datetime)
        if not recorded or recorded == study_uid:
            return None
        when = session.scalar(select(StudyRecord.study_datetime).where(StudyRecord.study_uid == recorded))
        return PriorStudy(recorded, when)


def prior_study(store: Store, study_uid: str) -> str | None:
    """The UID of the same patient's latest study before `study_uid` in the store, or None."""
    prior = find_prior(store, study_uid)
    return prior.study_uid if prior else None
