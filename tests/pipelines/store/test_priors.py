"""Priors: migration 0004 (both ways), the patient key is a keyed pseudonym, the prior query (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select, text

from pipelines.store import open_store, upgrade_database
from pipelines.store.db import create_store_engine
from pipelines.store.models import Base
from pipelines.store.priors import (
    PatientHeader,
    PriorStudy,
    find_prior,
    link_study,
    patient_key,
    prior_study,
    study_datetime,
)
from pipelines.store.studies import add_study, quarantine_study

PATIENT = "PAT-SECRET-4711"


def _study(store, uid: str, patient: str, date: str, time: str = "101500", issuer: str = "") -> None:
    add_study(store, uid, source="test", metadata={"study_id": uid})
    link_study(store, uid, PatientHeader(patient, issuer, date, time))


def test_migration_0004_up_and_down(store_url):
    from alembic import command

    from pipelines.store.db import _alembic_config

    upgrade_database(store_url, "0003")
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO studies (study_uid, source, status, priority, received_at, metadata) "
                              "VALUES ('1.2.3', 'old', 'received', 0, CURRENT_TIMESTAMP, '{}')"))
        upgrade_database(engine, "0004")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT patient_key, study_datetime FROM studies")).one() == (None, None)
        insp = inspect(engine)
        assert {"patient_key", "study_datetime"} <= {c["name"] for c in insp.get_columns("studies")}
        assert "ix_studies_patient_key" in {i["name"] for i in insp.get_indexes("studies")}
        with engine.begin() as conn:
            command.downgrade(_alembic_config(conn), "0003")
        insp = inspect(engine)
        assert not {"patient_key", "study_datetime"} & {c["name"] for c in insp.get_columns("studies")}
        assert "ix_studies_patient_key" not in {i["name"] for i in insp.get_indexes("studies")}
        with engine.connect() as conn:  # the existing row survives the round trip
            assert conn.execute(text("SELECT study_uid FROM studies")).scalars().all() == ["1.2.3"]
        upgrade_database(engine)
    finally:
        engine.dispose()
    with open_store(store_url, audit_key=b"k") as store:  # and the store opens at head again
        assert find_prior(store, "1.2.3") is None


def test_patient_id_is_never_stored(store, store_url, tmp_path):
    _study(store, "1.1", PATIENT, "20230105")
    _study(store, "1.2", PATIENT, "20240105")
    key = patient_key(store, PATIENT)
    assert key is not None and key.startswith("h:") and PATIENT not in key
    assert patient_key(store, f"  {PATIENT} ") == key  # DICOM space padding does not split a patient
    assert patient_key(store, PATIENT, issuer="HOSP-B") != key  # another issuer: another patient
    with open_store(store_url, audit_key=b"another-key") as other:
        assert patient_key(other, PATIENT) != key  # keyed: without the store's key it cannot be recomputed
    with store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)).all():
                assert PATIENT not in repr(tuple(row)), f"Patient ID stored in {table.name}"
        keys = conn.execute(text("SELECT patient_key FROM studies ORDER BY study_uid")).scalars().all()
    assert keys == [key, key]
    if store.dialect == "sqlite":
        store.close()  # checkpoints the WAL into the file
        db = tmp_path / "store.db"
        blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("store.db"))
        assert db.is_file() and PATIENT.encode() not in blob


def test_prior_is_the_same_patients_latest_earlier_study(store):
    _study(store, "a.2022", PATIENT, "20220301")
    _study(store, "a.2023", PATIENT, "20230301")
    _study(store, "a.2024", PATIENT, "20240301", "0930")
    _study(store, "b.2021", "OTHER-PATIENT", "20210301")
    assert prior_study(store, "a.2024") == "a.2023"  # the latest earlier one, not the first
    assert find_prior(store, "a.2024") == PriorStudy("a.2023", "20230301101500")
    assert find_prior(store, "a.2024").date == "2023-03-01"
    assert prior_study(store, "a.2023") == "a.2022"
    assert prior_study(store, "a.2022") is None  # the earliest has none
    assert prior_study(store, "b.2021") is None  # another patient's studies are never priors
    assert prior_study(store, "unknown") is None


def test_no_prior_without_an_id_a_date_or_an_earlier_time(store):
    _study(store, "blank.1", "", "20200101")
    _study(store, "blank.2", "   ", "20240101")
    assert prior_study(store, "blank.2") is None  # two blank IDs are not one patient
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT patient_key, study_datetime FROM studies WHERE study_uid LIKE 'blank%'"))
        assert rows.all() == [(None, None), (None, None)]
    _study(store, "same.1", PATIENT, "20240101", "101500")
    _study(store, "same.2", PATIENT, "20240101", "101500")
    assert prior_study(store, "same.2") is None and prior_study(store, "same.1") is None  # ties: none
    _study(store, "nodate", PATIENT, "")
    assert prior_study(store, "nodate") is None
    _study(store, "later", PATIENT, "20250101")
    assert prior_study(store, "later") in ("same.1", "same.2")
    assert prior_study(store, "nodate") is None  # an undated study is nobody's prior either


def test_quarantined_studies_are_not_priors_and_metadata_is_the_fallback(store):
    _study(store, "q.old", PATIENT, "20200101")
    _study(store, "q.bad", PATIENT, "20230101")
    _study(store, "q.new", PATIENT, "20240101")
    quarantine_study(store, "q.bad", "no_frontal_view", source="test")
    assert prior_study(store, "q.new") == "q.old"
    add_study(store, "unlinked", source="test")
    assert find_prior(store, "unlinked") is None
    assert find_prior(store, "unlinked", recorded="q.old") == PriorStudy("q.old", "20200101101500")
    assert find_prior(store, "unlinked", recorded="unlinked") is None  # never itself
    assert find_prior(store, "q.new", recorded="unlinked") == PriorStudy("q.old", "20200101101500")  # store first
    link_study(store, "q.old", None)  # a header that can no longer be read clears the link
    assert prior_study(store, "q.new") is None


@pytest.mark.parametrize(("date", "time", "expected"), [
    ("20240229", "235959.123456", "20240229235959"),
    ("20240229", "0930", "20240229093000"),
    ("20240229", "09", "20240229090000"),
    ("2024.02.29", "09:30:15", "20240229093015"),
    ("20240229", "", "20240229000000"),
    ("20240229", "2561", "20240229000000"),  # a bad time: midnight, the date still orders the study
    ("20230229", "101500", None),  # not a date
    ("2024022", "", None),
    ("", "101500", None),
])
def test_study_datetime(date, time, expected):
    assert study_datetime(date, time) == expected
