"""The drafting job: identity, source strings, intake gate, in-process drafting, resume, ask, file export."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _draft_worker import AUDIT_KEY, build_tiny_checkpoint, make_phantoms


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real tiny checkpoint (random weights), built once."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("draft-model") / "ckpt")


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """Three phantom studies (frontal + lateral each) plus reports.jsonl (not DICOM)."""
    return make_phantoms(tmp_path_factory.mktemp("draft-phantoms") / "ph", n=3, seed=1)


@pytest.fixture
def phantoms(phantom_root, tmp_path) -> Path:
    """A private copy of the phantom folder (tests add bad files to it)."""
    return Path(shutil.copytree(phantom_root, tmp_path / "src"))


def _rows(url: str, model: type):
    from sqlalchemy import select

    from pipelines.store import open_store

    with open_store(url, audit_key=AUDIT_KEY) as store, store.transaction() as session:
        return list(session.scalars(select(model)).all())


def test_model_identity_is_content_hash_and_prompt_sensitive(tiny_checkpoint):
    from pipelines.drafting.identity import DraftOptions, model_identity

    a, b = model_identity(tiny_checkpoint), model_identity(tiny_checkpoint)
    longer = model_identity(tiny_checkpoint, DraftOptions(max_new_tokens=40))
    assert a == b and len(a.model_version) == 64 and len(a.prompt_hash) == 64
    assert longer.model_version == a.model_version and longer.prompt_hash != a.prompt_hash
    assert a.adapter_hash is None  # the tiny model has no LoRA adapter
    assert model_identity(tiny_checkpoint, DraftOptions(batch_size=1)).prompt_hash == a.prompt_hash


def test_identity_of_a_hugging_face_folder_is_read_without_loading_it(tmp_path):
    """Model version = the folder's fingerprint; views and image size from the family and the processor."""
    import json

    from _families import save_family

    from medvlm.loading import model_fingerprint
    from pipelines.drafting.identity import DraftOptions, model_identity

    llava = save_family("llava", tmp_path / "llava")
    ident = model_identity(llava)
    assert ident.family == "llava" and ident.model_version == model_fingerprint(llava).model_version
    assert (ident.image_size, ident.max_views) == (32, 1)  # the processor's crop; LLaVA-1.5 takes one image
    assert ident.adapter_hash is None and ident.remote_code == {} and not ident.trust_remote_code
    assert model_identity(llava) == ident
    assert model_identity(llava, DraftOptions(max_new_tokens=5)).prompt_hash != ident.prompt_hash
    qwen = model_identity(save_family("qwen2_vl", tmp_path / "qwen"))
    assert (qwen.family, qwen.image_size, qwen.max_views) == ("qwen2_vl", 64, 3)
    assert qwen.prompt_hash != ident.prompt_hash  # same settings, another family's template
    config = json.loads((llava / "config.json").read_text())
    (llava / "config.json").write_text(json.dumps({**config, "note": "edited"}))
    assert model_identity(llava).model_version != ident.model_version  # any file is part of the version


def test_parse_source_forms(tmp_path):
    from dicom_io.dicomweb import DicomWebSource
    from dicom_io.dimse import DimseSource
    from dicom_io.sources import FolderSource, SourceError
    from pipelines.intake.sources import parse_source

    folder = parse_source(str(tmp_path))
    assert folder.kind == "folder" and isinstance(folder.source, FolderSource) and not folder.source.watch
    assert parse_source(f"folder+watch:{tmp_path}").source.watch
    web = parse_source("dicomweb:http://127.0.0.1:8042/dicom-web/", work_dir=tmp_path)
    assert isinstance(web.source, DicomWebSource) and web.label == "http://127.0.0.1:8042/dicom-web"
    dimse = parse_source("dimse://ORTHANC@127.0.0.1:4242?calling=ME&our_port=11113&method=get", work_dir=tmp_path)
    src = dimse.source
    assert isinstance(src, DimseSource)
    assert (src.called_aet, src.calling_aet, src.port, src.our_port, src.method) == ("ORTHANC", "ME", 4242, 11113,
                                                                                      "get")
    for bad in ("", "dimse://127.0.0.1:4242", "dimse://AET@host", "dicomweb:ftp://x", str(tmp_path / "missing")):
        with pytest.raises(SourceError):
            parse_source(bad, work_dir=tmp_path)


def test_prepare_study_rejects_bad_files_and_needs_a_frontal(phantoms):
    from pipelines.drafting.intake import NO_FRONTAL, prepare_study

    study = sorted(p for p in phantoms.iterdir() if p.is_dir())[0]
    frontal = next(study.glob("1_*/1.dcm"))
    lateral = next(study.glob("2_*/1.dcm"))
    junk = study / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    good = prepare_study("k", [frontal, lateral, junk])
    assert good.quarantine_code is None and good.rejected == ("unreadable",)
    assert good.metadata["inputs"] == [str(frontal.resolve()), str(lateral.resolve())]
    only_lateral = prepare_study("k", [lateral])
    assert only_lateral.quarantine_code == NO_FRONTAL
    assert prepare_study("k", [junk]).quarantine_code == "unreadable"


def test_draft_job_drafts_quarantines_and_skips_on_rerun(store_url, tiny_checkpoint, phantoms):
    import pydicom

    from pipelines.drafting.job import run_draft_job
    from pipelines.intake.sources import parse_source
    from pipelines.store.models import DraftRecord, JobRecord, ReportVersion, StudyRecord

    # a fourth "study" that is not a chest radiograph: its only file is a CT-like header
    bad = phantoms / "bad"
    bad.mkdir()
    ds = pydicom.dcmread(next(phantoms.glob("*/1_*/1.dcm")))
    ds.Modality = "CT"
    ds.StudyInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["not-chest"])
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["not-chest-sop"])
    ds.save_as(bad / "ct.dcm")

    first = run_draft_job(tiny_checkpoint, parse_source(str(phantoms)), db=store_url, workers=0,
                          progress=False, audit_key=AUDIT_KEY)
    assert first.drafted == 3 and first.skipped == 0 and first.pending == 0 and first.failed == {}
    # reports.jsonl is not DICOM; the CT study fails the chest gate
    assert first.quarantined == {"unreadable": 1, "not_chest_radiograph": 1}
    drafts = _rows(store_url, DraftRecord)
    assert len(drafts) == 3
    for d in drafts:
        assert d.sentences and all(0.0 <= s["confidence"] <= 1.0 for s in d.sentences)
        assert d.model_version == first.model_version
    versions = _rows(store_url, ReportVersion)
    assert sorted(v.draft_id for v in versions) == sorted(d.id for d in drafts)
    assert all(v.version == 1 and v.status == "draft" and v.author.startswith("medvlm@") for v in versions)
    studies = {s.study_uid: s for s in _rows(store_url, StudyRecord)}
    drafted = [s for s in studies.values() if s.status == "drafted"]
    assert len(drafted) == 3 and all(len(s.metadata_json["files"]) == 2 for s in drafted)
    quarantined = [s for s in studies.values() if s.status == "quarantined"]
    assert sorted(s.quarantine_reason.split(":")[0] for s in quarantined) == ["not_chest_radiograph", "unreadable"]

    again = run_draft_job(tiny_checkpoint, parse_source(str(phantoms)), db=store_url, workers=0,
                          progress=False, audit_key=AUDIT_KEY)
    assert again.drafted == 0 and again.skipped == 3 and again.skipped_by_state == {"done": 3}
    assert len(_rows(store_url, DraftRecord)) == 3 and len(_rows(store_url, JobRecord)) == 3
    assert len(_rows(store_url, ReportVersion)) == 3


def test_frontal_only_model_drafts_two_view_studies(tmp_path, phantoms):
    """A model trained on one view gets the frontal image of a frontal + lateral study, not an error."""
    from pipelines.drafting.job import run_draft_job
    from pipelines.intake.sources import parse_source

    ckpt = build_tiny_checkpoint(tmp_path / "one-view", max_views=1)
    summary = run_draft_job(ckpt, parse_source(str(phantoms)), db=f"sqlite:///{tmp_path / 'db.sqlite'}",
                            workers=0, progress=False, audit_key=AUDIT_KEY).as_dict()
    assert summary["drafted"] == 3, summary
    assert not summary["failed"], summary


def test_ask_answers_with_confidence_and_refuses_bad_folders(tiny_checkpoint, phantoms, tmp_path):
    from pipelines.drafting.ask import AskError, ask_command

    study = sorted(p for p in phantoms.iterdir() if p.is_dir())[0]
    line = ask_command(str(tiny_checkpoint), study, "Is there a pleural effusion?")
    assert line.endswith(")") and "(confidence " in line
    with pytest.raises(AskError, match="exactly one"):
        ask_command(str(tiny_checkpoint), phantoms, "Any effusion?")
    lateral_only = tmp_path / "lat"
    lateral_only.mkdir()
    shutil.copy(next(study.glob("2_*/1.dcm")), lateral_only / "lat.dcm")
    with pytest.raises(AskError, match="no_frontal_view"):
        ask_command(str(tiny_checkpoint), lateral_only, "Any effusion?")
    with pytest.raises(AskError, match="empty"):
        ask_command(str(tiny_checkpoint), study, "  ")


def test_export_to_files_signed_once_unsigned_on_request(tmp_path, tiny_checkpoint, phantoms):
    import json

    import pydicom

    from dicom_io.sr import read_report_texts
    from pipelines.drafting.job import run_draft_job
    from pipelines.export.reports import ExportError, parse_sink
    from pipelines.intake.sources import parse_source
    from pipelines.store import open_store
    from pipelines.store.reviews import edit_version, list_versions, sign_version

    url = f"sqlite:///{tmp_path / 'store.db'}"
    run_draft_job(tiny_checkpoint, parse_source(str(phantoms)), db=url, workers=0, progress=False,
                  audit_key=AUDIT_KEY)
    with open_store(url, audit_key=AUDIT_KEY) as store:
        from sqlalchemy import select

        from pipelines.store.models import StudyRecord

        with store.transaction() as session:
            uids = sorted(session.scalars(select(StudyRecord.study_uid).where(StudyRecord.status == "drafted")))
        v1 = list_versions(store, uids[0])[0]
        v2 = edit_version(store, v1.id, findings="The lungs are clear.", impression="No acute disease.",
                          author="dr.jones")
        sign_version(store, v2.id, signer="Jones^Ann", role="radiologist")
        from pipelines.export.reports import export_reports

        out = export_reports(store, sink=parse_sink(None), fhir_out=tmp_path / "fhir", sr_out=tmp_path / "sr")
        assert out.exported == 1 and out.failed == {}
        sr = pydicom.dcmread(out.sr_files[0])
        assert read_report_texts(sr) == {"findings": "The lungs are clear.", "impression": "No acute disease."}
        assert sr.VerificationFlag == "VERIFIED" and str(sr.StudyInstanceUID) == uids[0]
        assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Jones^Ann"
        fhir = json.loads(Path(out.fhir_files[0]).read_text())
        assert fhir["status"] == "final" and fhir["conclusion"] == "No acute disease."
        assert uids[0] not in Path(out.fhir_files[0]).name  # files are named by pseudonym

        again = export_reports(store, sink=parse_sink(None), sr_out=tmp_path / "sr2")
        assert (again.exported, again.skipped) == (0, 1)
        resent = export_reports(store, sink=parse_sink(None), sr_out=tmp_path / "sr3", resend=True)
        assert pydicom.dcmread(resent.sr_files[0]).SOPInstanceUID == sr.SOPInstanceUID

        drafts = export_reports(store, sink=parse_sink(None), sr_out=tmp_path / "sr4", include_unsigned=True)
        assert drafts.exported == 2 and drafts.skipped == 1  # two unsigned studies; the signed one done
        flags = {pydicom.dcmread(f).VerificationFlag for f in drafts.sr_files}
        assert flags == {"UNVERIFIED"}
    with pytest.raises(ExportError):
        parse_sink("ftp://pacs")
    assert parse_sink("cstore://ORTHANC@127.0.0.1:4242").called_aet == "ORTHANC"
    assert parse_sink("stow:http://127.0.0.1:8042/dicom-web/").url == "http://127.0.0.1:8042/dicom-web"


@pytest.mark.slow
def test_two_worker_processes_draft_each_study_once(tmp_path, tiny_checkpoint, phantoms):
    from pipelines.drafting.identity import DraftOptions
    from pipelines.drafting.job import run_draft_job
    from pipelines.intake.sources import parse_source
    from pipelines.store.models import DraftRecord

    url = f"sqlite:///{tmp_path / 'store.db'}"
    summary = run_draft_job(tiny_checkpoint, parse_source(str(phantoms)), db=url, workers=2, progress=False,
                            audit_key=AUDIT_KEY, options=DraftOptions(batch_size=1))
    assert summary.drafted == 3 and summary.pending == 0
    drafts = _rows(url, DraftRecord)
    assert len(drafts) == 3 and len({d.job_id for d in drafts}) == 3


def test_build_engine_is_the_one_place_workers_are_chosen(tiny_checkpoint, tmp_path):
    from pipelines.drafting.engines import InProcessEngine, ProcessEngine, build_engine
    from pipelines.drafting.identity import DraftError, DraftOptions, model_identity
    from pipelines.errors import PipelineError
    from pipelines.store import open_store

    ident, options = model_identity(tiny_checkpoint), DraftOptions()
    with open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", audit_key=AUDIT_KEY) as store:
        assert isinstance(build_engine("local", 0, store, ident, options), InProcessEngine)
        assert isinstance(build_engine("local", 2, store, ident, options), ProcessEngine)
        for kind, workers in (("spark", 1), ("local", -1), ("ray", 0)):
            with pytest.raises(DraftError):
                build_engine(kind, workers, store, ident, options)
    with open_store("sqlite:///:memory:", audit_key=AUDIT_KEY) as store:
        assert build_engine("local", 0, store, ident, options).name == "local"
        with pytest.raises(DraftError, match="in-memory"):
            build_engine("local", 1, store, ident, options)
    with pytest.raises(PipelineError, match="--batch-size"):
        DraftOptions(batch_size=0)
