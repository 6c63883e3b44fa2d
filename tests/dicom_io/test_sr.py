"""The DICOM SR writer and the FHIR DiagnosticReport, without any server."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_io.fhir import REPORT_CODE, VERSION_SYSTEM, build_diagnostic_report
from dicom_io.sr import ReportContentError, build_report_sr, read_report_texts, sr_uids

FINDINGS = "The heart is normal in size. Small left pleural effusion."
IMPRESSION = "Small left pleural effusion."
SIGNED_AT = dt.datetime(2024, 1, 5, 14, 30, 15)


@pytest.fixture
def source(make_chest_dicom):
    return pydicom.dcmread(make_chest_dicom("src.dcm"))


def _bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_signed_sr_is_verified_with_observer_and_exact_texts(source):
    sr = build_report_sr(source, FINDINGS, IMPRESSION, verifying_observer="Doe^Jane", verified=True,
                         signed_at=SIGNED_AT, version_hash="v1hash", institution="General Hospital")

    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.Modality == "SR"
    assert (sr.VerificationFlag, sr.CompletionFlag, sr.PreliminaryFlag) == ("VERIFIED", "COMPLETE", "FINAL")
    observer = sr.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName) == "Doe^Jane"
    assert observer.VerifyingOrganization == "General Hospital"
    assert observer.VerificationDateTime == "20240105143015"
    assert read_report_texts(sr) == {"findings": FINDINGS, "impression": IMPRESSION}
    # Filed in the source study, with the source's patient module.
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert (sr.PatientID, str(sr.PatientName), sr.AccessionNumber) == ("FAKE-0001", "Test^Fake", "ACC0001")
    ref = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sr.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    # Survives a write/read round trip unchanged.
    back = pydicom.dcmread(io.BytesIO(_bytes(sr)))
    assert read_report_texts(back) == {"findings": FINDINGS, "impression": IMPRESSION}


def test_draft_sr_is_unverified_without_observer(source):
    sr = build_report_sr(source, FINDINGS, IMPRESSION, verifying_observer=None, verified=False,
                         signed_at=SIGNED_AT, version_hash="draft1")
    assert (sr.VerificationFlag, sr.CompletionFlag, sr.PreliminaryFlag) == ("UNVERIFIED", "PARTIAL", "PRELIMINARY")
    assert "VerifyingObserverSequence" not in sr
    assert read_report_texts(sr)["impression"] == IMPRESSION


def test_uids_and_bytes_derive_from_the_version_hash_only(source):
    kwargs = dict(verifying_observer="Doe^Jane", verified=True, signed_at=SIGNED_AT)
    first = build_report_sr(source, FINDINGS, IMPRESSION, version_hash="same", **kwargs)
    again = build_report_sr(source, FINDINGS, IMPRESSION, version_hash="same", **kwargs)
    other = build_report_sr(source, FINDINGS, IMPRESSION + " Follow up.", version_hash="other", **kwargs)

    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == sr_uids("same")
    assert _bytes(first) == _bytes(again)  # a resend is the very same instance
    assert other.SOPInstanceUID != first.SOPInstanceUID and other.SeriesInstanceUID != first.SeriesInstanceUID
    assert first.SeriesInstanceUID != source.SeriesInstanceUID


def test_study_info_mapping_and_file_paths_are_accepted(make_chest_dicom):
    uid = generate_uid()
    info = {"StudyInstanceUID": uid, "PatientID": "FAKE-9", "PatientName": "Fake^Person"}
    sr = build_report_sr(info, "", IMPRESSION, verifying_observer="Smith", verified=True,
                         signed_at=SIGNED_AT, version_hash="h")
    assert sr.StudyInstanceUID == uid and sr.PatientID == "FAKE-9"
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Smith^"
    assert "CurrentRequestedProcedureEvidenceSequence" not in sr  # no real instance to point at
    assert read_report_texts(sr) == {"findings": "", "impression": IMPRESSION}

    paths = [make_chest_dicom(f"{i}.dcm", study_uid=uid) for i in range(2)]
    sr = build_report_sr(paths, FINDINGS, IMPRESSION, verifying_observer="Doe^Jane", verified=True,
                         signed_at=SIGNED_AT, version_hash="h2")
    refs = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert sum(len(s.ReferencedSOPSequence) for s in refs) == 2


def test_bad_reports_raise_typed_errors_without_phi(source, make_chest_dicom):
    with pytest.raises(ReportContentError, match="neither findings nor impression"):
        build_report_sr(source, " ", "", verifying_observer="Doe^Jane", verified=True,
                        signed_at=SIGNED_AT, version_hash="h")
    with pytest.raises(ReportContentError, match="verifying observer"):
        build_report_sr(source, FINDINGS, IMPRESSION, verifying_observer=None, verified=True,
                        signed_at=SIGNED_AT, version_hash="h")
    other = pydicom.dcmread(make_chest_dicom("other.dcm"))
    with pytest.raises(ReportContentError, match="2 studies") as info:
        build_report_sr([source, other], FINDINGS, IMPRESSION, verifying_observer="Doe^Jane", verified=True,
                        signed_at=SIGNED_AT, version_hash="h")
    assert "FAKE-0001" not in str(info.value) and "Test" not in str(info.value)
    with pytest.raises(ReportContentError, match="version hash"):
        build_report_sr(source, FINDINGS, IMPRESSION, verifying_observer="Doe^Jane", verified=True,
                        signed_at=SIGNED_AT, version_hash="")


def test_fhir_diagnostic_report_signed():
    uid = generate_uid()
    report = build_diagnostic_report(study_uid=uid, findings=FINDINGS, impression=IMPRESSION, verified=True,
                                     signed_at=SIGNED_AT, version_hash="v1", verifying_observer="Doe^Jane",
                                     patient_reference="Patient/42", accession_number="ACC1")
    json.dumps(report)  # JSON-ready
    assert report["resourceType"] == "DiagnosticReport"
    assert report["status"] == "final"
    assert report["code"]["coding"] == [REPORT_CODE] and REPORT_CODE["code"] == "18748-4"
    assert report["category"][0]["coding"][0]["code"] == "RAD"
    assert report["conclusion"] == IMPRESSION
    assert report["issued"] == "2024-01-05T14:30:15+00:00"
    assert {"system": VERSION_SYSTEM, "value": "v1"} in report["identifier"]
    assert report["identifier"][1]["value"] == "ACC1"
    assert report["imagingStudy"][0]["identifier"] == {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}
    assert report["subject"] == {"reference": "Patient/42"}
    assert report["resultsInterpreter"] == [{"display": "Doe Jane"}]
    text = base64.b64decode(report["presentedForm"][0]["data"]).decode()
    assert text == f"FINDINGS: {FINDINGS}\n\nIMPRESSION: {IMPRESSION}"


def test_fhir_diagnostic_report_draft_and_errors():
    report = build_diagnostic_report(study_uid="1.2.3", findings=FINDINGS, impression="", verified=False,
                                     signed_at=dt.datetime(2024, 1, 5, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
                                     version_hash="d1")
    assert report["status"] == "preliminary"
    assert "conclusion" not in report and "resultsInterpreter" not in report and "subject" not in report
    assert report["issued"] == "2024-01-05T09:00:00+02:00"
    with pytest.raises(ReportContentError):
        build_diagnostic_report(study_uid="1.2.3", findings="", impression="", verified=False,
                                signed_at=SIGNED_AT, version_hash="d1")
    with pytest.raises(ReportContentError, match="observer"):
        build_diagnostic_report(study_uid="1.2.3", findings="x", impression="y", verified=True,
                                signed_at=SIGNED_AT, version_hash="d1")
