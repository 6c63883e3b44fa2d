"""Integration: PACS (Orthanc) → draft via DICOMweb → edit + sign → STOW-RS export → one SR with the signed text."""

from __future__ import annotations

import pytest
from _draft_worker import AUDIT_KEY, build_tiny_checkpoint, make_phantoms

pytestmark = pytest.mark.integration


def _sr_instances(client, study_uid: str) -> list[dict]:
    return client.search_for_instances(study_instance_uid=study_uid, search_filters={"Modality": "SR"})


def test_draft_from_dicomweb_sign_and_export_by_stow(empty_orthanc, tmp_path):
    import pydicom
    from dicomweb_client.api import DICOMwebClient
    from sqlalchemy import select

    from dicom_io.sources import safe_dirname
    from dicom_io.sr import read_report_texts
    from pipelines.drafting.job import run_draft_job
    from pipelines.export.reports import export_command
    from pipelines.intake.sources import parse_source
    from pipelines.store import open_store
    from pipelines.store.models import StudyRecord
    from pipelines.store.reviews import edit_version, list_versions, sign_version

    pacs = empty_orthanc
    phantoms = make_phantoms(tmp_path / "ph", n=2, seed=7)
    for path in sorted(phantoms.rglob("*.dcm")):
        pacs.upload(path)
    ckpt = build_tiny_checkpoint(tmp_path / "ckpt")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    source = parse_source(f"dicomweb:{pacs.dicomweb_url}", work_dir=tmp_path / "incoming")
    summary = run_draft_job(ckpt, source, db=url, workers=0, progress=False, audit_key=AUDIT_KEY)
    assert summary.drafted == 2 and summary.quarantined == {} and summary.failed == {}

    with open_store(url, audit_key=AUDIT_KEY) as store:
        with store.transaction() as session:
            studies = session.scalars(select(StudyRecord)).all()
            uid = sorted(s.study_uid for s in studies)[0]
            assert all(s.source == pacs.dicomweb_url for s in studies)
        draft = list_versions(store, uid)[0]
        edited = edit_version(store, draft.id, findings="Heart size is normal. The lungs are clear.",
                              impression="No acute cardiopulmonary process.", author="dr.smith")
        sign_version(store, edited.id, signer="Smith^Anna", role="radiologist")

    sink = f"stow:{pacs.dicomweb_url}"
    first = export_command(url, uid, sink, fhir_out=tmp_path / "fhir")
    assert first.exported == 1 and first.failed == {} and len(first.fhir_files) == 1

    client = DICOMwebClient(pacs.dicomweb_url)
    found = _sr_instances(client, uid)
    assert len(found) == 1
    sop = found[0]["00080018"]["Value"][0]
    series = found[0]["0020000E"]["Value"][0]
    sr = client.retrieve_instance(uid, series, sop)
    assert read_report_texts(sr) == {"findings": edited.findings, "impression": edited.impression}
    assert sr.VerificationFlag == "VERIFIED"
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Smith^Anna"
    source_header = pydicom.dcmread(next((tmp_path / "incoming" / safe_dirname(uid)).glob("*.dcm")),
                                    stop_before_pixels=True)
    assert sr.PatientID == source_header.PatientID  # filed under the source study's patient

    again = export_command(url, uid, sink)
    assert (again.exported, again.skipped) == (0, 1)
    resent = export_command(url, uid, sink, resend=True)
    assert resent.exported == 1
    assert len(_sr_instances(client, uid)) == 1  # same SR UIDs: the PACS keeps one instance


def test_draft_from_dimse_sign_and_export_by_cstore(empty_orthanc, tmp_path):
    """The other PACS path end to end: C-FIND + C-MOVE into the job, signed SR back by C-STORE, a resend kept once."""
    from dicomweb_client.api import DICOMwebClient

    from dicom_io.sr import read_report_texts
    from pipelines.drafting.job import run_draft_job
    from pipelines.export.reports import export_command
    from pipelines.intake.sources import parse_source
    from pipelines.store import open_store
    from pipelines.store.reviews import list_versions, sign_version

    pacs = empty_orthanc
    phantoms = make_phantoms(tmp_path / "ph", n=2, seed=8)
    for path in sorted(phantoms.rglob("*.dcm")):
        pacs.upload(path)
    ckpt = build_tiny_checkpoint(tmp_path / "ckpt")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    spec = f"dimse://ORTHANC@127.0.0.1:{pacs.dicom_port}?calling=MEDVLM&our_port={pacs.our_port}&method=move"
    source = parse_source(spec, work_dir=tmp_path / "incoming")
    summary = run_draft_job(ckpt, source, db=url, workers=0, progress=False, audit_key=AUDIT_KEY)
    assert summary.drafted == 2 and summary.quarantined == {} and summary.failed == {}

    with open_store(url, audit_key=AUDIT_KEY) as store:
        uid = _study_uids(store)[0]
        draft = list_versions(store, uid)[0]
        sign_version(store, draft.id, signer="Jones^Ben", role="radiologist")

    sink = f"cstore://ORTHANC@127.0.0.1:{pacs.dicom_port}"
    assert export_command(url, uid, sink).exported == 1
    assert export_command(url, uid, sink, resend=True).exported == 1
    client = DICOMwebClient(pacs.dicomweb_url)
    found = _sr_instances(client, uid)
    assert len(found) == 1  # deterministic SR UIDs: the resend is not a duplicate
    sr = client.retrieve_instance(uid, found[0]["0020000E"]["Value"][0], found[0]["00080018"]["Value"][0])
    assert read_report_texts(sr) == {"findings": draft.findings, "impression": draft.impression}
    assert sr.VerificationFlag == "VERIFIED"


def _study_uids(store) -> list[str]:
    from sqlalchemy import select

    from pipelines.store.models import StudyRecord

    with store.transaction() as session:
        return sorted(session.scalars(select(StudyRecord.study_uid)).all())
