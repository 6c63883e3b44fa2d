"""Sources and sinks against a real Orthanc (and DCMTK as a second peer).

The key proof: a chest DICOM pushed into Orthanc comes back through every source (DICOMweb
QIDO+WADO, DIMSE C-FIND+C-MOVE, C-FIND+C-GET); a signed report's SR goes in by STOW-RS and by
C-STORE, is found again by QIDO (Modality=SR) with exact texts, and resending the same signed
version leaves one SR instance.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_io.dicomweb import DicomWebSource
from dicom_io.dimse import GET, MOVE, DimseSource, StoreSCP
from dicom_io.sinks import send_cstore, send_stow
from dicom_io.sources import DICOMWEB, DIMSE, PacsRefused, PacsUnreachable
from dicom_io.sr import build_report_sr, read_report_texts

pytestmark = pytest.mark.integration

IN_RANGE = ("20240101", "20240131")


@pytest.fixture
def pacs_studies(empty_orthanc, make_chest_dicom):
    """Orthanc holding: a CR study (2 images) and a DX study in January 2024, a CR study in
    March 2024 (outside the range) and a CT-labelled study in January (wrong modality)."""
    uid_cr, uid_dx, uid_march, uid_ct = (generate_uid() for _ in range(4))
    files = {
        uid_cr: [make_chest_dicom("cr_pa.dcm", study_uid=uid_cr, study_date="20240105"),
                 make_chest_dicom("cr_lat.dcm", study_uid=uid_cr, study_date="20240105", view="LL")],
        uid_dx: [make_chest_dicom("dx.dcm", study_uid=uid_dx, study_date="20240120", modality="DX")],
        uid_march: [make_chest_dicom("march.dcm", study_uid=uid_march, study_date="20240310")],
        uid_ct: [make_chest_dicom("ct.dcm", study_uid=uid_ct, study_date="20240110", modality="CT")],
    }
    for paths in files.values():
        for path in paths:
            assert empty_orthanc.upload(path)["Status"] == "Success"
    return empty_orthanc, files, {uid_cr, uid_dx}


def _assert_same_instances(fetched_files, originals):
    """Each fetched file holds exactly one of the originals (same SOP UID and pixel bytes)."""
    want = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p).PixelData for p in originals}
    got = {}
    for path in fetched_files:
        ds = pydicom.dcmread(path)
        got[ds.SOPInstanceUID] = ds.PixelData
    assert got == want


def test_dicomweb_source_queries_by_date_and_modality_and_retrieves(pacs_studies, tmp_path):
    orthanc, files, wanted = pacs_studies
    source = DicomWebSource(orthanc.dicomweb_url, tmp_path / "work", date_from=IN_RANGE[0], date_to=IN_RANGE[1],
                            timeout_s=20)
    studies = list(source.studies())
    assert {s.study_key for s in studies} == wanted
    for study in studies:
        assert study.source == DICOMWEB
        assert all(p.is_file() and p.is_relative_to(tmp_path / "work") for p in study.files)
        _assert_same_instances(study.files, files[study.study_key])
    # A second run (e.g. after a crash) finds the files already there and returns the same set.
    assert [s.files for s in source.studies()] == [s.files for s in studies]


@pytest.mark.parametrize("method", [MOVE, GET])
def test_dimse_source_cfind_then_retrieve(pacs_studies, tmp_path, method):
    orthanc, files, wanted = pacs_studies
    source = DimseSource("127.0.0.1", orthanc.dicom_port, orthanc.aet, "MEDVLM", orthanc.our_port,
                         work_dir=tmp_path / method, method=method, date_from=IN_RANGE[0], date_to=IN_RANGE[1],
                         timeout_s=20)
    assert source.find_studies() == sorted(wanted)
    studies = list(source.studies())
    assert {s.study_key for s in studies} == wanted
    for study in studies:
        assert study.source == DIMSE
        _assert_same_instances(study.files, files[study.study_key])


def test_dimse_unknown_calling_aet_is_refused_with_a_hint(orthanc, tmp_path):
    source = DimseSource("127.0.0.1", orthanc.dicom_port, orthanc.aet, "STRANGER", work_dir=tmp_path, timeout_s=10)
    with pytest.raises(PacsRefused, match="STRANGER") as info:
        source.find_studies()
    assert info.value.code == "pacs_refused"


def test_unreachable_peers_raise_typed_errors_quickly(tmp_path):
    import _orthanc

    port = _orthanc.free_port()  # nothing listens there
    with pytest.raises(PacsUnreachable, match=f"127.0.0.1:{port}"):
        DimseSource("127.0.0.1", port, "ORTHANC", work_dir=tmp_path, timeout_s=3).find_studies()
    with pytest.raises(PacsUnreachable):
        list(DicomWebSource(f"http://127.0.0.1:{port}/dicom-web", tmp_path, timeout_s=3, max_attempts=2).studies())


def test_our_scp_receives_from_dcmtk_storescu(tmp_path, make_chest_dicom):
    storescu = shutil.which("storescu") or "/usr/bin/storescu"
    if not Path(storescu).is_file():
        pytest.skip("DCMTK storescu absent: apt-get install dcmtk")
    sent = make_chest_dicom("sent.dcm")
    with StoreSCP(tmp_path / "inbox", port=0) as scp:
        out = subprocess.run([storescu, "-aet", "DCMTK", "-aec", "MEDVLM", "127.0.0.1", str(scp.port), str(sent)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-1000:]
        received = scp.receiver.studies()
    ds = pydicom.dcmread(sent)
    (path,) = received[ds.StudyInstanceUID]
    assert path.read_bytes()[128:] != b"" and pydicom.dcmread(path).PixelData == ds.PixelData


def test_our_scp_receives_jpeg_from_storescu(tmp_path, shared_data):
    """A real JPEG Baseline chest CR, sent with ``-xy`` (storescu must propose JPEG Baseline)."""
    src = shared_data / "dicom" / "rsna_chest_pa_jpeg_baseline.dcm"
    if not src.is_file() or not Path("/usr/bin/storescu").is_file():
        pytest.skip("RSNA JPEG file or DCMTK storescu absent")
    with StoreSCP(tmp_path / "inbox", port=0) as scp:
        out = subprocess.run(["/usr/bin/storescu", "-xy", "-aec", "MEDVLM", "127.0.0.1", str(scp.port), str(src)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-1000:]
        (files,) = scp.receiver.studies().values()
    got = pydicom.dcmread(files[0])
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"  # kept as sent, not transcoded
    assert got.PixelData == pydicom.dcmread(src).PixelData


def test_dcmtk_findscu_sees_the_study(pacs_studies):
    findscu = Path("/usr/bin/findscu")
    if not findscu.is_file():
        pytest.skip("DCMTK findscu absent: apt-get install dcmtk")
    orthanc, _, wanted = pacs_studies
    out = subprocess.run([str(findscu), "-S", "-aet", "MEDVLM", "-aec", orthanc.aet, "-k", "QueryRetrieveLevel=STUDY",
                          "-k", "StudyInstanceUID", "-k", "ModalitiesInStudy=DX", "127.0.0.1", str(orthanc.dicom_port)],
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert "E:" not in text  # findscu exits 0 even when refused
    (dx_uid,) = [u for u in wanted if u in text]
    assert dx_uid


def test_signed_sr_goes_back_by_stow_and_cstore_and_a_resend_is_not_a_duplicate(
        empty_orthanc, pydicom_data_file, tmp_path):
    orthanc = empty_orthanc
    chest = pydicom_data_file("RG1_UNCI.dcm")  # a real PA chest CR
    assert orthanc.upload(chest)["Status"] == "Success"
    # Pull it back through DICOMweb, then report on the retrieved header, as the batch job does.
    (study,) = list(DicomWebSource(orthanc.dicomweb_url, tmp_path / "work", modalities=("CR",)).studies())
    source_header = pydicom.dcmread(study.files[0], stop_before_pixels=True)
    findings = "Heart size is normal. No focal consolidation, effusion or pneumothorax. Ünïcode ok."
    impression = "No acute cardiopulmonary abnormality."
    signed = dict(verifying_observer="Radiologist^Ada", verified=True,
                  signed_at=dt.datetime(2024, 1, 6, 9, 15, 0), version_hash="sha256:feedbeef")
    sr = build_report_sr(source_header, findings, impression, **signed)

    response = send_stow(sr, orthanc.dicomweb_url)
    assert response.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sr.SOPInstanceUID
    send_stow(sr, orthanc.dicomweb_url)  # a retry of the same signed version
    assert send_cstore(build_report_sr(source_header, findings, impression, **signed),
                       "127.0.0.1", orthanc.dicom_port, orthanc.aet) == 0

    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(orthanc.dicomweb_url)
    found = client.search_for_instances(search_filters={"Modality": "SR"})
    assert len(found) == 1  # one SR instance, whatever the number of sends
    assert orthanc.rest("GET", "/statistics")["CountInstances"] == 2  # the image and the SR
    rec = found[0]
    back = client.retrieve_instance(rec["0020000D"]["Value"][0], rec["0020000E"]["Value"][0],
                                    rec["00080018"]["Value"][0])
    assert back.StudyInstanceUID == source_header.StudyInstanceUID
    assert back.PatientID == source_header.PatientID
    assert back.VerificationFlag == "VERIFIED"
    assert str(back.VerifyingObserverSequence[0].VerifyingObserverName) == "Radiologist^Ada"
    assert read_report_texts(back) == {"findings": findings, "impression": impression}

    # A new signed version (an amendment) is a new instance in the same study.
    amended = build_report_sr(source_header, findings, impression + " Follow-up advised.",
                              **{**signed, "version_hash": "sha256:0ddba11"})
    send_cstore(amended, "127.0.0.1", orthanc.dicom_port, orthanc.aet)
    assert len(client.search_for_instances(search_filters={"Modality": "SR"})) == 2


def test_sinks_raise_typed_errors(orthanc, make_chest_dicom):
    import _orthanc

    ds = pydicom.dcmread(make_chest_dicom("x.dcm"))
    port = _orthanc.free_port()
    with pytest.raises(PacsUnreachable):
        send_cstore(ds, "127.0.0.1", port, "ORTHANC", timeout_s=3)
    with pytest.raises(PacsRefused, match="HTTP 404"):
        send_stow(ds, orthanc.url + "/no-such-root", timeout_s=5)
